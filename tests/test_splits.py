"""Pairs of splits for a labelled evaluation: classes to tell apart, no image in both."""

import os

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from byol_tf.data import splits
from byol_tf.data.sources import source


def _images(folder, count=2):
    os.makedirs(folder, exist_ok=True)
    image = tf.io.encode_png(tf.zeros([4, 4, 3], tf.uint8))
    for i in range(count):
        tf.io.write_file(os.path.join(folder, f"{i}.png"), image)


def _split_folder(root, train_classes, test_classes):
    for split, classes in (("train", train_classes), ("test", test_classes)):
        for name in classes:
            _images(os.path.join(root, split, name))
    return str(root)


def test_folder_with_train_and_test_subfolders_suits(tmp_path):
    root = _split_folder(tmp_path, ["cat", "dog"], ["cat", "dog"])
    assert splits.evaluation_problem(source(root, "train"), source(root, "test")) is None
    assert splits.where(source(root, "test")) == f"folder {os.path.join(root, 'test')}"


def test_folder_splits_with_other_class_subfolders_are_refused(tmp_path):
    # Labels follow the sorted subfolder names: test/dog would be label 0, train/dog label 1.
    root = _split_folder(tmp_path, ["cat", "dog"], ["dog", "fox"])
    split, reason = splits.evaluation_problem(source(root, "train"), source(root, "test"))
    assert split == "test" and "have different class subfolders" in reason
    assert "only in the training split: cat; only in the test split: fox" in reason


def test_same_folder_split_twice_is_refused(tmp_path):
    root = _split_folder(tmp_path, ["cat", "dog"], ["cat", "dog"])
    train = os.path.join(root, "train")
    assert splits.evaluation_problem(source(root, "train"), source(root, "train")) == (
        "test",
        f"both splits read folder {train}",
    )


def test_demo_splits():
    assert splits.evaluation_problem(source("demo", "train"), source("demo", "test")) is None
    assert splits.evaluation_problem(source("demo", "test"), source("demo", "test")) == (
        "test",
        "the demo's 'test' split is both",
    )


def test_arrays_have_a_single_split():
    arrays = (np.zeros((4, 8, 8, 3), np.uint8), np.array([0, 1, 0, 1]))
    split, reason = splits.evaluation_problem(source(arrays, "train"), source(arrays, "test"))
    assert split == "test" and reason.startswith("an array source has a single split")


@pytest.mark.parametrize(
    "test_split, shared",
    [("train[50%:]", None), ("train[25%:]", "share 6 examples of 'train'"), ("test", None)],
)
def test_tfds_slices_overlap_when_they_take_the_same_examples(test_split, shared):
    with tfds.testing.mock_data(num_examples=24):
        problem = splits.evaluation_problem(
            source("cifar10", "train[:50%]"), source("cifar10", test_split)
        )
    if shared is None:
        assert problem is None
    else:
        assert problem[0] == "test" and shared in problem[1]
        assert "'train[:50%]' and 'train[25%:]'" in problem[1]
