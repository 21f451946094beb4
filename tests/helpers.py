"""Helpers shared by the test modules: tiny models, data and runs the tests make themselves.

Fixtures built from them (a one-step run, a tiny export) are in tests/conftest.py.
"""

import hashlib
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from absl import flags
from absl.testing import flagsaver

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)  # the programs train.py and evaluate.py are at the top
flags.FLAGS.mark_as_parsed()  # tests set flags through flagsaver, never from a command line

# A train.py run small enough for a test: the demo set, a ResNet-18 of width 1/8.
TINY = dict(
    dataset="demo",
    image_size=28,
    width_multiplier=0.125,
    projection_dim=16,
    hidden_dim=32,
    batch_size=32,
    epochs=2,
    steps_per_epoch=2,
    knn_max_examples=256,
    knn_k=20,
    checkpoint_every_steps=1,
    keep_checkpoints=10,
    log_every_steps=1,
)
# One step, no kNN monitor, no demo baseline: the quickest finished run.
QUICK = dict(TINY, epochs=1, steps_per_epoch=1, knn_every_epochs=0, demo_baseline=False)


def tiny_encoder(image_size=8, channels=3, filters=4, sync_bn=False, name="tiny"):
    """Conv → BN → ReLU → global pool: the smallest encoder with BatchNorm."""
    inputs = keras.Input((image_size, image_size, channels))
    x = keras.layers.Conv2D(filters, 3, padding="same", name="conv")(inputs)
    x = keras.layers.BatchNormalization(synchronized=sync_bn, name="bn")(x)
    x = keras.layers.ReLU()(x)
    outputs = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, outputs, name=name)


def tiny_checkpoint_run(model_dir, step=1, **run_config):
    """A run folder without training: one checkpoint of a tiny BYOL (8×8 images, 4 features)
    at `step`, and `run_config.json` holding `run_config` when there is any.

    Returns:
        The `BYOL` model saved.
    """
    from byol_tf.core.model import BYOL
    from byol_tf.runs import checkpoints

    model = BYOL(tiny_encoder(8), projection_dim=4, hidden_dim=8)
    model.compile(optimizer="sgd")
    checkpoints.save_checkpoint(model, str(model_dir), step=step)
    if run_config:
        with open(os.path.join(model_dir, "run_config.json"), "w") as handle:
            json.dump(run_config, handle)
    return model


# --- pipelines -------------------------------------------------------------------------------

FAST = dict(jit_compile=False)  # same output as XLA (test_augment); saves the compile time


def take(ds, n):
    """The first `n` elements of a dataset of dicts, as dicts of NumPy arrays."""
    return [{k: v.numpy() for k, v in element.items()} for element in ds.take(n)]


def assert_same_batches(a, b):
    """Asserts two lists of `take` batches are equal, key by key and element by element."""
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x.keys() == y.keys()
        for key in x:
            np.testing.assert_array_equal(x[key], y[key])


# --- files -----------------------------------------------------------------------------------


def snapshot(folder):
    """`{relative path: sha256}` of every file under `folder`."""
    found = {}
    for base, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(base, name)
            with open(path, "rb") as handle:
                found[os.path.relpath(path, folder)] = hashlib.sha256(handle.read()).hexdigest()
    return found


def a_file(tmp_path, name="a_file"):
    """A file holding "precious", where a folder is expected."""
    path = tmp_path / name
    path.write_text("precious")
    return path


def write_images(folder, count, shape, ext="jpg", seed=0):
    """`count` noise images `0.<ext> ...` of `shape` (uint8 [H, W, C]) in `folder`."""
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        image = rng.integers(0, 256, shape, dtype=np.uint8)
        encoded = tf.io.encode_jpeg(image) if ext == "jpg" else tf.io.encode_png(image)
        tf.io.write_file(os.path.join(folder, f"{i}.{ext}"), encoded)


def class_folder(root, classes, per_class=8):
    """Noise PNGs in `root/<class>/` for each class name (in `root` itself if None)."""
    for seed, name in enumerate(classes or [None]):
        write_images(os.path.join(root, name or ""), per_class, (12, 12, 3), "png", seed)
    return root


def corrupt_jpeg(path):
    """A file with a JPEG's magic bytes and nothing else of one."""
    with open(path, "wb") as handle:
        handle.write(b"\xff\xd8\xff\xe0 not really a JPEG")


def truncated_png(path):
    """The first half of a valid 12×12 PNG."""
    encoded = tf.io.encode_png(np.full((12, 12, 3), 127, np.uint8)).numpy()
    with open(path, "wb") as handle:
        handle.write(encoded[: len(encoded) // 2])


def folder_with(tmp_path, bad_name, make_bad):
    """Classes a and b of 8 JPEGs each, plus `make_bad(path)` as `b/<bad_name>`."""
    root = str(tmp_path / "images")
    write_images(os.path.join(root, "a"), 8, (12, 12, 3))
    write_images(os.path.join(root, "b"), 8, (12, 12, 3), seed=1)
    make_bad(os.path.join(root, "b", bad_name))
    return root


def mixed_image_folder(root, corrupt=True):
    """`root/cat/` (a 300×200 JPEG, a greyscale PNG) and `root/dog/` (an RGBA PNG, a greyscale
    JPEG), plus `dog/broken.jpg`, not a JPEG at all, when `corrupt`."""
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
        corrupt_jpeg(os.path.join(root, "dog", "broken.jpg"))


# Image folders a labelled evaluation cannot score: (class subfolders, or None for a flat
# folder; why, as the error and the kNN monitor's note say it).
NEEDS_CLASSES = "needs at least 2 classes (subfolders) for a labelled evaluation"
UNSCORABLE_FOLDERS = {
    "two_classes_no_test_subfolder": (["a", "b"], "has no 'test' subfolder"),
    "one_class": (["a"], f"{NEEDS_CLASSES}; found 1"),
    "flat": (None, f"{NEEDS_CLASSES}; found none"),
}


# --- the programs ----------------------------------------------------------------------------


def one_line(error, program):
    """The message of a `pytest.raises(SystemExit)` record, checked to be one error line."""
    message = str(error.value.code)
    assert message.startswith(f"{program}: error: "), message
    assert "\n" not in message and "Traceback" not in message, message
    return message


def train_error(model_dir, **overrides):
    """The one-line error of `train.py` with the `QUICK` flags plus `overrides`."""
    import train

    with flagsaver.flagsaver(**dict(QUICK, model_dir=model_dir, **overrides)):
        with pytest.raises(SystemExit) as error:
            train.main(["train.py"])
    return one_line(error, "train.py")


def evaluate_error(**settings):
    """The one-line error of `evaluate.py` with `settings` (kNN unless they say otherwise)."""
    import evaluate

    with flagsaver.flagsaver(**dict(dict(protocol="knn"), **settings)):
        with pytest.raises(SystemExit) as error:
            evaluate.main(["evaluate.py"])
    return one_line(error, "evaluate.py")


def run_program(args, timeout=180):
    """Runs `python <args>` in the repository root, TensorFlow's native logging off.

    Returns:
        The `subprocess.CompletedProcess`, with text stdout and stderr.
    """
    return subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
    )
