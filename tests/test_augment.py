"""Tests for byol_tf.views.augment and image_ops: per-image randomness, seeds, probabilities,
crops."""

import math

import numpy as np
import pytest
import tensorflow as tf

from byol_tf.views import augment, image_ops, rng

# Frequencies are checked within 4 standard errors: a false failure about once in 16,000 runs.
N_DRAWS = 4000
IDENTITY = dict(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))  # outputs stay in [0, 1]
QUIET = dict(jitter_prob=0.0, greyscale_prob=0.0, blur_prob=0.0, solarize_prob=0.0, flip_prob=0.0)


def _assert_frequency(observed, p, n=N_DRAWS):
    tolerance = 4 * math.sqrt(max(p * (1 - p), 1e-12) / n) + 1e-9
    assert abs(observed - p) <= tolerance, (
        f"frequency {observed:.4f}, expected {p} ± {tolerance:.4f}"
    )


def _colour_images(n, size=8, seed=0):
    rng = np.random.default_rng(seed)
    return tf.constant(rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8))


def test_identical_images_get_pairwise_different_views():
    images = tf.repeat(_colour_images(1, 16), 12, axis=0)
    view1, view2 = augment.two_views(images, 3, preset="imagenet")
    for view in (view1.numpy().reshape(12, -1), view2.numpy().reshape(12, -1)):
        distances = np.abs(view[:, None] - view[None]).max(axis=-1)
        assert (distances[~np.eye(12, dtype=bool)] > 1e-3).all()
    assert np.abs(view1.numpy() - view2.numpy()).max(axis=(1, 2, 3)).min() > 1e-3


def test_same_seed_same_views_and_different_seed_different_views():
    images = _colour_images(6, 16)
    a = augment.two_views(images, tf.constant([5, 9]))
    b = augment.two_views(images, tf.constant([5, 9]))
    c = augment.two_views(images, tf.constant([5, 10]))
    np.testing.assert_array_equal(a[0].numpy(), b[0].numpy())
    np.testing.assert_array_equal(a[1].numpy(), b[1].numpy())
    assert np.abs(a[0].numpy() - c[0].numpy()).max() > 0.1


def test_xla_compiled_matches_plain_function():
    images = _colour_images(8, 32)
    seed = tf.constant([1, 2], tf.int64)
    plain = augment.two_views(images, seed, preset="imagenet", image_size=24)
    compiled = tf.function(augment.two_views, jit_compile=True)(
        images, seed, preset="imagenet", image_size=24
    )
    for p, c in zip(plain, compiled, strict=True):
        np.testing.assert_allclose(p.numpy(), c.numpy(), atol=2e-3)


def test_uint8_and_float_inputs_give_the_same_views():
    images = _colour_images(4, 16)
    a = augment.two_views(images, 7)
    b = augment.two_views(tf.cast(images, tf.float32) / 255.0, 7)
    np.testing.assert_allclose(a[0].numpy(), b[0].numpy(), atol=1e-4)


def test_outputs_are_finite_normalised_three_channel_float32():
    grey = _colour_images(8, 16)[..., :1]
    view1, view2 = augment.two_views(grey, 0, image_size=12, mean=(0.5,) * 3, std=(0.25,) * 3)
    for view in (view1, view2):
        assert view.dtype == tf.float32 and view.shape == (8, 12, 12, 3)
        assert np.isfinite(view.numpy()).all()
        assert -2.0 - 1e-5 <= view.numpy().min() and view.numpy().max() <= 2.0 + 1e-5


def test_without_random_ops_output_is_the_normalised_image():
    images = _colour_images(3, 16)
    overrides = dict(QUIET, crop_area=(1.0, 1.0), crop_aspect=(1.0, 1.0))
    view1, _ = augment.two_views(images, 0, mean=(0.5, 0.4, 0.3), std=(0.2, 0.3, 0.4), **overrides)
    expected = (images.numpy() / 255.0 - np.array([0.5, 0.4, 0.3])) / np.array([0.2, 0.3, 0.4])
    np.testing.assert_allclose(view1.numpy(), expected, atol=1e-4)


