"""Tests for byol_tf.data: sources, reproducible and resumable pipelines, errors, evaluation."""

import os

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from byol_tf import data, image_ops

FAST = dict(jit_compile=False)  # same output as XLA (test_augment); saves the compile time


def _take(ds, n):
    return [{k: v.numpy() for k, v in element.items()} for element in ds.take(n)]


def _assert_same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x.keys() == y.keys()
        for key in x:
            np.testing.assert_array_equal(x[key], y[key])


def test_demo_source_yields_view_pairs_with_labels():
    ds = data.pretrain_dataset("demo", 16, 32, seed=0)
    spec = ds.element_spec
    assert spec["view1"].shape == spec["view2"].shape == (16, 32, 32, 3)
    assert spec["view1"].dtype == tf.float32 and spec["label"].dtype == tf.int32
    (batch,) = _take(ds, 1)
    assert np.isfinite(batch["view1"]).all() and not np.array_equal(batch["view1"], batch["view2"])
    assert abs(batch["view1"].mean()) < 1.0 and 0.3 < batch["view1"].std() < 2.0
    info = data.source_info("demo")
    assert (info.num_examples, info.num_classes, info.mean) == (6000, 10, (0.286,) * 3)
    assert data.steps_per_epoch("demo", 64) == 93
    assert data.source_info("demo", "test").num_examples == 1000


def test_same_seed_reproduces_batches_and_different_seed_does_not():
    a = _take(data.pretrain_dataset("demo", 8, 32, seed=3, **FAST), 2)
    b = _take(data.pretrain_dataset("demo", 8, 32, seed=3, **FAST), 2)
    c = _take(data.pretrain_dataset("demo", 8, 32, seed=4, **FAST), 2)
    _assert_same(a, b)
    assert not np.array_equal(a[0]["view1"], c[0]["view1"])
    assert not np.array_equal(a[0]["label"], c[0]["label"])


def test_start_step_resumes_exactly_across_an_epoch_boundary():
    x = np.random.default_rng(0).integers(0, 256, (20, 8, 8, 3), dtype=np.uint8)
    source = (x, np.arange(20))
    full = _take(data.pretrain_dataset(source, 6, 8, seed=1, **FAST), 7)
    resumed = _take(data.pretrain_dataset(source, 6, 8, seed=1, start_step=4, **FAST), 3)
    _assert_same(full[4:], resumed)
    first_epoch = np.concatenate([b["label"] for b in full[:3]])
    assert len(set(first_epoch)) == 18  # a permutation: no repeats within an epoch


def test_array_sources_with_and_without_labels():
    x = np.random.default_rng(1).random((10, 12, 12)).astype(np.float32)
    (batch,) = _take(data.pretrain_dataset((x,), 5, 12, **FAST), 1)
    assert set(batch) == {"view1", "view2"} and batch["view1"].shape == (5, 12, 12, 3)
    (batch,) = _take(data.pretrain_dataset((x, np.arange(10) % 2), 5, 12, **FAST), 1)
    assert batch["label"].dtype == np.int32 and set(batch["label"]) <= {0, 1}
    (batch,) = _take(data.pretrain_dataset((x, np.arange(10)), 5, 12, with_labels=False, **FAST), 1)
    assert "label" not in batch
    once = list(data.pretrain_dataset((x,), 4, 12, repeat=False, **FAST))
    assert len(once) == 2  # drop_remainder


def _write_folder(root, corrupt=True):
    rng = np.random.default_rng(0)
    for name in ("cat", "dog"):
        os.makedirs(os.path.join(root, name))

    def write(path, encoded):
        tf.io.write_file(os.path.join(root, path), encoded)

    write("cat/big.jpg", tf.io.encode_jpeg(rng.integers(0, 256, (300, 200, 3), dtype=np.uint8)))
    write("cat/grey.png", tf.io.encode_png(rng.integers(0, 256, (40, 50, 1), dtype=np.uint8)))
    write("dog/rgba.png", tf.io.encode_png(rng.integers(0, 256, (40, 50, 4), dtype=np.uint8)))
    write("dog/grey.jpg", tf.io.encode_jpeg(rng.integers(0, 256, (64, 64, 1), dtype=np.uint8)))
    if corrupt:
        with open(os.path.join(root, "dog", "broken.jpg"), "wb") as f:
            f.write(b"\xff\xd8\xff\xe0 this is not a JPEG")


def test_folder_source_decodes_greyscale_rgba_png_and_large_jpeg(tmp_path):
    _write_folder(str(tmp_path), corrupt=False)
    info = data.source_info(str(tmp_path))
    assert (info.num_examples, info.class_names) == (4, ("cat", "dog"))
    batches = _take(data.pretrain_dataset(str(tmp_path), 4, 24, **FAST), 2)
    for batch in batches:
        assert batch["view1"].shape == (4, 24, 24, 3) and np.isfinite(batch["view1"]).all()
        assert sorted(batch["label"]) == [0, 0, 1, 1]
    images, labels = next(iter(data.eval_dataset(str(tmp_path), "train", 8, 24)))
    assert images.shape == (4, 24, 24, 3) and list(labels.numpy()) == [0, 0, 1, 1]
    again = _take(data.pretrain_dataset(str(tmp_path), 4, 24, **FAST), 2)
    _assert_same(batches, again)


