"""Tests of the official linear evaluation's inputs (`byol_tf.views.eval_crops`) against the
official code's closed forms, and of the data pipelines that use them."""

import numpy as np
import pytest
import tensorflow as tf

from byol_tf.data import pipelines
from byol_tf.views import eval_crops, image_ops, rng

# (height, width) of ImageNet-like images: landscape, portrait, square, odd sides, small.
SHAPES = [(375, 500), (500, 333), (256, 256), (481, 359), (99, 1001), (32, 32)]


def official_center_window(height, width, size=224):
    """The official `_decode_and_center_crop` window, in plain Python."""
    side = int((size / (size + 32)) * min(height, width))
    return ((height - side) + 1) // 2, ((width - side) + 1) // 2, side


@pytest.mark.parametrize("height, width", SHAPES)
def test_center_crop_window_is_the_official_closed_form(height, width):
    window = eval_crops.center_crop_window(tf.constant(height), tf.constant(width), 224 / 256)
    assert tuple(int(v) for v in window) == official_center_window(height, width)


def test_center_crop_crops_then_resizes_without_antialiasing():
    image = np.random.default_rng(0).integers(0, 256, (375, 500, 3), dtype=np.uint8)
    top, left, side = official_center_window(375, 500)
    window = image[top : top + side, left : left + side]
    reference = tf.image.resize(window, [224, 224], tf.image.ResizeMethod.BICUBIC)
    reference = np.clip(reference.numpy() / 255.0, 0.0, 1.0)
    got = eval_crops.official_center_crop(tf.constant(image), 224, 0.875).numpy()
    np.testing.assert_allclose(got, reference, atol=1e-6)
    # The other protocols' centre crop (antialiased resize of the whole image, then the
    # centre square) gives another image.
    antialiased = image_ops.resize_center_crop(tf.constant(image), 224, 0.875).numpy() / 255.0
    assert np.abs(np.clip(antialiased, 0, 1) - reference).mean() > 0.01


def test_eval_dataset_official_crop_is_the_official_preprocessing_normalised():
    images = np.random.default_rng(1).integers(0, 256, (4, 90, 120, 3), dtype=np.uint8)
    labels = np.arange(4)
    mean, std = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)
    kwargs = {"crop_fraction": 0.875}
    source = pipelines.sources.source((images, labels), mean=mean, std=std)
    got, _ = next(iter(pipelines.eval_dataset(source, 4, 70, official_crop=True, **kwargs)))
    top, left, side = official_center_window(90, 120, size=224)  # same fraction: 224 / 256
    window = images[:, top : top + side, left : left + side]
    reference = np.clip(tf.image.resize(window, [70, 70], "bicubic").numpy() / 255.0, 0, 1)
    np.testing.assert_allclose(got, (reference - mean) / np.float32(std), atol=1e-5)
    default, _ = next(iter(pipelines.eval_dataset(source, 4, 70, **kwargs)))
    assert not np.allclose(default, got, atol=1e-3)  # the other protocols keep theirs


def official_crop_sizes(height, width, count, seed=0):
    """The official `_decode_and_random_crop` crop sides, reimplemented in NumPy."""
    generator = np.random.default_rng(seed)
    target = generator.uniform(0.08, 1.0, count) * height * width
    ratio = np.exp(generator.uniform(np.log(3 / 4), np.log(4 / 3), count))
    w = np.minimum(np.round(np.sqrt(target * ratio)), width)
    h = np.minimum(np.round(np.sqrt(target / ratio)), height)
    return h, w


def byol_tf_windows(height, width, count, seed=0):
    """`random_crop_window` for `count` seeds: int [count, 4] (top, left, h, w)."""
    seeds = rng.fold_in(rng.as_seed(seed), tf.range(count))
    one = lambda s: eval_crops.random_crop_window(s, height, width)  # noqa: E731
    return tf.function(lambda: tf.map_fn(one, seeds, fn_output_signature=tf.int32))().numpy()


@pytest.mark.parametrize("height, width", [(375, 500), (500, 333), (256, 256)])
def test_whole_image_crops_have_the_official_area_statistics(height, width):
    windows = byol_tf_windows(height, width, 4000)
    h, w = official_crop_sizes(height, width, 20000)
    area, official_area = windows[:, 2] * windows[:, 3], h * w
    # Mean area fraction (the clamp makes it 0.52, not 0.54) and upsampled share (< 224²).
    mean_fraction = area.mean() / (height * width)
    assert mean_fraction == pytest.approx(official_area.mean() / (height * width), abs=0.015)
    upsampled = np.mean(area < 224**2)
    assert upsampled == pytest.approx(np.mean(official_area < 224**2), abs=0.03)
    # Inside the image, and reaching the margins beyond the centre square of the short side.
    assert np.all(windows[:, :2] >= 0)
    assert np.all(windows[:, 0] + windows[:, 2] <= height)
    assert np.all(windows[:, 1] + windows[:, 3] <= width)
    margin = (max(height, width) - min(height, width)) // 2
    starts = windows[:, 1] if width > height else windows[:, 0]
    assert np.mean(starts < margin) > 0.2 or margin == 0


def test_random_crop_is_a_resized_window_flipped_about_half_the_time():
    image = np.random.default_rng(2).integers(0, 256, (60, 90, 3), dtype=np.uint8)
    flips = 0
    for i in range(40):
        seed = rng.fold_in(rng.as_seed(5), i)
        top, left, h, w = eval_crops.random_crop_window(seed, 60, 90).numpy()
        window = image[top : top + h, left : left + w]
        reference = np.clip(tf.image.resize(window, [32, 32], "bicubic").numpy() / 255, 0, 1)
        got = eval_crops.random_crop(tf.constant(image), seed, 32).numpy()
        flipped = not np.allclose(got, reference, atol=1e-6)
        np.testing.assert_allclose(got, reference[:, ::-1] if flipped else reference, atol=1e-6)
        flips += flipped
    assert 8 <= flips <= 32


def test_whole_images_yields_each_image_of_a_folder_at_its_own_size(tmp_path):
    sizes = {"a": (30, 50), "b": (44, 20)}
    for label, (height, width) in sizes.items():
        (tmp_path / "train" / label).mkdir(parents=True)
        pixels = np.full((height, width, 3), 100, np.uint8)
        (tmp_path / "train" / label / "x.png").write_bytes(tf.io.encode_png(pixels).numpy())
    images, info = pipelines.whole_images(str(tmp_path))
    got = [(x.shape, int(y)) for x, y in images.as_numpy_iterator()]
    assert got == [((30, 50, 3), 0), ((44, 20, 3), 1)] and info.num_classes == 2
