"""Internal: batched, XLA-compilable image operations: crops, resampling, colour, blur,
normalisation."""

import math

import numpy as np
import tensorflow as tf

from byol_tf.settings.choices import BLUR_PADDINGS, CROP_SAMPLERS
from byol_tf.settings.view_presets import SMALL_IMAGE_SIZE
from byol_tf.views import rng

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# ITU-R 601 luma weights, as in the official code and tf.image.rgb_to_grayscale.
_GREY_WEIGHTS = (0.2989, 0.5870, 0.1140)
_BRIGHTNESS, _CONTRAST, _SATURATION, _HUE = range(4)


@tf.autograph.experimental.do_not_convert  # no Python control flow on tensors
def sample_crop_boxes(
    seed, heights, widths, area=(0.08, 1.0), aspect=(3 / 4, 4 / 3), tries=10, sampler="rejection"
) -> tf.Tensor:
    """Samples one random-resized-crop box per image, vectorised.

    Area ∈ U[area] of the image and width/height log-uniform in `aspect`, by one of two
    samplers (docs/algorithm.md §5):

    * `"rejection"`, like `tf.image.sample_distorted_bounding_box` and torchvision: `tries`
      candidates per image, the first that fits wins, else the centre crop of the whole image
      with its aspect clamped to `aspect`;
    * `"clamped"`, the official BYOL code's: one draw per image, its width and height each
      clamped to the image's. Large crops are about twice as frequent (a candidate too large
      to fit becomes a clamped, large crop instead of being redrawn).

    Args:
        seed: stateless seed, shape [2].
        heights: float32 [B], image heights in pixels.
        widths: float32 [B], image widths in pixels.
        area: (min, max) area fraction.
        aspect: (min, max) aspect ratio width / height.
        tries: candidates per image (`"rejection"` only).
        sampler: `"rejection"` or `"clamped"`.

    Returns:
        float32 [B, 4]: (top, left, height, width) in pixels, continuous.

    Raises:
        ValueError: for an unknown sampler.
    """
    if sampler not in CROP_SAMPLERS:
        raise ValueError(f"sampler must be one of {CROP_SAMPLERS}. Received: sampler={sampler!r}")
    heights, widths = tf.cast(heights, tf.float32), tf.cast(widths, tf.float32)
    h_img, w_img = heights[:, None], widths[:, None]
    batch = tf.shape(heights)[0]
    u = rng.uniform([batch, tries if sampler == "rejection" else 1, 2], seed)
    target = (area[0] + (area[1] - area[0]) * u[..., 0]) * h_img * w_img
    log_lo, log_hi = math.log(aspect[0]), math.log(aspect[1])
    ratio = tf.exp(log_lo + (log_hi - log_lo) * u[..., 1])
    w, h = tf.sqrt(target * ratio), tf.sqrt(target / ratio)
    pos = rng.uniform([batch, 2], rng.fold_in(seed, 1))
    if sampler == "clamped":
        w, h = tf.minimum(w[:, 0], widths), tf.minimum(h[:, 0], heights)
        return tf.stack([pos[:, 0] * (heights - h), pos[:, 1] * (widths - w), h, w], axis=1)
    fits = (w <= w_img) & (h <= h_img)
    first = tf.argmax(tf.cast(fits, tf.int32), axis=1, output_type=tf.int32)
    w = tf.gather(w, first, batch_dims=1)
    h = tf.gather(h, first, batch_dims=1)
    # Fallback: the whole image, cropped to the nearest allowed aspect ratio.
    fallback_w = tf.minimum(widths, heights * aspect[1])
    fallback_h = tf.minimum(heights, fallback_w / aspect[0])
    any_fits = tf.reduce_any(fits, axis=1)
    w = tf.where(any_fits, w, fallback_w)
    h = tf.where(any_fits, h, fallback_h)
    top = tf.where(any_fits, pos[:, 0] * (heights - h), (heights - h) / 2)
    left = tf.where(any_fits, pos[:, 1] * (widths - w), (widths - w) / 2)
    return tf.stack([top, left, h, w], axis=1)