def test_corrupt_file_error_names_the_file_and_skip_corrupt_skips_it(tmp_path):
    _write_folder(str(tmp_path))
    with pytest.raises(tf.errors.InvalidArgumentError, match="broken.jpg"):
        _take(data.pretrain_dataset(str(tmp_path), 5, 16, **FAST), 1)
    batches = _take(data.pretrain_dataset(str(tmp_path), 4, 16, skip_corrupt=True, **FAST), 3)
    assert all(sorted(b["label"]) == [0, 0, 1, 1] for b in batches)
    assert any(p.endswith("broken.jpg") for p in data.skipped_files())


def test_flat_folder_has_no_labels(tmp_path):
    for i in range(3):
        image = np.full((10, 10, 3), 40 * i, np.uint8)
        tf.io.write_file(str(tmp_path / f"{i}.png"), tf.io.encode_png(image))
    assert data.source_info(str(tmp_path)).num_classes is None
    (batch,) = _take(data.pretrain_dataset(str(tmp_path), 3, 8, **FAST), 1)
    assert set(batch) == {"view1", "view2"}
    with pytest.raises(ValueError, match="needs labels"):
        data.eval_dataset(str(tmp_path), "train", 2, 8)


def test_bad_inputs_give_one_line_errors_naming_the_problem(tmp_path):
    cases = [
        (FileNotFoundError, "no/such", lambda: data.pretrain_dataset("./no/such", 4, 32)),
        (ValueError, "No images", lambda: data.pretrain_dataset(str(tmp_path), 4, 32)),
        (ValueError, "image_size=128", lambda: data.pretrain_dataset("demo", 4, 128)),
        (ValueError, "batch_size", lambda: data.pretrain_dataset("demo", 0, 32)),
        (ValueError, "image_size", lambda: data.eval_dataset("demo", "test", 4, 2.5)),
        (ValueError, "split", lambda: data.pretrain_dataset("demo", 4, 32, split="val")),
        (
            ValueError,
            "same length",
            lambda: data.pretrain_dataset((np.zeros((4, 8, 8)), [1]), 2, 8),
        ),
    ]
    for error, text, call in cases:
        with pytest.raises(error, match=text) as raised:
            call()
        assert "\n" not in str(raised.value)


def test_unknown_tfds_name_suggests_close_names():
    with pytest.raises(ValueError, match="did you mean.*cifar10") as raised:
        data.pretrain_dataset("cifar1O", 4, 32)
    assert "\n" not in str(raised.value)


def test_tfds_sources_through_mock_data():
    with tfds.testing.mock_data(num_examples=24):
        info = data.source_info("cifar10")
        assert (info.num_examples, info.num_classes) == (24, 10)
        assert info.mean == (0.4914, 0.4822, 0.4465)
        a = _take(data.pretrain_dataset("cifar10", 8, 32, seed=2, **FAST), 4)
        b = _take(data.pretrain_dataset("cifar10", 8, 32, seed=2, start_step=2, **FAST), 2)
        assert a[0]["view1"].shape == (8, 32, 32, 3) and a[0]["label"].dtype == np.int32
        _assert_same(a[2:], b)
        images, labels = next(iter(data.eval_dataset("cifar10", "test", 32, 32)))
        assert images.shape == (24, 32, 32, 3) and labels.dtype == tf.int32


@pytest.mark.slow
def test_stl10_unlabelled_split_through_mock_data():
    with tfds.testing.mock_data(num_examples=12):
        (batch,) = _take(data.pretrain_dataset("stl10", 4, 48, split="unlabelled", **FAST), 1)
        assert batch["view1"].shape == (4, 48, 48, 3)


def test_eval_dataset_keeps_order_and_remainder():
    batches = list(data.eval_dataset("demo", "test", 300, 32))
    assert [int(x.shape[0]) for x, _ in batches] == [300, 300, 300, 100]
    labels = np.concatenate([y.numpy() for _, y in batches])
    with np.load(os.path.join(os.path.dirname(data.sources.__file__), "data_files",
                              "fashion_mnist_demo.npz")) as demo:  # fmt: skip
        np.testing.assert_array_equal(labels, demo["y_test"])
    images = np.concatenate([x.numpy() for x, _ in batches])
    assert abs(images.mean()) < 0.1 and abs(images.std() - 1) < 0.1



def test_eval_dataset_max_examples_spreads_over_a_class_ordered_split(tmp_path):
    # Arrays sorted by class: the first 10 of 100 would all be class 0.
    images = np.arange(100, dtype=np.float32)[:, None, None, None] * np.ones((1, 4, 4, 3)) / 100
    labels = np.repeat(np.arange(4), 25).astype(np.int32)
    batches = list(data.eval_dataset((images, labels), "train", 4, 4, max_examples=10))
    got = np.concatenate([y.numpy() for _, y in batches])
    np.testing.assert_array_equal(got, labels[::10])  # indices 0, 10, ..., 90
    assert sorted(set(got)) == [0, 1, 2, 3]
    assert sum(len(y) for _, y in data.eval_dataset((images, labels), "train", 8, 4)) == 100
    # A class-ordered folder: two files per class, at most 2 examples → one of each class.
    _write_folder(str(tmp_path), corrupt=False)
    folder = data.eval_dataset(str(tmp_path), "train", 8, 8, max_examples=2)
    np.testing.assert_array_equal(np.concatenate([y.numpy() for _, y in folder]), [0, 1])
    with pytest.raises(ValueError, match="max_examples must be a positive int"):
        data.eval_dataset((images, labels), "train", 4, 4, max_examples=0)

def test_center_crop_takes_the_central_square():
    image = tf.reshape(tf.range(8 * 12 * 3, dtype=tf.float32), [8, 12, 3])
    out = image_ops.center_crop(image, 8, 1.0)
    np.testing.assert_allclose(out.numpy(), image[:, 2:10].numpy(), atol=1e-3)