def test_crop_boxes_have_area_and_aspect_in_range():
    n = N_DRAWS
    for height, width in ((224, 224), (100, 160)):
        boxes = image_ops.sample_crop_boxes(
            tf.constant([3, 4]), tf.fill([n], float(height)), tf.fill([n], float(width))
        ).numpy()
        top, left, h, w = boxes.T
        area = h * w / (height * width)
        assert area.min() >= 0.08 - 1e-5 and area.max() <= 1 + 1e-5
        assert (w / h).min() >= 3 / 4 - 1e-5 and (w / h).max() <= 4 / 3 + 1e-5
        assert (top >= 0).all() and (left >= 0).all()
        assert (top + h <= height + 1e-3).all() and (left + w <= width + 1e-3).all()
        assert area.std() > 0.15  # spread over the range (U[0.08, 1] has 0.27), not stuck


def test_crop_box_fallback_is_the_centred_clamped_crop():
    boxes = image_ops.sample_crop_boxes(
        tf.constant([0, 1]), tf.fill([4], 10.0), tf.fill([4], 1000.0)
    )
    np.testing.assert_allclose(boxes[:, 2:].numpy(), [[10.0, 40 / 3]] * 4, rtol=1e-5)
    np.testing.assert_allclose(boxes[:, 1].numpy(), (1000 - 40 / 3) / 2, rtol=1e-5)


def _frequency(mask):
    return float(np.mean(mask))


def test_greyscale_frequency_is_02_in_both_views():
    images = _colour_images(N_DRAWS)
    views = augment.two_views(images, 11, jitter_prob=0.0, blur_prob=0.0, **IDENTITY)
    for view in views:
        v = view.numpy()
        grey = np.abs(v - v.mean(axis=-1, keepdims=True)).max(axis=(1, 2, 3)) < 1e-5
        _assert_frequency(_frequency(grey), 0.2)


def test_solarisation_only_in_view2_with_frequency_02():
    images = tf.fill([N_DRAWS, 8, 8, 3], 0.7)
    quiet = dict(jitter_prob=0.0, greyscale_prob=0.0)
    view1, view2 = augment.two_views(images, 12, **quiet, **IDENTITY)  # blur keeps a constant
    assert np.allclose(view1.numpy(), 0.7, atol=1e-5)
    solarised = np.abs(view2.numpy() - 0.3).max(axis=(1, 2, 3)) < 1e-5
    assert (solarised | (np.abs(view2.numpy() - 0.7).max(axis=(1, 2, 3)) < 1e-5)).all()
    _assert_frequency(_frequency(solarised), 0.2)


def _roughness(images):
    return np.abs(np.diff(images, axis=2)).mean(axis=(1, 2, 3))


def test_blur_frequency_is_1_in_view1_and_01_in_view2():
    noise = np.random.default_rng(1).random((N_DRAWS, 16, 16, 3)).astype(np.float32)
    overrides = dict(
        crop_area=(1.0, 1.0), crop_aspect=(1.0, 1.0), flip_prob=0.0, jitter_prob=0.0,
        greyscale_prob=0.0, solarize_prob=0.0, blur_sigma=(1.5, 2.0), resize_method="bilinear",
    )  # fmt: skip
    views = augment.two_views(tf.constant(noise), 13, **overrides, **IDENTITY)
    sharp = _roughness(noise)
    for view, p in zip(views, (1.0, 0.1), strict=True):
        blurred = _roughness(view.numpy()) < 0.6 * sharp
        _assert_frequency(_frequency(blurred), p)


def test_flip_frequency_is_05():
    ramp = np.broadcast_to(np.linspace(0, 1, 8, dtype=np.float32)[None, :, None], (8, 8, 3))
    images = tf.constant(np.broadcast_to(ramp, (N_DRAWS, 8, 8, 3)).copy())
    overrides = dict(QUIET, flip_prob=0.5, crop_area=(1.0, 1.0), crop_aspect=(1.0, 1.0))
    for view in augment.two_views(images, 14, **overrides, **IDENTITY):
        flipped = view.numpy()[:, 0, 0, 0] > view.numpy()[:, 0, -1, 0]
        _assert_frequency(_frequency(flipped), 0.5)


