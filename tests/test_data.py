"""Tests for byol_tf.data.pipelines: view-pair pipelines (reproducible, resumable), errors, eval
batches."""


import numpy as np
import pytest
import tensorflow as tf
from helpers import FAST, assert_same_batches, mixed_image_folder, take

from byol_tf import data
from byol_tf.data import pipelines


def test_demo_source_yields_view_pairs_with_labels():
    ds = pipelines.pretrain_dataset("demo", 16, 32, seed=0)
    spec = ds.element_spec
    assert spec["view1"].shape == spec["view2"].shape == (16, 32, 32, 3)
    assert spec["view1"].dtype == tf.float32 and spec["label"].dtype == tf.int32
    (batch,) = take(ds, 1)
    assert np.isfinite(batch["view1"]).all() and not np.array_equal(batch["view1"], batch["view2"])
    assert abs(batch["view1"].mean()) < 1.0 and 0.3 < batch["view1"].std() < 2.0
    info = pipelines.source_info("demo")
    assert (info.num_examples, info.num_classes, info.mean) == (6000, 10, (0.286,) * 3)
    assert pipelines.steps_per_epoch("demo", 64) == 93
    assert pipelines.source_info(data.source("demo", "test")).num_examples == 1000


def test_same_seed_reproduces_batches_and_different_seed_does_not():
    a = take(pipelines.pretrain_dataset("demo", 8, 32, seed=3, **FAST), 2)
    b = take(pipelines.pretrain_dataset("demo", 8, 32, seed=3, **FAST), 2)
    c = take(pipelines.pretrain_dataset("demo", 8, 32, seed=4, **FAST), 2)
    assert_same_batches(a, b)
    assert not np.array_equal(a[0]["view1"], c[0]["view1"])
    assert not np.array_equal(a[0]["label"], c[0]["label"])


def test_start_step_resumes_exactly_across_an_epoch_boundary():
    x = np.random.default_rng(0).integers(0, 256, (20, 8, 8, 3), dtype=np.uint8)
    source = (x, np.arange(20))
    full = take(pipelines.pretrain_dataset(source, 6, 8, seed=1, **FAST), 7)
    resumed = take(pipelines.pretrain_dataset(source, 6, 8, seed=1, start_step=4, **FAST), 3)
    assert_same_batches(full[4:], resumed)
    first_epoch = np.concatenate([b["label"] for b in full[:3]])
    assert len(set(first_epoch)) == 18  # a permutation: no repeats within an epoch


def test_array_sources_with_and_without_labels():
    x = np.random.default_rng(1).random((10, 12, 12)).astype(np.float32)
    (batch,) = take(pipelines.pretrain_dataset((x,), 5, 12, **FAST), 1)
    assert set(batch) == {"view1", "view2"} and batch["view1"].shape == (5, 12, 12, 3)
    (batch,) = take(pipelines.pretrain_dataset((x, np.arange(10) % 2), 5, 12, **FAST), 1)
    assert batch["label"].dtype == np.int32 and set(batch["label"]) <= {0, 1}
    (batch,) = take(
        pipelines.pretrain_dataset((x, np.arange(10)), 5, 12, with_labels=False, **FAST), 1
    )
    assert "label" not in batch
    once = list(pipelines.pretrain_dataset((x,), 4, 12, repeat=False, **FAST))
    assert len(once) == 2  # drop_remainder


def test_bad_inputs_give_one_line_errors_naming_the_problem(tmp_path):
    cases = [
        (FileNotFoundError, "no/such", lambda: pipelines.pretrain_dataset("./no/such", 4, 32)),
        (ValueError, "No images", lambda: pipelines.pretrain_dataset(str(tmp_path), 4, 32)),
        (ValueError, "image_size=128", lambda: pipelines.pretrain_dataset("demo", 4, 128)),
        (ValueError, "batch_size", lambda: pipelines.pretrain_dataset("demo", 0, 32)),
        (
            ValueError,
            "image_size",
            lambda: pipelines.eval_dataset(data.source("demo", "test"), 4, 2.5),
        ),
        (
            ValueError,
            "split",
            lambda: pipelines.pretrain_dataset(data.source("demo", "val"), 4, 32),
        ),
        (
            ValueError,
            "same length",
            lambda: pipelines.pretrain_dataset((np.zeros((4, 8, 8)), [1]), 2, 8),
        ),
    ]
    for error, text, call in cases:
        with pytest.raises(error, match=text) as raised:
            call()
        assert "\n" not in str(raised.value)


def test_eval_dataset_keeps_order_and_remainder():
    batches = list(pipelines.eval_dataset(data.source("demo", "test"), 300, 32))
    assert [int(x.shape[0]) for x, _ in batches] == [300, 300, 300, 100]
    labels = np.concatenate([y.numpy() for _, y in batches])
    with np.load(pipelines.sources.DEMO_FILE) as demo:
        np.testing.assert_array_equal(labels, demo["y_test"])
    images = np.concatenate([x.numpy() for x, _ in batches])
    assert abs(images.mean()) < 0.1 and abs(images.std() - 1) < 0.1


def test_eval_dataset_max_examples_spreads_over_a_class_ordered_split(tmp_path):
    # Arrays sorted by class: the first 10 of 100 would all be class 0.
    images = np.arange(100, dtype=np.float32)[:, None, None, None] * np.ones((1, 4, 4, 3)) / 100
    labels = np.repeat(np.arange(4), 25).astype(np.int32)
    batches = list(pipelines.eval_dataset((images, labels), 4, 4, max_examples=10))
    got = np.concatenate([y.numpy() for _, y in batches])
    np.testing.assert_array_equal(got, labels[::10])  # indices 0, 10, ..., 90
    assert sorted(set(got)) == [0, 1, 2, 3]
    assert sum(len(y) for _, y in pipelines.eval_dataset((images, labels), 8, 4)) == 100
    # A class-ordered folder: two files per class, at most 2 examples → one of each class.
    mixed_image_folder(str(tmp_path), corrupt=False)
    folder = pipelines.eval_dataset(str(tmp_path), 8, 8, max_examples=2)
    np.testing.assert_array_equal(np.concatenate([y.numpy() for _, y in folder]), [0, 1])
    with pytest.raises(ValueError, match="max_examples must be a positive int"):
        pipelines.eval_dataset((images, labels), 4, 4, max_examples=0)
