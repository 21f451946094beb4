"""Tests for byol_tf.data.source_kinds: record streams (a permutation per epoch, resumable at any
element), pretraining batches and evaluation batches of arrays, folders and tfds splits."""

import dataclasses
import os

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from helpers import FAST, assert_same_batches, corrupt_jpeg, mixed_image_folder, take

from byol_tf.data import pipelines, sources
from byol_tf.views.augment import ViewConfig

COLOURS = {"cat": 200, "dog": 50}  # each class a flat grey of its own


def _flat_folder(root, sizes=((9, 7), (12, 20), (5, 5))):
    """Flat-coloured PNGs of varying sizes: `root/cat/` and `root/dog/`, one per size each."""
    for name, value in COLOURS.items():
        os.makedirs(os.path.join(root, name))
        for i, (height, width) in enumerate(sizes):
            image = np.full((height, width, 3), value, np.uint8)
            tf.io.write_file(os.path.join(root, name, f"{i}.png"), tf.io.encode_png(image))
    return root


def _ints(ds):
    return [int(i) for i in ds]


def test_source_info_is_frozen():
    info = sources.demo("test").info
    with pytest.raises(dataclasses.FrozenInstanceError):
        info.num_examples = 3


def test_indexed_records_permute_each_epoch_and_resume_at_any_element():
    source = sources.from_arrays(np.zeros((7, 2, 2, 1), np.uint8))
    full = _ints(source.records(5, 0, True, 0).take(21))
    epochs = [full[0:7], full[7:14], full[14:21]]
    assert all(sorted(epoch) == list(range(7)) for epoch in epochs)  # no repeat in an epoch
    assert len({tuple(epoch) for epoch in epochs}) == 3  # each epoch its own order
    for offset in (1, 7, 10, 20):
        assert _ints(source.records(5, offset, True, 0).take(21 - offset)) == full[offset:]
    assert _ints(source.records(5, 10, False, 0)) == full[10:14]  # one pass: to the epoch's end
    assert _ints(source.records(6, 0, True, 0).take(7)) != epochs[0]  # another seed


def test_folder_records_pair_each_index_with_its_position_in_the_run(tmp_path):
    folder = sources.from_folder(_flat_folder(str(tmp_path)))
    same_size = sources.from_arrays(np.zeros((6, 2, 2, 1), np.uint8))
    records = [(int(i), int(p)) for i, p in folder.records(3, 4, True, 0).take(8)]
    assert [p for _, p in records] == list(range(4, 12))
    assert [i for i, _ in records] == _ints(same_size.records(3, 4, True, 0).take(8))


def test_array_pair_batches_gather_the_records_images_and_labels():
    x = np.arange(5 * 2 * 2, dtype=np.uint8).reshape(5, 2, 2, 1)
    records = tf.data.Dataset.from_tensor_slices(tf.constant([3, 1, 4, 0, 2], tf.int32))
    labelled = sources.from_arrays((x, [10, 11, 12, 13, 14]))
    assert labelled.image_shape == (2, 2) and not labelled.crops_at_decode
    batches = list(labelled.pair_batches(records, 0, 2, 2, None, False))
    assert len(batches) == 2  # the last partial batch is dropped
    np.testing.assert_array_equal(batches[1][0].numpy(), x[[4, 0]])
    assert [b[1].numpy().tolist() for b in batches] == [[13, 11], [14, 10]]
    unlabelled = sources.from_arrays(x).pair_batches(records, 0, 2, 2, None, False)
    assert next(iter(unlabelled))[1].numpy().tolist() == [-1, -1]


def test_array_eval_batches_keep_order_and_remainder_and_spread_a_subset():
    x = np.arange(7, dtype=np.uint8)[:, None, None, None] * np.ones((1, 2, 2, 3), np.uint8)
    source = sources.from_arrays((x, np.arange(7) % 3))

    def prepare(images):
        return tf.cast(images, tf.float32) * 2

    batches = list(source.eval_batches(prepare, 3, False))
    assert [int(b[0].shape[0]) for b in batches] == [3, 3, 1]
    images = np.concatenate([b[0].numpy() for b in batches])
    np.testing.assert_array_equal(images, 2 * x.astype(np.float32))
    subset = list(source.eval_batches(prepare, 8, False, max_examples=3))
    # Indices floor(i * 7 / 3): 0, 2, 4.
    np.testing.assert_array_equal(subset[0][0].numpy()[:, 0, 0, 0], [0, 4, 8])
    assert subset[0][1].numpy().tolist() == [0, 2, 1]
    assert sum(len(b[1]) for b in source.eval_batches(prepare, 8, False, max_examples=9)) == 7