def test_jitter_frequency_is_08_and_per_image_order_varies():
    images = tf.fill([N_DRAWS, 4, 4, 3], 0.5) + tf.constant([0.1, -0.1, 0.0])
    overrides = dict(QUIET, jitter_prob=0.8, crop_area=(1.0, 1.0), crop_aspect=(1.0, 1.0))
    view1, _ = augment.two_views(images, 15, **overrides, **IDENTITY)
    changed = np.abs(view1.numpy() - images.numpy()).max(axis=(1, 2, 3)) > 1e-4
    _assert_frequency(_frequency(changed), 0.8)
    seeds = rng.fold_in(tf.constant([0, 15]), tf.range(N_DRAWS))
    _, order = image_ops._jitter_params(seeds, augment.ViewConfig())
    orders = {tuple(row) for row in order.numpy()}
    assert len(orders) == 24  # all 4! orders occur
    assert sorted(order.numpy()[0]) == [0, 1, 2, 3]


def test_jitter_single_ops_match_tf_image():
    images = tf.random.stateless_uniform([2, 8, 8, 3], [0, 1])
    planes = tf.transpose(images, [0, 3, 1, 2])
    hue = tf.transpose(image_ops._rotate_hue(planes, 0.07), [0, 2, 3, 1])
    np.testing.assert_allclose(hue.numpy(), tf.image.adjust_hue(images, 0.07).numpy(), atol=1e-5)
    config = augment.ViewConfig(jitter_prob=1.0, brightness=0.0, contrast=0.0, hue=0.0)
    seeds = tf.constant([[0, 3], [5, 7]])
    out = image_ops.color_jitter(planes, seeds, config)  # saturation only
    factors, _ = image_ops._jitter_params(seeds, config)
    expected = [tf.image.adjust_saturation(images[i], factors[i, 2]) for i in range(2)]
    np.testing.assert_allclose(
        tf.transpose(out, [0, 2, 3, 1]).numpy(), np.stack(expected), atol=1e-5
    )


def _jitter_reference(image, factors, order):
    """Image [H, W, 3] jittered op by op in `order`, each clipped, with colorsys's HSV."""
    import colorsys

    def hsv_map(x, change):
        out = np.empty_like(x)
        for idx in np.ndindex(x.shape[:2]):
            h, s, v = colorsys.rgb_to_hsv(*x[idx])
            out[idx] = colorsys.hsv_to_rgb(*change(h, s, v))
        return out

    brightness, contrast, saturation, hue = factors
    x = image.astype(np.float64)
    for op in order:
        if op == 0:
            x = x + brightness
        elif op == 1:
            mean = x.mean(axis=(0, 1))
            x = contrast * (x - mean) + mean
        elif op == 2:
            x = hsv_map(x, lambda h, s, v: (h, min(s * saturation, 1.0), v))
        else:
            x = hsv_map(x, lambda h, s, v: ((h + hue) % 1.0, s, v))
        x = np.clip(x, 0.0, 1.0)
    return x


def test_jitter_matches_a_sequential_reference_in_every_order():
    config = augment.ViewConfig(jitter_prob=1.0)
    seeds = rng.fold_in(tf.constant([3, 9]), tf.range(48))
    factors, order = image_ops._jitter_params(seeds, config)
    assert len({tuple(row) for row in order.numpy()}) >= 16  # most of the 24 orders
    images = tf.random.stateless_uniform([48, 5, 5, 3], [4, 2])
    out = image_ops.color_jitter(tf.transpose(images, [0, 3, 1, 2]), seeds, config)
    out = tf.transpose(out, [0, 2, 3, 1]).numpy()
    for i in range(48):
        expected = _jitter_reference(images.numpy()[i], factors.numpy()[i], order.numpy()[i])
        np.testing.assert_allclose(out[i], expected, atol=2e-5, err_msg=f"image {i}")