def _resample_taps(start, length, in_size, out_size, method):
    """Source indices [B, out, taps] and weights of a 1-D resize of [start, start + length)."""
    steps = (tf.range(out_size, dtype=tf.float32) + 0.5) / out_size
    centre = start[:, None] + steps[None, :] * length[:, None] - 0.5  # half-pixel centres
    base = tf.floor(centre)
    t = (centre - base)[..., None]
    if method == "bilinear":
        offsets, weights = [0, 1], tf.concat([1 - t, t], axis=-1)
    elif method == "bicubic":
        offsets = [-1, 0, 1, 2]
        d = tf.abs(tf.concat([t + 1, t, 1 - t, 2 - t], axis=-1))
        a = -0.5  # Keys' cubic, as tf.image.resize and PIL
        near = ((a + 2) * d - (a + 3)) * d * d + 1
        far = ((a * d - 5 * a) * d + 8 * a) * d - 4 * a
        weights = tf.where(d <= 1, near, tf.where(d < 2, far, 0.0))
    else:
        raise ValueError(f"resize_method must be 'bicubic' or 'bilinear'. Received: {method!r}")
    index = tf.cast(base[..., None], tf.int32) + tf.constant(offsets, tf.int32)
    return tf.clip_by_value(index, 0, in_size - 1), weights


def _resample_matrix(start, length, in_size, out_size, method):
    """Dense per-image interpolation matrices [B, out, in] of a 1-D resize (see _resample_taps)."""
    index, weights = _resample_taps(start, length, in_size, out_size, method)
    return tf.einsum("bot,boti->boi", weights, tf.one_hot(index, in_size, dtype=tf.float32))


def crop_resize_channels_first(images, boxes, size, flip, method) -> tf.Tensor:
    """Crops a box from every image and resizes it to `size`, channels first, XLA-compilable.

    `tf.image.crop_and_resize` has no XLA kernel; this is a separable per-image resize written
    as two batched matmuls with interpolation matrices. No antialiasing, like
    `tf.image.crop_and_resize`; edge pixels are replicated outside the image.

    Args:
        images: [B, H, W, C] with static H and W, any real dtype (pixel values are kept).
        boxes: float32 [B, 4], (top, left, height, width) in pixels.
        size: output side (int) or (height, width).
        flip: bool [B] (True mirrors that image horizontally), or None.
        method: "bicubic" or "bilinear".

    Returns:
        float32 [B, C, size, size].

    Raises:
        ValueError: for an unknown `method`.
    """
    out_h, out_w = (size, size) if isinstance(size, int) else size
    height, width = images.shape[1], images.shape[2]
    rows = _resample_matrix(boxes[:, 0], boxes[:, 2], height, out_h, method)
    cols = _resample_matrix(boxes[:, 1], boxes[:, 3], width, out_w, method)
    if flip is not None:
        cols = tf.where(flip[:, None, None], tf.reverse(cols, [1]), cols)
    # Two batched matmuls with banded matrices: XLA's CPU gathers are far slower than its GEMMs.
    resized = tf.einsum("bsh,bhwc->bcsw", rows, tf.cast(images, tf.float32))
    return tf.einsum("bcsw,btw->bcst", resized, cols)


def _jitter_params(seeds, config):
    """Per-image jitter factors [B, 4] (identity where not applied) and op order [B, 4], drawn
    from per-image seeds [B, 2]."""
    u = rng.uniform_per_seed(seeds, [5])
    apply = u[:, 4] < config.jitter_prob
    spans = tf.constant([config.brightness, config.contrast, config.saturation, config.hue])
    centres = tf.constant([0.0, 1.0, 1.0, 0.0])
    factors = centres + spans * (2 * u[:, :4] - 1)
    factors = tf.where(apply[:, None], factors, centres)
    order_keys = rng.uniform_per_seed(rng.fold_in(seeds, 1), [4])
    order = tf.argsort(order_keys, axis=1, stable=True)
    return factors, order


def _rotate_hue(images, shift):
    """HSV hue shift of [B, 3, H, W] images keeping value and chroma (as tf.image.adjust_hue)."""
    r, g, b = images[:, 0], images[:, 1], images[:, 2]  # slices, not reductions: XLA fuses them
    v = tf.maximum(tf.maximum(r, g), b)
    chroma = v - tf.minimum(tf.minimum(r, g), b)
    inv = 1.0 / tf.where(chroma > 0, chroma, 1.0)
    h = tf.where(v == r, (g - b) * inv, tf.where(v == g, 2.0 + (b - r) * inv, 4.0 + (r - g) * inv))
    k = tf.constant([5.0, 3.0, 1.0])[:, None, None] + (h + 6.0 * shift)[:, None]
    k = k - 6.0 * tf.floor(k * (1.0 / 6.0))  # mod 6; tf.math.floormod is slower under XLA
    return v[:, None] - chroma[:, None] * tf.clip_by_value(tf.minimum(k, 4.0 - k), 0.0, 1.0)


