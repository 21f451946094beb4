"""Tests for byol_tf.data.sources: arrays, the demo set, image folders and tfds names resolved into
sources with exact counts, classes and normalisation statistics."""

import os

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from helpers import FAST, take, write_images

from byol_tf import data
from byol_tf.data import pipelines, sources
from byol_tf.data.source_kinds import ArraySource, FolderSource, TfdsSource

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
FASHION_MNIST = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip


# --- arrays ----------------------------------------------------------------------------------


def test_from_arrays_adds_a_channel_and_counts_classes_from_the_labels():
    x = np.random.default_rng(0).integers(0, 256, (6, 5, 4), dtype=np.uint8)
    source = sources.from_arrays((x, [0, 2, 2, 1, 0, 2]))
    assert isinstance(source, ArraySource) and source.image_shape == (5, 4)
    assert source.images.shape == (6, 5, 4, 1) and source.images.dtype == np.uint8
    np.testing.assert_array_equal(source.images[..., 0], x)
    assert source.labels.dtype == np.int32 and source.labels.tolist() == [0, 2, 2, 1, 0, 2]
    info = source.info
    assert (info.num_examples, info.num_classes, info.class_names) == (6, 3, None)
    assert (info.mean, info.std) == IMAGENET


def test_from_arrays_unlabelled_float_images_with_own_statistics():
    x = np.full((3, 4, 4, 3), 0.5, np.float64)
    source = sources.from_arrays(x, mean=[0.1, 0.2, 0.3], std=(0.4, 0.5, 0.6))
    assert source.images.dtype == np.float32 and source.labels is None
    assert (source.info.num_examples, source.info.num_classes) == (3, None)
    assert source.info.mean == (0.1, 0.2, 0.3) and source.info.std == (0.4, 0.5, 0.6)


@pytest.mark.parametrize(
    "arrays, message",
    [
        ((np.zeros((2, 4, 4)),) * 3, "An array source is (x,) or (x, y). Received a tuple of 3"),
        (np.zeros((2, 4, 4, 2)), "with C in (1, 3, 4). Received: shape=(2, 4, 4, 2)"),
        (np.zeros((0, 4, 4, 3)), "x must be a non-empty array"),
        (np.zeros((4, 4)), "Received: shape=(4, 4)"),
        ((np.zeros((4, 8, 8)), [1]), "Received: len(x)=4, len(y)=1"),
    ],
    ids=["three_arrays", "two_channels", "empty", "one_image", "fewer_labels"],
)
def test_from_arrays_refuses_bad_arrays_echoing_them(arrays, message):
    with pytest.raises(ValueError) as info:
        sources.from_arrays(arrays)
    assert message in str(info.value) and "\n" not in str(info.value)


# --- the demo set ----------------------------------------------------------------------------


@pytest.mark.parametrize("split, per_class", [("train", 600), ("test", 100)])
def test_demo_is_the_shipped_fashion_mnist_subset(split, per_class):
    source = sources.demo(split)
    with np.load(sources.DEMO_FILE) as shipped:
        x, y = shipped[f"x_{split}"], shipped[f"y_{split}"]
    np.testing.assert_array_equal(source.images, x[..., None])
    np.testing.assert_array_equal(source.labels, y)
    assert source.images.dtype == np.uint8 and source.images.shape[1:] == (28, 28, 1)
    assert np.bincount(source.labels).tolist() == [per_class] * 10
    info = source.info
    assert (info.num_examples, info.num_classes) == (10 * per_class, 10)
    assert info.class_names == FASHION_MNIST
    # The published statistics of Fashion-MNIST's training set, within 0.001 of the subset's.
    assert info.mean == (0.2860,) * 3 and info.std == (0.3530,) * 3
    if split == "train":
        assert abs(x.mean() / 255 - 0.2860) < 1e-3 and abs(x.std() / 255 - 0.3530) < 1e-3


def test_demo_has_no_other_split():
    with pytest.raises(ValueError) as info:
        sources.demo("validation")
    assert str(info.value) == (
        "The demo source has splits 'train' and 'test'. Received: split='validation'"
    )


# --- image folders ---------------------------------------------------------------------------


def _classes(root):
    """cat: 3 PNGs (one named .PNG), dog: 2 JPEGs; plus an empty class, a folder of text only
    and a stray text file, all three ignored."""
    write_images(os.path.join(root, "cat"), 3, (6, 6, 3), "png")
    os.rename(os.path.join(root, "cat", "2.png"), os.path.join(root, "cat", "2.PNG"))
    write_images(os.path.join(root, "dog"), 2, (6, 6, 3), "jpg")
    os.makedirs(os.path.join(root, "empty"))
    os.makedirs(os.path.join(root, "notes"))
    for path in ("notes/a.txt", "readme.txt"):
        with open(os.path.join(root, path), "w") as handle:
            handle.write("not an image")
    return root


def test_from_folder_labels_images_by_sorted_class_folder(tmp_path):
    root = _classes(str(tmp_path))
    source = sources.from_folder(root)
    assert isinstance(source, FolderSource) and source.image_shape is None
    names = ["cat/0.png", "cat/1.png", "cat/2.PNG", "dog/0.jpg", "dog/1.jpg"]
    assert source.paths.tolist() == [os.path.join(root, n) for n in names]
    assert source.labels.tolist() == [0, 0, 0, 1, 1]
    info = source.info
    assert (info.num_examples, info.num_classes, info.class_names) == (5, 2, ("cat", "dog"))
    assert (info.mean, info.std) == IMAGENET


