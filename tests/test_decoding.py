"""Tests for byol_tf.data.decoding: whole images and decode-time crops of each format, corrupt files
named or skipped, unsupported formats reported."""

import logging
import os
import struct

import numpy as np
import pytest
import tensorflow as tf
from helpers import (
    FAST,
    corrupt_jpeg,
    folder_with,
    mixed_image_folder,
    take,
    truncated_png,
    write_images,
)

from byol_tf import data
from byol_tf.cli import console
from byol_tf.data import decoding, pipelines
from byol_tf.views.augment import ViewConfig

WHOLE = ViewConfig(crop_area=(1.0, 1.0), crop_aspect=(1.0, 1.0), resize_method="bilinear")


def _bmp(image):
    """A 24-bit BMP of uint8 [H, W, 3], written by hand: rows bottom-up, BGR, padded to 4 bytes."""
    height, width, _ = image.shape
    row = width * 3 + (-width * 3) % 4
    pixels = b"".join(
        image[y, :, ::-1].tobytes() + b"\0" * (row - width * 3) for y in range(height - 1, -1, -1)
    )
    header = struct.pack("<2sIHHI", b"BM", 54 + len(pixels), 0, 0, 54)
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, len(pixels), 0, 0, 0, 0)
    return header + info + pixels


def _noise(shape, seed=0):
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


# --- decode_full -----------------------------------------------------------------------------


def test_decode_full_gives_rgb_of_every_readable_format():
    rgb, grey, rgba = _noise((5, 7, 3)), _noise((5, 7, 1), 1), _noise((5, 7, 4), 2)
    cases = [
        (tf.io.encode_png(rgb), rgb),
        (tf.io.encode_png(grey), np.repeat(grey, 3, axis=-1)),  # greyscale replicated
        (tf.io.encode_png(rgba), rgba[..., :3]),  # alpha dropped
        (_bmp(rgb), rgb),
    ]
    for encoded, expected in cases:
        image = decoding.decode_full(tf.constant(encoded))
        assert image.dtype == tf.uint8 and image.shape == (5, 7, 3)
        np.testing.assert_array_equal(image.numpy(), expected)
    grey_jpeg = decoding.decode_full(tf.io.encode_jpeg(np.full((8, 8, 1), 90, np.uint8))).numpy()
    assert grey_jpeg.shape == (8, 8, 3) and np.all(grey_jpeg == grey_jpeg[..., :1])
    assert np.abs(grey_jpeg.astype(int) - 90).max() <= 1  # lossy, but flat stays flat


@pytest.mark.parametrize("damage", [corrupt_jpeg, truncated_png], ids=["not_a_jpeg", "cut_png"])
def test_decode_full_refuses_a_damaged_file(tmp_path, damage):
    path = str(tmp_path / "bad")
    damage(path)
    with pytest.raises(tf.errors.InvalidArgumentError):
        decoding.decode_full(tf.io.read_file(path))


# --- decode_crops ----------------------------------------------------------------------------


@pytest.mark.parametrize("encode", [tf.io.encode_png, tf.io.encode_jpeg], ids=["png", "jpeg"])
def test_a_whole_image_crop_is_the_resized_image(encode):
    encoded = encode(_noise((24, 24, 3)))
    crops = decoding.decode_crops(encoded, tf.constant([1, 2], tf.int64), (WHOLE, WHOLE), 10)
    assert crops.shape == (2, 10, 10, 3) and crops.dtype == tf.float32
    decoded = tf.io.decode_image(encoded, channels=3)  # a JPEG's full window decodes the same
    expected = tf.image.resize(decoded, [10, 10], method="bilinear").numpy() / 255.0
    np.testing.assert_allclose(crops[0].numpy(), np.clip(expected, 0, 1), atol=1e-6)
    np.testing.assert_allclose(crops[1].numpy(), crops[0].numpy(), atol=0)