def test_folder_pair_batches_crop_each_file_at_decode_time(tmp_path):
    source = sources.from_folder(_flat_folder(str(tmp_path)))
    assert source.image_shape is None and source.crops_at_decode
    records = source.records(1, 0, False, 0)
    configs = (ViewConfig(), ViewConfig(crop_area=(0.08, 0.2)))
    batches = list(source.pair_batches(records, 1, 2, 8, configs, False))
    assert len(batches) == 3
    for crops, labels in batches:
        assert crops.shape == (2, 2, 8, 8, 3) and crops.dtype == tf.float32
        for pair, label in zip(crops.numpy(), labels.numpy(), strict=True):
            colour = COLOURS[("cat", "dog")[label]] / 255
            np.testing.assert_allclose(pair, np.full_like(pair, colour), atol=1e-5)
    labels = np.concatenate([b[1].numpy() for b in batches])
    assert sorted(labels) == [0, 0, 0, 1, 1, 1]


def test_folder_eval_batches_decode_prepare_and_skip_corrupt_files(tmp_path):
    root = _flat_folder(str(tmp_path))
    corrupt_jpeg(os.path.join(root, "dog", "3.jpg"))
    source = sources.from_folder(root)

    def prepare(image):
        return tf.image.resize(image, [4, 4])

    with pytest.raises(tf.errors.InvalidArgumentError, match="3.jpg"):
        list(source.eval_batches(prepare, 8, skip_corrupt=False))
    assert source.skipped_files() == []  # failing on a file does not count it as skipped
    ((images, labels),) = list(source.eval_batches(prepare, 8, skip_corrupt=True))
    assert images.shape == (6, 4, 4, 3) and labels.numpy().tolist() == [0, 0, 0, 1, 1, 1]
    assert source.skipped_files() == [os.path.join(root, "dog", "3.jpg")]
    np.testing.assert_allclose(images.numpy()[:, 0, 0, 0], [200] * 3 + [50] * 3, atol=1e-4)


def test_folder_source_decodes_greyscale_rgba_png_and_large_jpeg(tmp_path):
    mixed_image_folder(str(tmp_path), corrupt=False)
    info = pipelines.source_info(str(tmp_path))
    assert (info.num_examples, info.class_names) == (4, ("cat", "dog"))
    batches = take(pipelines.pretrain_dataset(str(tmp_path), 4, 24, **FAST), 2)
    for batch in batches:
        assert batch["view1"].shape == (4, 24, 24, 3) and np.isfinite(batch["view1"]).all()
        assert sorted(batch["label"]) == [0, 0, 1, 1]
    images, labels = next(iter(pipelines.eval_dataset(str(tmp_path), 8, 24)))
    assert images.shape == (4, 24, 24, 3) and list(labels.numpy()) == [0, 0, 1, 1]
    again = take(pipelines.pretrain_dataset(str(tmp_path), 4, 24, **FAST), 2)
    assert_same_batches(batches, again)


def test_tfds_sources_through_mock_data():
    with tfds.testing.mock_data(num_examples=24):
        info = pipelines.source_info("cifar10")
        assert (info.num_examples, info.num_classes) == (24, 10)
        assert info.mean == (0.4914, 0.4822, 0.4465)
        a = take(pipelines.pretrain_dataset("cifar10", 8, 32, seed=2, **FAST), 4)
        b = take(pipelines.pretrain_dataset("cifar10", 8, 32, seed=2, start_step=2, **FAST), 2)
        assert a[0]["view1"].shape == (8, 32, 32, 3) and a[0]["label"].dtype == np.int32
        assert_same_batches(a[2:], b)
        images, labels = next(
            iter(pipelines.eval_dataset(sources.source("cifar10", "test"), 32, 32))
        )
        assert images.shape == (24, 32, 32, 3) and labels.dtype == tf.int32


@pytest.mark.slow
def test_stl10_unlabelled_split_through_mock_data():
    with tfds.testing.mock_data(num_examples=12):
        (batch,) = take(
            pipelines.pretrain_dataset(sources.source("stl10", "unlabelled"), 4, 48, **FAST), 1
        )
        assert batch["view1"].shape == (4, 48, 48, 3)