def test_from_folder_reads_the_split_subfolder_when_there_is_one(tmp_path):
    root = str(tmp_path)
    _classes(os.path.join(root, "train"))
    write_images(os.path.join(root, "test", "dog"), 4, (6, 6, 3), "png")
    assert sources.split_folder(root, "test") == os.path.join(root, "test")
    assert sources.split_folder(root, "validation") == root
    assert sources.split_folder(root, "") == root
    test = sources.from_folder(root, "test")
    assert (test.info.num_examples, test.info.class_names) == (4, ("dog",))
    assert sources.from_folder(root, "train").info.num_examples == 5


def test_flat_folder_has_no_labels(tmp_path):
    for i in range(3):
        image = np.full((10, 10, 3), 40 * i, np.uint8)
        tf.io.write_file(str(tmp_path / f"{i}.png"), tf.io.encode_png(image))
    assert pipelines.source_info(str(tmp_path)).num_classes is None
    (batch,) = take(pipelines.pretrain_dataset(str(tmp_path), 3, 8, **FAST), 1)
    assert set(batch) == {"view1", "view2"}
    with pytest.raises(ValueError, match=r"needs labels; source '.*' \(split 'train'\) has none"):
        pipelines.eval_dataset(str(tmp_path), 2, 8)


def test_from_folder_refuses_a_missing_folder_a_file_and_a_folder_without_images(tmp_path):
    missing = str(tmp_path / "missing")
    with pytest.raises(FileNotFoundError) as info:
        sources.from_folder(missing)
    assert str(info.value) == f"Image folder not found: {missing}"
    path = tmp_path / "file.jpg"
    path.write_text("x")
    with pytest.raises(ValueError, match=f"^Data source {path} is a file, not a folder; "):
        sources.from_folder(str(path))
    (tmp_path / "empty" / "cls").mkdir(parents=True)
    with pytest.raises(ValueError) as info:
        sources.from_folder(str(tmp_path / "empty"))
    assert str(info.value).startswith(
        f"No images (.jpg, .jpeg, .png, .bmp, .gif) found in folder {tmp_path / 'empty'} "
    )


# --- source ---------------------------------------------------------------------------------


def test_source_dispatches_on_the_kind_of_source(tmp_path, monkeypatch):
    x = np.zeros((4, 8, 8, 3), np.uint8)
    for arrays in ((x, [0, 1, 0, 1]), [x, [0, 1, 0, 1]]):
        assert sources.source(arrays).info.num_classes == 2
    assert sources.source(x).labels is None
    assert sources.source("demo", "test").info.num_examples == 1000
    write_images(str(tmp_path / "imgs" / "a"), 2, (6, 6, 3), "png")
    folder = sources.source(tmp_path / "imgs")  # a PathLike
    assert isinstance(folder, FolderSource) and folder.info.num_examples == 2
    monkeypatch.setenv("HOME", str(tmp_path))
    home = sources.source("~/imgs")
    assert home.paths[0] == str(tmp_path / "imgs" / "a" / "0.png")
    # Each knows what it was resolved from and its split, for messages.
    assert (home.name, home.split) == (str(tmp_path / "imgs"), "train")
    assert (sources.source("demo", "test").name, sources.source(x, "test").split) == (
        "demo",
        "test",
    )
    assert data.source is sources.source  # the public name


def test_source_refuses_what_is_no_source():
    with pytest.raises(ValueError) as info:
        sources.source(3)
    assert str(info.value).endswith("tensorflow-datasets name. Received: source=3")


def test_a_resolved_source_is_handed_on_with_the_statistics_given():
    demo = sources.demo("test")
    assert sources.source(demo) is demo and sources.with_stats(demo) is demo
    other = sources.source(demo, mean=[0.5, 0.5, 0.5])
    assert other.info.mean == (0.5,) * 3 and other.info.std == demo.info.std
    assert other.images is demo.images and demo.info.mean == (0.2860,) * 3  # a copy, not a change
    only_std = sources.with_stats(demo, std=(1.0, 2.0, 3.0))
    assert only_std.info.std == (1.0, 2.0, 3.0) and only_std.info.mean == demo.info.mean


@pytest.mark.parametrize(
    "name, expected",
    [("./x", True), ("/x", True), ("~/x", True), ("existing", True), ("cifar10", False),
     ("imagenet2012/subset:5.*", False), ("demo", False)],
)  # fmt: skip
def test_is_folder_name(tmp_path, monkeypatch, name, expected):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "existing").mkdir()
    assert sources.is_folder_name(name) is expected


# --- tensorflow-datasets ---------------------------------------------------------------------


def test_unknown_tfds_name_suggests_close_names():
    with pytest.raises(ValueError, match="did you mean.*cifar10") as raised:
        pipelines.pretrain_dataset("cifar1O", 4, 32)
    assert "\n" not in str(raised.value)


def test_from_tfds_reads_the_features_and_known_statistics():
    with tfds.testing.mock_data(num_examples=12):
        source = sources.source("cifar10", "test")
        assert isinstance(source, TfdsSource)
        assert (source.image_key, source.label_key, source.split) == ("image", "label", "test")
        assert source.name == "cifar10"
        assert source.fixed_shape == (32, 32, 3) and source.image_shape == (32, 32)
        info = source.info
        assert info.num_classes == 10 and len(info.class_names) == 10  # mock names: "0"...
        assert info.mean == (0.4914, 0.4822, 0.4465) and info.std == (0.2470, 0.2435, 0.2616)
        assert sources.count_examples(source.builder, "test", "image") == info.num_examples
        unknown = sources.source("mnist", mean=(0.1,) * 3)  # no known statistics: ImageNet's
        assert unknown.info.mean == (0.1,) * 3 and unknown.info.std == IMAGENET[1]