def _affine_op(images, op, f):
    """One brightness, contrast or saturation op (per image: `op` [B, 1, 1, 1]), clipped.

    All three are `c' = a * (c - t) + t + d` with per-image (saturation: per-pixel) a, t, d;
    an image whose `op` is none of them (the hue) is returned unchanged up to the clip.
    """
    is_sat, is_contrast = op == _SATURATION, op == _CONTRAST
    r, g, b = images[:, 0:1], images[:, 1:2], images[:, 2:3]
    v = tf.maximum(tf.maximum(r, g), b)
    chroma = v - tf.minimum(tf.minimum(r, g), b)
    # Saturation in HSV: s' = min(f * s, 1), i.e. chroma' = min(f * chroma, v).
    sat_scale = tf.minimum(f[_SATURATION], v / tf.maximum(chroma, 1e-12))
    mean = tf.reduce_mean(images, axis=[2, 3], keepdims=True)  # contrast: per channel
    scale = tf.where(is_sat, sat_scale, tf.where(is_contrast, f[_CONTRAST], 1.0))
    target = tf.where(is_sat, v, tf.where(is_contrast, mean, 0.0))
    offset = tf.where(op == _BRIGHTNESS, f[_BRIGHTNESS], 0.0)
    return tf.clip_by_value(scale * (images - target) + target + offset, 0.0, 1.0)


def color_jitter(images, seeds, config) -> tf.Tensor:
    """Brightness, contrast, saturation and hue in a per-image random order, each then clipped.

    Brightness, contrast and saturation are affine in each pixel (see `_affine_op`); hue is
    an exact HSV rotation. The hue rotation, the costly op, runs once per image: first the
    ops ordered before each image's hue, then the hue of every image, then the ops after it
    (an image whose op of a slot falls on the other side of its hue keeps its pixels there).

    Args:
        images: float32 [B, 3, H, W] in [0, 1] (channels first).
        seeds: per-image stateless seeds, int [B, 2]: image i's jitter depends on `seeds[i]`
            only.
        config: a `byol_tf.settings.view_presets.ViewConfig` (its jitter_prob, brightness, contrast,
            saturation and hue are read).

    Returns:
        float32 [B, 3, H, W] in [0, 1].
    """
    factors, order = _jitter_params(seeds, config)
    f = [factors[:, i, None, None, None] for i in range(4)]
    hue_slot = tf.argmax(tf.cast(order == _HUE, tf.int32), axis=1)[:, None, None, None]
    for slot in range(3):  # the ops before the hue (slot 3 never is)
        op = order[:, slot, None, None, None]
        images = tf.where(slot < hue_slot, _affine_op(images, op, f), images)
    images = tf.clip_by_value(_rotate_hue(images, f[_HUE][:, 0]), 0.0, 1.0)
    for slot in range(1, 4):  # the ops after it (slot 0 never is)
        op = order[:, slot, None, None, None]
        images = tf.where(slot > hue_slot, _affine_op(images, op, f), images)
    return images


def greyscale(images) -> tf.Tensor:
    """Luma (ITU-R 601 weights) replicated over the channels.

    Args:
        images: float32 [B, 3, H, W] (channels first).

    Returns:
        float32 [B, 3, H, W] with three equal channels.
    """
    grey = tf.reduce_sum(images * tf.constant(_GREY_WEIGHTS)[:, None, None], 1, keepdims=True)
    return tf.broadcast_to(grey, tf.shape(images))


def solarize(images, threshold) -> tf.Tensor:
    """Pixels at or above `threshold` become `1 - x`.

    Args:
        images: float32 tensor in [0, 1].
        threshold: a float in [0, 1].

    Returns:
        float32 tensor of the same shape, in [0, 1].
    """
    return tf.where(images < threshold, images, 1.0 - images)


def _blur_matrix(kernel, size, padding="reflect"):
    """Per-image [B, size, size] matrices of a 1-D convolution; `padding` "reflect" mirrors the
    image at its edges, "zero" pads with zeros (the official code's 'SAME' convolution)."""
    radius = (kernel.shape[1] - 1) // 2
    if radius >= size:
        raise ValueError(f"blur radius {radius} must be smaller than the image side {size}")
    index = np.arange(size)[:, None] + np.arange(-radius, radius + 1)[None, :]
    if padding == "zero":
        inside = (index >= 0) & (index < size)
        taps = np.eye(size, dtype=np.float32)[np.clip(index, 0, size - 1)] * inside[..., None]
    else:
        index = np.abs(index)
        index = np.where(index >= size, 2 * (size - 1) - index, index)  # reflect at both ends
        taps = np.eye(size, dtype=np.float32)[index]  # [size, taps, size]
    return tf.einsum("bt,itj->bij", kernel, tf.constant(taps))