@pytest.mark.parametrize("encode", [tf.io.encode_png, tf.io.encode_jpeg], ids=["png", "jpeg"])
def test_every_crop_of_a_flat_image_is_its_colour(encode):
    colour = np.array([200, 40, 120], np.uint8)
    encoded = encode(np.broadcast_to(colour, (30, 20, 3)).copy())
    configs = (ViewConfig(), ViewConfig(crop_area=(0.08, 0.1), resize_method="bilinear"))
    for seed in range(5):
        crops = decoding.decode_crops(encoded, tf.constant([seed, 0], tf.int64), configs, 12)
        assert crops.shape == (2, 12, 12, 3)
        np.testing.assert_allclose(crops.numpy(), np.broadcast_to(colour / 255, crops.shape),
                                   atol=3 / 255)  # fmt: skip


def test_crops_depend_on_the_seed_alone_and_the_two_views_differ():
    encoded = tf.io.encode_png(_noise((40, 60, 3)))
    configs = (ViewConfig(), ViewConfig())
    crop = tf.function(lambda seed: decoding.decode_crops(encoded, seed, configs, 16))
    a = crop(tf.constant([3, 4], tf.int64)).numpy()
    np.testing.assert_array_equal(a, crop(tf.constant([3, 4], tf.int64)).numpy())
    assert not np.array_equal(a, crop(tf.constant([3, 5], tf.int64)).numpy())
    assert not np.array_equal(a[0], a[1])  # each view folds its own index into the seed
    assert a.min() >= 0.0 and a.max() <= 1.0


# --- decode_files, unreadable_file, SkippedFiles ----------------------------------------------


def _files(tmp_path):
    """Three `(path, index, label)` elements; the middle file is corrupt."""
    paths = [str(tmp_path / name) for name in ("a.png", "bad.jpg", "c.png")]
    tf.io.write_file(paths[0], tf.io.encode_png(np.full((4, 4, 3), 10, np.uint8)))
    corrupt_jpeg(paths[1])
    tf.io.write_file(paths[2], tf.io.encode_png(np.full((6, 6, 3), 30, np.uint8)))
    elements = tf.data.Dataset.from_tensor_slices(
        (paths, tf.constant([0, 1, 2], tf.int64), tf.constant([7, 8, 9], tf.int32))
    )
    return paths, elements


def _mean_colour(data, index):
    return tf.reduce_mean(tf.cast(decoding.decode_full(data), tf.float32))


def test_decode_files_names_the_corrupt_file_in_its_error(tmp_path):
    paths, elements = _files(tmp_path)
    with pytest.raises(tf.errors.InvalidArgumentError) as info:
        list(decoding.decode_files(elements, _mean_colour))
    assert decoding.unreadable_file(info.value) == paths[1]
    assert "skip_corrupt=True skips it" in str(info.value)


def test_decode_files_skips_and_records_corrupt_files_keeping_order(tmp_path):
    paths, elements = _files(tmp_path)
    skipped = decoding.SkippedFiles()
    out = list(decoding.decode_files(elements, _mean_colour, skipped))
    assert [(float(v), int(i), int(y)) for v, i, y in out] == [(10.0, 0, 7), (30.0, 2, 9)]
    assert skipped.paths() == [paths[1]] and skipped.count(paths[1]) == 1
    list(decoding.decode_files(elements, _mean_colour, skipped))  # a second pass counts again
    assert skipped.paths() == [paths[1]] and skipped.count(paths[1]) == 2


def test_unreadable_file_reads_the_path_from_the_message_or_gives_none():
    message = "assertion failed: [Cannot decode image file] [/data/x y.jpg] [(corrupt ...)]"
    assert decoding.unreadable_file(ValueError(message)) == "/data/x y.jpg"
    assert decoding.unreadable_file(ValueError("some other failure")) is None


def test_note_unsupported_logs_each_new_file_once(tmp_path, caplog):
    folder = str(tmp_path)
    first = [os.path.join(folder, n) for n in ("a.webp", "b.WEBP", "c.tif")]
    skipped = decoding.SkippedFiles()
    with caplog.at_level(logging.WARNING):
        decoding.note_unsupported(folder, first, (".jpg", ".png"), skipped)
        decoding.note_unsupported(folder, first, (".jpg", ".png"), skipped)  # nothing new
        more = [*first, os.path.join(folder, "d.heic")]
        decoding.note_unsupported(folder, more, (".jpg",), skipped)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2
    assert lines[0].startswith(
        f"byol_tf: skipping 3 image file(s) of unsupported formats in {folder} "
        f"(1 .tif, 2 .webp; e.g. {first[0]}); readable formats: .jpg, .png ("
    )
    assert f"(1 .heic; e.g. {os.path.join(folder, 'd.heic')}); readable formats: .jpg (" in lines[1]
    assert lines[1].endswith("(4 files skipped so far)")
    assert skipped.paths() == more