def test_gaussian_blur_preserves_constants_and_matches_numpy():
    images = tf.random.stateless_uniform([2, 3, 9, 11], [0, 2])
    sigma = tf.constant([0.8, 1.6])
    out = image_ops.gaussian_blur(images, sigma, 2).numpy()
    x = np.pad(images.numpy(), [(0, 0), (0, 0), (2, 2), (2, 2)], mode="reflect")
    for b, s in enumerate(sigma.numpy()):
        k = np.exp(-(np.arange(-2, 3) ** 2) / (2 * s * s))
        k /= k.sum()
        rows = sum(k[t] * x[b, :, t : t + 9, :] for t in range(5))
        ref = sum(k[t] * rows[:, :, t : t + 11] for t in range(5))
        np.testing.assert_allclose(out[b], ref, atol=1e-5)
    const = image_ops.gaussian_blur(tf.fill([1, 3, 8, 8], 0.3), tf.constant([2.0]), 3)
    np.testing.assert_allclose(const.numpy(), 0.3, atol=1e-6)


def test_presets_and_overrides():
    v1, v2 = augment.view_configs("imagenet")
    assert (v1.blur_prob, v2.blur_prob, v1.solarize_prob, v2.solarize_prob) == (1.0, 0.1, 0.0, 0.2)
    s1, s2 = augment.view_configs("small")
    assert s1.blur_prob == s2.blur_prob == 0.0 and s2.solarize_prob == 0.2
    o1, o2 = augment.view_configs("imagenet", greyscale_prob=0.5, view2_solarize_prob=0.0)
    assert o1.greyscale_prob == o2.greyscale_prob == 0.5 and o2.solarize_prob == 0.0
    with pytest.raises(ValueError, match="blurr_prob"):
        augment.view_configs("imagenet", blurr_prob=0.5)
    with pytest.raises(ValueError, match="preset"):
        augment.view_configs("cifar")
    with pytest.raises(ValueError, match="image_size"):
        augment.two_views(_colour_images(1), 0, image_size=-3)


@pytest.mark.parametrize(
    "override, match",
    [
        ({"crop_area": (1.5, 1.0)}, "crop_area must be a range low:high with 0 < low <= high <= 1"),
        ({"view2_crop_area": (0.0, 1.0)}, "crop_area"),
        ({"crop_area": 0.5}, "crop_area must be a range"),
        ({"crop_aspect": (2.0, 1.0)}, "crop_aspect"),
        ({"blur_sigma": (-1.0, 2.0)}, "blur_sigma"),
        ({"view1_blur_prob": 1.5}, "blur_prob must be a probability in \\[0, 1\\]"),
        ({"hue": 0.7}, "hue must be in \\[0, 0.5\\]"),
        ({"contrast": -0.1}, "contrast must be >= 0"),
        ({"resize_method": "nearest"}, "resize_method"),
    ],
)
def test_out_of_range_overrides_name_the_option_and_the_range(override, match):
    with pytest.raises(ValueError, match=match) as info:
        augment.view_configs("small", **override)
    assert "Received:" in str(info.value)


def test_boundary_overrides_are_accepted():
    view1, view2 = augment.view_configs(
        "imagenet", crop_area=(1.0, 1.0), blur_sigma=(0.0, 0.0), view2_solarize_prob=1.0, hue=0.5
    )
    assert view1.crop_area == view2.crop_area == (1.0, 1.0)
    assert view2.solarize_prob == 1.0 and view1.solarize_prob == 0.0


def test_small_image_defaults_switch_above_64_px():
    assert augment.default_preset(64) == "small"
    assert augment.default_preset(65) == "imagenet"
    assert image_ops.default_crop_fraction(64) == 1.0
    assert image_ops.default_crop_fraction(65) == 0.875


# Crop samplers against their closed forms, on a square image (continuous boxes): area
# a ~ U[0.08, 1], log-aspect t ~ U[-L, L], L = ln(4/3).
_L = np.log(4 / 3)


def _rejection_area_cdf(x):
    """CDF of the crop area of the rejection sampler: the first of 10 candidates that fits.

    A candidate fits iff |t| <= -ln a, which always holds for a <= 3/4 and has probability
    -ln(a)/L above; the accepted area has the density of a restricted to fitting candidates
    (the chance that none of 10 fits, about 3e-9, is left out).
    """

    def fitting_mass(upper):  # ∫ P(fits | a) da over [0.08, upper], times 1 / 0.92
        upper = np.clip(upper, 0.08, 1.0)
        low = np.minimum(upper, 0.75) - 0.08
        high = np.where(
            upper > 0.75, (upper - upper * np.log(upper)) - (0.75 - 0.75 * np.log(0.75)), 0
        )
        return (low + high / _L) / 0.92

    return fitting_mass(x) / fitting_mass(1.0)


