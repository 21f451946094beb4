"""Bad inputs to the library API: refused with a message naming them, or handled (skipped,
reported, clamped) without failing."""

import logging
import os

import keras
import numpy as np
import pytest
from helpers import (
    UNSCORABLE_FOLDERS,
    class_folder,
    corrupt_jpeg,
    folder_with,
    write_images,
)

from byol_tf import checkpoints, data, networks, optimizers, recipes, training
from byol_tf.cli import console
from byol_tf.settings import TrainConfig


def _one_pass(root, **kwargs):
    ds = data.pretrain_dataset(root, 4, 28, repeat=False, jit_compile=False, **kwargs)
    batches = list(ds)
    assert all(b["view1"].shape == (4, 28, 28, 3) for b in batches)
    assert all(np.isfinite(b["view1"].numpy()).all() for b in batches)
    return sum(int(b["view1"].shape[0]) for b in batches)


def test_corrupt_jpeg_with_skip_corrupt_is_skipped_and_reported(tmp_path):
    root = folder_with(tmp_path, "bad.jpg", corrupt_jpeg)
    assert _one_pass(root, skip_corrupt=True) == 16
    assert os.path.join(root, "b", "bad.jpg") in data.skipped_files()


def test_unsupported_image_formats_are_skipped_counted_and_reported(tmp_path, caplog):
    root = folder_with(tmp_path, "notes.txt", lambda path: open(path, "w").close())
    for name in ("a/x.webp", "b/y.TIFF", "b/z.tif"):
        with open(os.path.join(root, name), "wb") as handle:
            handle.write(b"an image TensorFlow cannot decode")
    with caplog.at_level(logging.WARNING):
        assert _one_pass(root) == 16
    lines = [r.getMessage() for r in caplog.records if "unsupported formats" in r.getMessage()]
    assert len(lines) == 2  # one per folder listed, not per pass over it
    assert lines[1].startswith(
        f"byol_tf: skipping 2 image file(s) of unsupported formats in {root}"
    )
    assert "(1 .tif, 1 .tiff; e.g." in lines[1] and "readable formats: .jpg, .jpeg" in lines[1]
    assert {os.path.join(root, n) for n in ("a/x.webp", "b/y.TIFF")} <= set(data.skipped_files())
    assert os.path.join(root, "b", "notes.txt") not in data.skipped_files()
    absl_line = b"W1203 23:22:48.434898 1402 decoding.py:90] " + lines[0].encode()
    assert console._NATIVE_NOISE.match(absl_line) is None  # train.py's console shows it


@pytest.mark.parametrize(
    "shape, ext",
    [((12, 12, 1), "png"), ((12, 12, 4), "png"), ((7, 9, 3), "jpg")],
    ids=["greyscale", "rgba", "smaller_than_image_size"],
)
def test_greyscale_rgba_and_small_images_just_work(tmp_path, shape, ext):
    root = str(tmp_path / "images")
    write_images(root, 8, shape, ext)
    assert _one_pass(root) == 8


@pytest.mark.parametrize("rate", [-1.0, float("inf")], ids=["negative", "infinite"])
@pytest.mark.parametrize("name", ["LARS", "AdamW"])
def test_optimisers_refuse_a_negative_or_infinite_learning_rate(name, rate):
    optimizer = getattr(optimizers, name)
    with pytest.raises(ValueError) as info:
        optimizer(rate)
    assert (
        str(info.value) == f"learning_rate must be >= 0 and finite. Received: learning_rate={rate}"
    )
    assert optimizer(0.0).learning_rate == 0.0


@pytest.mark.parametrize("cifar_stem", [False, True], ids=["standard_stem", "cifar_stem"])
def test_every_positive_image_size_suits_the_encoder(cifar_stem):
    # "same" padding: each stride-2 layer maps 1x1 to 1x1, so --image_size needs no minimum
    # beyond 1 (training and export at 1 px run too; the views just carry little information).
    encoder = networks.resnet(18, 0.125, cifar_stem, input_shape=(1, 1, 3))
    assert encoder(np.zeros((2, 1, 1, 3), np.float32), training=True).shape == (2, 64)


@pytest.mark.parametrize(
    "overrides, expected",
    [
        (
            dict(recipe="paper", epochs=1),
            "--warmup_epochs=10 (from --recipe=paper), 100 steps) covers the whole run",
        ),
        (dict(warmup_epochs=5, epochs=1, explicit=("warmup_epochs",)), "--warmup_epochs=5, 50"),
        (dict(warmup_epochs=1, epochs=2), None),
    ],
    ids=["paper_recipe_one_epoch", "warmup_5_epochs_1", "shorter_warmup"],
)
def test_a_warmup_as_long_as_the_run_warns(overrides, expected):
    cfg = TrainConfig(**overrides)
    steps_per_epoch = 10
    total = cfg.epochs * steps_per_epoch
    resolved, _ = recipes.resolve(cfg, total, steps_per_epoch, 640)
    warning = training.warmup_warning(resolved, steps_per_epoch, total)
    if expected is None:
        assert warning is None
    else:
        assert warning.startswith("warning: the learning-rate warm-up") and expected in warning
        assert "never decays" in warning and "\n" not in warning


@pytest.mark.parametrize("kind", ["two_classes_no_test_subfolder", "flat"])
def test_default_knn_monitor_is_turned_off_with_a_note_on_such_a_folder(tmp_path, kind):
    classes, why = UNSCORABLE_FOLDERS[kind]
    root = class_folder(str(tmp_path / kind), classes)
    notes = []
    assert not training._knn_on(TrainConfig(dataset=root), notes.append)
    assert len(notes) == 1 and notes[0].startswith(
        f"Note: the kNN monitor is off: folder {root} {why}"
    )


def test_checkpoint_loading_keeps_keras_safe_mode(tmp_path):
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Lambda(lambda x: x * 2)(inputs))
    path = str(tmp_path / "ckpt-00000001.keras")
    model.save(path)
    with pytest.raises(ValueError, match="safe_mode"):
        checkpoints.load_checkpoint(path)
