"""Tests of `byol_tf.views.image_ops` numerics against NumPy references."""

import numpy as np
import pytest
import tensorflow as tf

from byol_tf.views import image_ops


def numpy_blur(image, sigma, radius, mode):
    """Separable Gaussian blur of [C, H, W]: np.pad with `mode` ("constant" is the official
    'SAME' convolution's zero padding), then the normalised kernel along H and along W."""
    taps = np.arange(-radius, radius + 1)
    kernel = np.exp(-(taps**2) / (2 * sigma**2))
    kernel /= kernel.sum()
    padded = np.pad(image, ((0, 0), (radius, radius), (0, 0)), mode=mode)
    rows = sum(k * padded[:, i : i + image.shape[1]] for i, k in enumerate(kernel))
    padded = np.pad(rows, ((0, 0), (0, 0), (radius, radius)), mode=mode)
    return sum(k * padded[:, :, i : i + image.shape[2]] for i, k in enumerate(kernel))


@pytest.mark.parametrize("padding, mode", [("zero", "constant"), ("reflect", "reflect")])
def test_gaussian_blur_pads_as_the_numpy_reference(padding, mode):
    images = np.random.default_rng(0).uniform(size=(2, 3, 12, 9)).astype("float32")
    sigmas = np.array([0.7, 1.9], "float32")
    got = image_ops.gaussian_blur(tf.constant(images), tf.constant(sigmas), 3, padding).numpy()
    for image, sigma, blurred in zip(images, sigmas, got, strict=True):
        np.testing.assert_allclose(blurred, numpy_blur(image, sigma, 3, mode), atol=1e-5)


def test_zero_padded_blur_darkens_the_border_of_a_constant_image():
    ones = tf.ones([1, 3, 10, 10])
    zero = image_ops.gaussian_blur(ones, tf.constant([2.0]), 2, "zero").numpy()
    reflect = image_ops.gaussian_blur(ones, tf.constant([2.0]), 2).numpy()
    np.testing.assert_allclose(reflect, 1.0, atol=1e-6)
    assert zero[0, 0, 0, 0] < 0.7 and zero[0, 0, 5, 5] == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(ValueError, match="padding must be one of"):
        image_ops.gaussian_blur(ones, tf.constant([2.0]), 2, "same")


def test_center_crop_takes_the_central_square():
    image = tf.reshape(tf.range(8 * 12 * 3, dtype=tf.float32), [8, 12, 3])
    out = image_ops.resize_center_crop(image, 8, 1.0)
    np.testing.assert_allclose(out.numpy(), image[:, 2:10].numpy(), atol=1e-3)