def _clamped_area_cdf(x, grid=2000):
    """CDF of the crop area of the official sampler: one draw, width and height clamped.

    The area is a, unless |t| > -ln a, when one side is clamped to the image's and the area
    is sqrt(a)·exp(-|t|/2). Integrated numerically over (a, t) on a midpoint grid.
    """
    a = 0.08 + 0.92 * (np.arange(grid) + 0.5) / grid
    t = _L * (np.arange(grid) + 0.5) / grid  # |t|, uniform on [0, L]
    area = np.where(
        t[None, :] > -np.log(a)[:, None], np.sqrt(a)[:, None] * np.exp(-t / 2), a[:, None]
    )
    return np.array([(area <= v).mean() for v in np.atleast_1d(x)])


@pytest.mark.parametrize("sampler", ["rejection", "clamped"])
def test_crop_sampler_area_distribution_matches_its_closed_form(sampler):
    n = 40_000
    boxes = image_ops.sample_crop_boxes(
        tf.constant([5, 6]), tf.fill([n], 224.0), tf.fill([n], 224.0), sampler=sampler
    ).numpy()
    area = np.sort(boxes[:, 2] * boxes[:, 3] / 224.0**2)
    assert area.min() >= 0.08 - 1e-5 and area.max() <= 1 + 1e-5
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 0] + boxes[:, 2] <= 224 + 1e-3).all()
    assert (boxes[:, 1] >= 0).all() and (boxes[:, 1] + boxes[:, 3] <= 224 + 1e-3).all()
    points = np.quantile(area, np.linspace(0.01, 0.99, 50))
    empirical = np.searchsorted(area, points, side="right") / n
    expected = _rejection_area_cdf(points) if sampler == "rejection" else _clamped_area_cdf(points)
    other = _clamped_area_cdf(points) if sampler == "rejection" else _rejection_area_cdf(points)
    # Kolmogorov–Smirnov: 0.012 is above the 99.9 % bound for 40,000 draws (0.0098).
    assert np.max(np.abs(empirical - expected)) < 0.012
    assert np.max(np.abs(empirical - other)) > 0.05  # the two samplers are told apart


def test_clamped_sampler_gives_about_twice_the_large_crops():
    large_rejection = 1 - _rejection_area_cdf(0.8)
    large_clamped = 1 - _clamped_area_cdf(0.8)[0]
    assert 0.09 < large_rejection < 0.10 and 0.19 < large_clamped < 0.23


def test_view_config_rejects_an_unknown_crop_sampler():
    with pytest.raises(ValueError, match="crop_sampler"):
        augment.ViewConfig(crop_sampler="uniform")
    assert augment.view_configs("imagenet", crop_sampler="clamped")[1].crop_sampler == "clamped"


def test_zero_blur_padding_darkens_the_borders_where_reflection_keeps_them():
    white = np.ones((2, 40, 40, 3), np.float32)
    only_blur = dict(
        crop_area=(1.0, 1.0), crop_aspect=(1.0, 1.0), flip_prob=0.0, jitter_prob=0.0,
        greyscale_prob=0.0, blur_prob=1.0, blur_sigma=(2.0, 2.0), solarize_prob=0.0,
        mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0),
    )  # fmt: skip
    reflect, _ = augment.two_views(white, 3, **only_blur)
    zero, _ = augment.two_views(white, 3, blur_padding="zero", **only_blur)
    np.testing.assert_allclose(reflect.numpy(), 1.0, atol=1e-5)
    # A 5-tap radius at σ 2: the corner keeps the weight of the in-image taps only.
    taps = np.exp(-(np.arange(-2, 3) ** 2) / 8.0)
    corner = (taps[2:].sum() / taps.sum()) ** 2
    np.testing.assert_allclose(zero.numpy()[:, 0, 0], corner, atol=1e-4)
    np.testing.assert_allclose(zero.numpy()[:, 20, 20], 1.0, atol=1e-5)
    with pytest.raises(ValueError, match="blur_padding"):
        augment.two_views(white, 3, blur_padding="wrap")