def gaussian_blur(images, sigma, radius, padding="reflect") -> tf.Tensor:
    """Separable Gaussian blur with a per-image σ.

    Each pass is a batched matmul with a banded per-image matrix: one op per axis, which XLA
    compiles quickly and runs as GEMM.

    Args:
        images: float32 [B, C, H, W] (channels first), static H and W.
        sigma: float32 [B], σ in pixels.
        radius: kernel radius (kernel side 2 * radius + 1), a Python int.
        padding: "reflect" (byol_tf's default) or "zero" (the official code's 'SAME'
            convolution, which darkens the borders).

    Returns:
        float32 [B, C, H, W].

    Raises:
        ValueError: for an unknown `padding`, or when `radius` is not smaller than the image's
            height or width.
    """
    if padding not in BLUR_PADDINGS:
        raise ValueError(f"padding must be one of {BLUR_PADDINGS}. Received: padding={padding!r}")
    taps = tf.range(-radius, radius + 1, dtype=tf.float32)
    kernel = tf.exp(-tf.square(taps)[None, :] / (2.0 * tf.square(sigma)[:, None]))
    kernel = kernel / tf.reduce_sum(kernel, axis=1, keepdims=True)  # [B, 2r + 1]
    rows = _blur_matrix(kernel, images.shape[2], padding)
    images = tf.einsum("bij,bcjw->bciw", rows, images)
    return tf.einsum("bchj,bij->bchi", images, _blur_matrix(kernel, images.shape[3], padding))


def to_unit_float(images) -> tf.Tensor:
    """Converts images to float32 in [0, 1].

    Args:
        images: uint8 tensor in [0, 255], or float tensor assumed in [0, 1] already.

    Returns:
        float32 tensor of the same shape.
    """
    if images.dtype == tf.uint8:
        return tf.cast(images, tf.float32) / 255.0
    return tf.cast(images, tf.float32)


def to_uint8(images) -> tf.Tensor:
    """Rounds float images in [0, 1] to uint8 in [0, 255] (values outside are clipped).

    Args:
        images: float tensor.

    Returns:
        uint8 tensor of the same shape.
    """
    return tf.cast(tf.round(tf.clip_by_value(images, 0.0, 1.0) * 255.0), tf.uint8)


def to_rgb(images) -> tf.Tensor:
    """Makes the channel axis 3: greyscale is replicated, an alpha channel dropped.

    Args:
        images: [..., C] with C ∈ {1, 3, 4}.

    Returns:
        [..., 3], same dtype.

    Raises:
        ValueError: for another number of channels.
    """
    channels = images.shape[-1]
    if channels == 1:
        return tf.concat([images] * 3, axis=-1)
    if channels == 4:
        return images[..., :3]
    if channels != 3:
        raise ValueError(f"images must have 1, 3 or 4 channels. Received: shape={images.shape}")
    return images


def normalize(images, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> tf.Tensor:
    """(x - mean) / std per channel.

    Args:
        images: float32 [..., 3] in [0, 1].
        mean: per-channel mean.
        std: per-channel standard deviation.

    Returns:
        float32 [..., 3].
    """
    return (images - tf.constant(mean, tf.float32)) / tf.constant(std, tf.float32)


def default_crop_fraction(image_size) -> float:
    """Share of the short side kept by the evaluation centre crop.

    Args:
        image_size: side of the output images.

    Returns:
        1.0 (the whole image) up to `SMALL_IMAGE_SIZE` px, else 0.875 (ImageNet's 224 of 256).
    """
    return 1.0 if image_size <= SMALL_IMAGE_SIZE else 0.875


def resize_center_crop(image, size, crop_fraction) -> tf.Tensor:
    """Resizes the short side to `size / crop_fraction`, then takes the centre `size` square.

    Args:
        image: [H, W, 3] or [B, H, W, 3], uint8 or float.
        size: output side.
        crop_fraction: fraction of the short side kept (0.875 = ImageNet's 224 of 256).

    Returns:
        float32 [..., size, size, 3] in the input's value range.
    """
    shape = tf.cast(tf.shape(image), tf.float32)
    height, width = shape[-3], shape[-2]
    scale = size / crop_fraction / tf.minimum(height, width)
    new_hw = tf.maximum(tf.cast(tf.round(tf.stack([height, width]) * scale), tf.int32), size)
    image = tf.image.resize(image, new_hw, method="bicubic", antialias=True)
    top, left = (new_hw[0] - size) // 2, (new_hw[1] - size) // 2
    return image[..., top : top + size, left : left + size, :]