# --- through the pretraining pipeline ----------------------------------------------------------


def _one_pass(source, **kwargs):
    ds = pipelines.pretrain_dataset(source, 4, 28, repeat=False, jit_compile=False, **kwargs)
    batches = list(ds)
    assert all(b["view1"].shape == (4, 28, 28, 3) for b in batches)
    assert all(np.isfinite(b["view1"].numpy()).all() for b in batches)
    return sum(int(b["view1"].shape[0]) for b in batches)


def test_corrupt_jpeg_with_skip_corrupt_is_skipped_and_reported(tmp_path):
    root = folder_with(tmp_path, "bad.jpg", corrupt_jpeg)
    source = data.source(root)
    assert _one_pass(source, skip_corrupt=True) == 16
    assert source.skipped_files() == [os.path.join(root, "b", "bad.jpg")]


def test_unsupported_image_formats_are_skipped_counted_and_reported(tmp_path, caplog):
    root = folder_with(tmp_path, "notes.txt", lambda path: open(path, "w").close())
    for name in ("a/x.webp", "b/y.TIFF", "b/z.tif"):
        with open(os.path.join(root, name), "wb") as handle:
            handle.write(b"an image TensorFlow cannot decode")
    with caplog.at_level(logging.WARNING):
        source = data.source(root)
        assert _one_pass(source) == 16
    lines = [r.getMessage() for r in caplog.records if "unsupported formats" in r.getMessage()]
    assert len(lines) == 2  # one per folder listed, not per pass over it
    assert lines[1].startswith(
        f"byol_tf: skipping 2 image file(s) of unsupported formats in {root}"
    )
    assert "(1 .tif, 1 .tiff; e.g." in lines[1] and "readable formats: .jpg, .jpeg" in lines[1]
    assert source.skipped_files() == [
        os.path.join(root, n) for n in ("a/x.webp", "b/y.TIFF", "b/z.tif")
    ]
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


def test_corrupt_file_error_names_the_file_and_skip_corrupt_skips_it(tmp_path):
    mixed_image_folder(str(tmp_path))
    with pytest.raises(tf.errors.InvalidArgumentError, match="broken.jpg"):
        take(pipelines.pretrain_dataset(str(tmp_path), 5, 16, **FAST), 1)
    source = data.source(str(tmp_path))
    batches = take(pipelines.pretrain_dataset(source, 4, 16, skip_corrupt=True, **FAST), 3)
    assert all(sorted(b["label"]) == [0, 0, 1, 1] for b in batches)
    assert source.skipped_files() == [os.path.join(str(tmp_path), "dog", "broken.jpg")]


def test_two_pipelines_in_one_process_keep_their_skipped_files_apart(tmp_path):
    first = data.source(folder_with(tmp_path / "first", "bad.jpg", corrupt_jpeg))
    second = data.source(folder_with(tmp_path / "second", "broken.png", truncated_png))
    write_images(str(tmp_path / "clean" / "a"), 8, (12, 12, 3))
    clean = data.source(str(tmp_path / "clean"))
    assert _one_pass(first, skip_corrupt=True) == 16
    list(pipelines.eval_dataset(second, 4, 12, skip_corrupt=True))
    assert _one_pass(clean, skip_corrupt=True) == 8
    assert first.skipped_files() == [os.path.join(first.name, "b", "bad.jpg")]
    assert second.skipped_files() == [os.path.join(second.name, "b", "broken.png")]
    assert clean.skipped_files() == []
    again = data.source(first.name)  # resolved again: a new pipeline, a new count
    assert _one_pass(again, skip_corrupt=True) == 16
    assert again.skipped.count(again.skipped_files()[0]) == 1
