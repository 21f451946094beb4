"""BYOL's two view distributions T and T' (paper Table 6) as batched, seeded, XLA-compilable ops."""

import dataclasses
import math

import numpy as np
import tensorflow as tf

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# ITU-R 601 luma weights, as in the official code and tf.image.rgb_to_grayscale.
_GREY_WEIGHTS = (0.2989, 0.5870, 0.1140)
_BRIGHTNESS, _CONTRAST, _SATURATION, _HUE = range(4)


# The (low, high) fields of ViewConfig and what they must satisfy.
_RANGES = {
    "crop_area": ("0 < low <= high <= 1", lambda low, high: 0 < low <= high <= 1),
    "crop_aspect": ("0 < low <= high", lambda low, high: 0 < low <= high),
    "blur_sigma": ("0 <= low <= high", lambda low, high: 0 <= low <= high),
}


@dataclasses.dataclass(frozen=True)
class ViewConfig:
    """Parameters of one view distribution; the defaults are the paper's view 1 (T).

    Attributes:
        crop_area: range of the crop's area as a fraction of the image area.
        crop_aspect: range of the crop's width / height, sampled log-uniformly.
        resize_method: "bicubic" (the paper) or "bilinear" (cheaper).
        flip_prob: probability of a horizontal flip.
        jitter_prob: probability of applying the colour jitter.
        brightness: maximum additive brightness change δ ∈ U[-b, b].
        contrast: contrast factor ∈ U[1 - c, 1 + c] around the per-channel mean.
        saturation: saturation factor ∈ U[1 - s, 1 + s] (HSV).
        hue: hue shift ∈ U[-h, h] as a fraction of the hue circle (HSV).
        greyscale_prob: probability of colour dropping.
        blur_prob: probability of a Gaussian blur.
        blur_sigma: range of the blur's σ in pixels, sampled uniformly.
        blur_kernel_fraction: kernel side as a fraction of the image side (made odd).
        solarize_prob: probability of solarisation.
        solarize_threshold: pixels at or above it become 1 - x.
    """

    crop_area: tuple = (0.08, 1.0)
    crop_aspect: tuple = (3 / 4, 4 / 3)
    resize_method: str = "bicubic"
    flip_prob: float = 0.5
    jitter_prob: float = 0.8
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.2
    hue: float = 0.1
    greyscale_prob: float = 0.2
    blur_prob: float = 1.0
    blur_sigma: tuple = (0.1, 2.0)
    blur_kernel_fraction: float = 0.1
    solarize_prob: float = 0.0
    solarize_threshold: float = 0.5

    def __post_init__(self):
        def fail(name, expected):
            raise ValueError(
                f"Augmentation option {name} must be {expected}. "
                f"Received: {name}={getattr(self, name)!r}"
            )

        for name, (expected, valid) in _RANGES.items():
            value = getattr(self, name)
            if not (isinstance(value, (tuple, list)) and len(value) == 2):
                fail(name, f"a range low:high with {expected}")
            if not valid(*(float(v) for v in value)):
                fail(name, f"a range low:high with {expected}")
        for name in ("flip_prob", "jitter_prob", "greyscale_prob", "blur_prob", "solarize_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                fail(name, "a probability in [0, 1]")
        for name in ("brightness", "contrast", "saturation"):
            if getattr(self, name) < 0:
                fail(name, ">= 0")
        if not 0.0 <= self.hue <= 0.5:
            fail("hue", "in [0, 0.5]")
        if not 0.0 < self.blur_kernel_fraction <= 1.0:
            fail("blur_kernel_fraction", "in (0, 1]")
        if not 0.0 <= self.solarize_threshold <= 1.0:
            fail("solarize_threshold", "in [0, 1]")
        if self.resize_method not in ("bicubic", "bilinear"):
            fail("resize_method", "'bicubic' or 'bilinear'")


# The presets are data: (view 1, view 2). "small" is the usual 32 px practice: no blur.
PRESETS = {
    "imagenet": (ViewConfig(), ViewConfig(blur_prob=0.1, solarize_prob=0.2)),
    "small": (ViewConfig(blur_prob=0.0), ViewConfig(blur_prob=0.0, solarize_prob=0.2)),
}
_FIELDS = frozenset(f.name for f in dataclasses.fields(ViewConfig))


def view_configs(preset="imagenet", **overrides):
    """Returns the `(view1, view2)` configs of a preset with overrides applied.

    Args:
        preset: "imagenet" or "small".
        **overrides: `ViewConfig` fields. A plain name (`blur_prob=0.5`) sets both views;
            a `view1_`/`view2_` prefix (`view2_solarize_prob=0.0`) sets one view.

    Returns:
        A pair of `ViewConfig`.

    Raises:
        ValueError: for an unknown preset or override name, or a value out of its range
            (naming the option and the range expected).
    """
    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {sorted(PRESETS)}. Received: preset={preset!r}")
    views = []
    for i, config in enumerate(PRESETS[preset], start=1):
        changes = {}
        for key, value in overrides.items():
            name = key.split("_", 1)[1] if key.startswith(("view1_", "view2_")) else key
            if name not in _FIELDS:
                raise ValueError(
                    f"Unknown augmentation option {key!r}; expected one of {sorted(_FIELDS)}, "
                    "optionally prefixed with view1_ or view2_"
                )
            if key == name or key.startswith(f"view{i}_"):
                changes[name] = value
        views.append(dataclasses.replace(config, **changes))
    return tuple(views)


def as_seed(seed):
    """Converts a Python int, a scalar or a shape-[2] tensor into a stateless seed of shape [2]."""
    if isinstance(seed, int):
        return tf.constant([seed, 0], tf.int64)
    seed = tf.convert_to_tensor(seed)
    if seed.dtype not in (tf.int32, tf.int64):
        raise ValueError(f"seed must be an int32/int64 tensor. Received: dtype={seed.dtype}")
    seed = tf.cast(seed, tf.int64)
    return tf.stack([seed, tf.zeros_like(seed)]) if seed.shape.rank == 0 else seed


def _mix(h):
    """murmur3's 32-bit finaliser: a bijective avalanche of uint32 values."""
    h = tf.bitwise.bitwise_xor(h, tf.bitwise.right_shift(h, 16)) * tf.constant(
        0x85EBCA6B, tf.uint32
    )
    h = tf.bitwise.bitwise_xor(h, tf.bitwise.right_shift(h, 13)) * tf.constant(
        0xC2B2AE35, tf.uint32
    )
    return tf.bitwise.bitwise_xor(h, tf.bitwise.right_shift(h, 16))


def _words(seed):
    """The two 32-bit words of a [2] int seed (low bits of each entry)."""
    low = tf.bitwise.bitwise_and(tf.cast(seed, tf.int64), tf.constant(0xFFFFFFFF, tf.int64))
    words = tf.cast(low, tf.uint32)
    return words[0], words[1]


def uniform(shape, seed, low=0.0, high=1.0):
    """Stateless U[low, high) float32 numbers from a counter hash (24 random bits each).

    TF's stateless RNG ops give different numbers under XLA than without it; this hash gives
    bit-identical numbers in both, so the compiled and the plain augmentation agree.

    Args:
        shape: output shape.
        seed: int tensor of shape [2].
        low: lower bound.
        high: upper bound (excluded).

    Returns:
        float32 tensor of `shape`.
    """
    k0, k1 = _words(seed)
    count = tf.cast(tf.range(tf.reduce_prod(shape)), tf.uint32)
    bits = _mix(tf.bitwise.bitwise_xor(_mix(count * tf.constant(0x9E3779B9, tf.uint32) + k0), k1))
    unit = tf.cast(tf.bitwise.right_shift(bits, 8), tf.float32) * (1.0 / (1 << 24))
    return low + (high - low) * tf.reshape(unit, shape)


def fold_in(seed, data):
    """A new int64 [2] seed from a [2] seed and an int (scalar tensor or Python int)."""
    k0, k1 = _words(seed)
    d = tf.cast(data, tf.uint32)
    a = _mix(tf.bitwise.bitwise_xor(k0, _mix(d + tf.constant(0x68E31DA4, tf.uint32))))
    b = _mix(tf.bitwise.bitwise_xor(k1 + a, _mix(d + tf.constant(0xB5297A4D, tf.uint32))))
    return tf.cast(tf.stack([a, b]), tf.int64)


def _split(seed, num):
    """`num` independent [2] seeds derived from one."""
    return tf.stack([fold_in(seed, i) for i in range(num)])


@tf.autograph.experimental.do_not_convert  # no Python control flow on tensors
def sample_crop_boxes(seed, heights, widths, area=(0.08, 1.0), aspect=(3 / 4, 4 / 3), tries=10):
    """Samples one random-resized-crop box per image, vectorised.

    Like `tf.image.sample_distorted_bounding_box` / torchvision: `tries` candidates per image with
    area ∈ U[area] of the image and log-uniform width/height ∈ `aspect`; the first that fits
    wins, else the centre crop of the whole image with its aspect clamped to `aspect`.

    Args:
        seed: stateless seed, shape [2].
        heights: float32 [B], image heights in pixels.
        widths: float32 [B], image widths in pixels.
        area: (min, max) area fraction.
        aspect: (min, max) aspect ratio width / height.
        tries: candidates per image.

    Returns:
        float32 [B, 4]: (top, left, height, width) in pixels, continuous.
    """
    heights, widths = tf.cast(heights, tf.float32), tf.cast(widths, tf.float32)
    h_img, w_img = heights[:, None], widths[:, None]
    batch = tf.shape(heights)[0]
    u = uniform([batch, tries, 2], seed)
    target = (area[0] + (area[1] - area[0]) * u[..., 0]) * h_img * w_img
    log_lo, log_hi = math.log(aspect[0]), math.log(aspect[1])
    ratio = tf.exp(log_lo + (log_hi - log_lo) * u[..., 1])
    w, h = tf.sqrt(target * ratio), tf.sqrt(target / ratio)
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
    pos = uniform([batch, 2], fold_in(seed, 1))
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


def _crop_resize_cf(images, boxes, size, flip, method):
    """crop_and_resize returning channels-first float32 [B, C, size, size]."""
    out_h, out_w = (size, size) if isinstance(size, int) else size
    height, width = images.shape[1], images.shape[2]
    rows = _resample_matrix(boxes[:, 0], boxes[:, 2], height, out_h, method)
    cols = _resample_matrix(boxes[:, 1], boxes[:, 3], width, out_w, method)
    if flip is not None:
        cols = tf.where(flip[:, None, None], tf.reverse(cols, [1]), cols)
    # Two batched matmuls with banded matrices: XLA's CPU gathers are far slower than its GEMMs.
    resized = tf.einsum("bsh,bhwc->bcsw", rows, tf.cast(images, tf.float32))
    return tf.einsum("bcsw,btw->bcst", resized, cols)


def crop_and_resize(images, boxes, size, flip=None, method="bicubic"):
    """Crops a box from every image and resizes it to `size`, XLA-compilable.

    `tf.image.crop_and_resize` has no XLA kernel; this is a separable per-image resize written
    as two batched matmuls with interpolation matrices. No antialiasing, like
    `tf.image.crop_and_resize`; edge pixels are replicated outside the image.

    Args:
        images: [B, H, W, C] with static H and W, any real dtype (pixel values are kept).
        boxes: float32 [B, 4], (top, left, height, width) in pixels.
        size: output side (int) or (height, width).
        flip: optional bool [B]; True mirrors that image horizontally.
        method: "bicubic" or "bilinear".

    Returns:
        float32 [B, size, size, C].
    """
    return tf.transpose(_crop_resize_cf(images, boxes, size, flip, method), [0, 2, 3, 1])


def _jitter_params(seed, batch, config):
    """Per-image jitter factors [B, 4] (identity where not applied) and op order [B, 4]."""
    u = uniform([batch, 5], seed)
    apply = u[:, 4] < config.jitter_prob
    spans = tf.constant([config.brightness, config.contrast, config.saturation, config.hue])
    centres = tf.constant([0.0, 1.0, 1.0, 0.0])
    factors = centres + spans * (2 * u[:, :4] - 1)
    factors = tf.where(apply[:, None], factors, centres)
    order_seed = fold_in(seed, 1)
    order = tf.argsort(uniform([batch, 4], order_seed), axis=1, stable=True)
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


def color_jitter(images, seed, config):
    """Brightness, contrast, saturation and hue in a per-image random order, each then clipped.

    Brightness, contrast and saturation are all `c' = a * (c - t) + t + d` with per-image
    (saturation: per-pixel) a, t, d; hue is an exact HSV rotation. Every slot of the order
    evaluates both and selects per image.

    Args:
        images: float32 [B, 3, H, W] in [0, 1] (channels first).
        seed: stateless seed, shape [2].
        config: a `ViewConfig`.

    Returns:
        float32 [B, 3, H, W] in [0, 1].
    """
    factors, order = _jitter_params(seed, tf.shape(images)[0], config)
    f = [factors[:, i, None, None, None] for i in range(4)]
    for slot in range(4):
        op = order[:, slot, None, None, None]
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
        affine = scale * (images - target) + target + offset
        hued = _rotate_hue(images, f[_HUE][:, 0])
        images = tf.clip_by_value(tf.where(op == _HUE, hued, affine), 0.0, 1.0)
    return images


def _blur_matrix(kernel, size):
    """Per-image [B, size, size] matrices of a 1-D convolution with reflect padding."""
    radius = (kernel.shape[1] - 1) // 2
    if radius >= size:
        raise ValueError(f"blur radius {radius} must be smaller than the image side {size}")
    index = np.arange(size)[:, None] + np.arange(-radius, radius + 1)[None, :]
    index = np.abs(index)
    index = np.where(index >= size, 2 * (size - 1) - index, index)  # reflect at both ends
    taps = tf.constant(np.eye(size, dtype=np.float32)[index])  # [size, taps, size]
    return tf.einsum("bt,itj->bij", kernel, taps)


def gaussian_blur(images, sigma, radius):
    """Separable Gaussian blur with a per-image σ, reflect padding.

    Each pass is a batched matmul with a banded per-image matrix: one op per axis, which XLA
    compiles quickly and runs as GEMM.

    Args:
        images: float32 [B, C, H, W] (channels first), static H and W.
        sigma: float32 [B], σ in pixels.
        radius: kernel radius (kernel side 2 * radius + 1), a Python int.

    Returns:
        float32 [B, C, H, W].
    """
    taps = tf.range(-radius, radius + 1, dtype=tf.float32)
    kernel = tf.exp(-tf.square(taps)[None, :] / (2.0 * tf.square(sigma)[:, None]))
    kernel = kernel / tf.reduce_sum(kernel, axis=1, keepdims=True)  # [B, 2r + 1]
    images = tf.einsum("bij,bcjw->bciw", _blur_matrix(kernel, images.shape[2]), images)
    return tf.einsum("bchj,bij->bchi", images, _blur_matrix(kernel, images.shape[3]))


def _blur_radius(side, config):
    return max(int(side * config.blur_kernel_fraction) // 2, 1)


def _select(mask, a, b):
    """Per-image choice; mask is bool [B]."""
    return tf.where(mask[:, None, None, None], a, b)


def _augment_cf(images, seed, config, flip):
    """augment_view on channels-first float32 [B, 3, H, W] in [0, 1]; returns the same layout."""
    seeds = _split(as_seed(seed), 3)
    batch = tf.shape(images)[0]
    u = uniform([batch, 5], seeds[0])
    if flip and config.flip_prob > 0:
        images = _select(u[:, 0] < config.flip_prob, images[..., ::-1], images)
    if config.jitter_prob > 0:
        images = color_jitter(images, seeds[1], config)
    if config.greyscale_prob > 0:
        grey = tf.reduce_sum(images * tf.constant(_GREY_WEIGHTS)[:, None, None], 1, keepdims=True)
        grey = tf.broadcast_to(grey, tf.shape(images))
        images = _select(u[:, 1] < config.greyscale_prob, grey, images)
    if config.blur_prob > 0:
        low, high = config.blur_sigma
        sigma = low + (high - low) * uniform([batch], seeds[2])
        blurred = gaussian_blur(images, sigma, _blur_radius(images.shape[2], config))
        images = _select(u[:, 2] < config.blur_prob, blurred, images)
    if config.solarize_prob > 0:
        solarized = tf.where(images < config.solarize_threshold, images, 1.0 - images)
        images = _select(u[:, 3] < config.solarize_prob, solarized, images)
    return tf.clip_by_value(images, 0.0, 1.0)


def augment_view(images, seed, config, flip=True):
    """Everything after the crop, per image: flip → colour jitter → greyscale → blur → solarise.

    Args:
        images: float32 [B, H, W, 3] in [0, 1] (already cropped and resized), static H and W.
        seed: stateless seed, shape [2].
        config: a `ViewConfig`.
        flip: whether to apply the random flip here (False when the crop did it).

    Returns:
        float32 [B, H, W, 3] in [0, 1].
    """
    # Channels first inside: XLA vectorises along the width instead of over 3 channels.
    images = _augment_cf(tf.transpose(images, [0, 3, 1, 2]), seed, config, flip)
    return tf.transpose(images, [0, 2, 3, 1])


def to_unit_float(images):
    """uint8 [0, 255] → float32 [0, 1]; float images are assumed in [0, 1] already."""
    if images.dtype == tf.uint8:
        return tf.cast(images, tf.float32) / 255.0
    return tf.cast(images, tf.float32)


def to_rgb(images):
    """Makes the channel axis 3: greyscale is replicated, an alpha channel dropped."""
    channels = images.shape[-1]
    if channels == 1:
        return tf.concat([images] * 3, axis=-1)
    if channels == 4:
        return images[..., :3]
    if channels != 3:
        raise ValueError(f"images must have 1, 3 or 4 channels. Received: shape={images.shape}")
    return images


def normalize(images, mean=IMAGENET_MEAN, std=IMAGENET_STD):
    """(x - mean) / std per channel, float32."""
    return (images - tf.constant(mean, tf.float32)) / tf.constant(std, tf.float32)


def _split_overrides(overrides):
    mean = overrides.pop("mean", None) or IMAGENET_MEAN
    std = overrides.pop("std", None) or IMAGENET_STD
    return mean, std, overrides


@tf.autograph.experimental.do_not_convert  # no Python control flow on tensors
def two_views(images, seed, preset="imagenet", image_size=None, **overrides):
    """Draws the two BYOL views of every image of a batch, each image with its own randomness.

    Args:
        images: [B, H, W, C] uint8 in [0, 255] or float in [0, 1]; C ∈ {1, 3, 4}.
        seed: stateless seed: Python int or int tensor of shape [] or [2]. Same seed, same views.
        preset: "imagenet" (paper) or "small" (32 px: no blur).
        image_size: output side; defaults to the input height.
        **overrides: `ViewConfig` fields (see `view_configs`), plus `mean` and `std`
            (normalisation; ImageNet's by default).

    Returns:
        `(view1, view2)`, float32 [B, image_size, image_size, 3], normalised.
    """
    mean, std, overrides = _split_overrides(dict(overrides))
    configs = view_configs(preset, **overrides)
    images = to_rgb(images)
    size = image_size or images.shape[1]
    if not isinstance(size, int) or size <= 0:
        raise ValueError(f"image_size must be a positive int. Received: image_size={image_size}")
    seeds = _split(as_seed(seed), 4)
    shape = tf.shape(images)
    batch = shape[0]
    heights = tf.fill([batch], tf.cast(shape[1], tf.float32))
    widths = tf.fill([batch], tf.cast(shape[2], tf.float32))
    scale = 1.0 / 255.0 if images.dtype == tf.uint8 else 1.0
    views = []
    for i, config in enumerate(configs):
        boxes = sample_crop_boxes(seeds[i], heights, widths, config.crop_area, config.crop_aspect)
        flip_u = uniform([batch], fold_in(seeds[i], 7))
        flip = flip_u < config.flip_prob
        crops = _crop_resize_cf(images, boxes, size, flip, config.resize_method)
        crops = tf.clip_by_value(crops * scale, 0.0, 1.0)
        view = tf.transpose(_augment_cf(crops, seeds[2 + i], config, flip=False), [0, 2, 3, 1])
        views.append(normalize(view, mean, std))
    return tuple(views)


@tf.autograph.experimental.do_not_convert  # no Python control flow on tensors
def augment_pair(crops1, crops2, seed, preset="imagenet", **overrides):
    """The two views from crops already taken (e.g. at JPEG decode time): flip onwards.

    Args:
        crops1: [B, S, S, C] uint8 or float in [0, 1], view 1's crops.
        crops2: same for view 2.
        seed: stateless seed, as in `two_views`.
        preset: "imagenet" or "small".
        **overrides: as in `two_views`.

    Returns:
        `(view1, view2)`, float32 [B, S, S, 3], normalised.
    """
    mean, std, overrides = _split_overrides(dict(overrides))
    configs = view_configs(preset, **overrides)
    seeds = _split(as_seed(seed), 2)
    views = []
    for crops, config, view_seed in zip((crops1, crops2), configs, tf.unstack(seeds), strict=True):
        view = augment_view(to_unit_float(to_rgb(crops)), view_seed, config, flip=True)
        views.append(normalize(view, mean, std))
    return tuple(views)


def compiled(fn=None):
    """`tf.function(fn, jit_compile=True)`; defaults to `two_views`."""
    return tf.function(fn or two_views, jit_compile=True)
