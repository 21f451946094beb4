"""BYOL's two view distributions T and T' (paper Table 6) as batched, seeded, XLA-compilable ops."""

import dataclasses

import tensorflow as tf

from byol_tf import image_ops, rng
from byol_tf.image_ops import IMAGENET_MEAN, IMAGENET_STD, SMALL_IMAGE_SIZE

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
        crop_sampler: "rejection" (redraw until a crop fits, as torchvision) or "clamped"
            (the official code's single draw clamped to the image; see
            `image_ops.sample_crop_boxes`).
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

    Raises:
        ValueError: for a value out of its range, naming the option and the range expected.
    """

    crop_area: tuple = (0.08, 1.0)
    crop_aspect: tuple = (3 / 4, 4 / 3)
    resize_method: str = "bicubic"
    crop_sampler: str = "rejection"
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
        if self.crop_sampler not in image_ops.CROP_SAMPLERS:
            fail("crop_sampler", " or ".join(repr(s) for s in image_ops.CROP_SAMPLERS))


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


def default_preset(image_size):
    """The preset for views of a given size.

    Args:
        image_size: side of the views.

    Returns:
        "small" (no blur) up to `SMALL_IMAGE_SIZE` px, else "imagenet".
    """
    return "small" if image_size <= SMALL_IMAGE_SIZE else "imagenet"


def _blur_radius(side, config):
    return max(int(side * config.blur_kernel_fraction) // 2, 1)


def _select(mask, a, b):
    """Per-image choice; mask is bool [B]."""
    return tf.where(mask[:, None, None, None], a, b)


def _augment_cf(images, seed, config, flip):
    """augment_view on channels-first float32 [B, 3, H, W] in [0, 1]; returns the same layout."""
    seeds = rng.split(rng.as_seed(seed), 3)
    batch = tf.shape(images)[0]
    u = rng.uniform([batch, 5], seeds[0])
    if flip and config.flip_prob > 0:
        images = _select(u[:, 0] < config.flip_prob, images[..., ::-1], images)
    if config.jitter_prob > 0:
        images = image_ops.color_jitter(images, seeds[1], config)
    if config.greyscale_prob > 0:
        images = _select(u[:, 1] < config.greyscale_prob, image_ops.greyscale(images), images)
    if config.blur_prob > 0:
        low, high = config.blur_sigma
        sigma = low + (high - low) * rng.uniform([batch], seeds[2])
        blurred = image_ops.gaussian_blur(images, sigma, _blur_radius(images.shape[2], config))
        images = _select(u[:, 2] < config.blur_prob, blurred, images)
    if config.solarize_prob > 0:
        solarized = image_ops.solarize(images, config.solarize_threshold)
        images = _select(u[:, 3] < config.solarize_prob, solarized, images)
    return tf.clip_by_value(images, 0.0, 1.0)


def _crop_flip_cf(images, seed, size, config):
    """Random-resized crop and flip of each image ([B, H, W, C], static H and W) by `config`:
    float32 [B, C, size, size] in the input's value range (bicubic may overshoot it)."""
    shape = tf.shape(images)
    batch = shape[0]
    heights = tf.fill([batch], tf.cast(shape[1], tf.float32))
    widths = tf.fill([batch], tf.cast(shape[2], tf.float32))
    boxes = image_ops.sample_crop_boxes(
        seed, heights, widths, config.crop_area, config.crop_aspect, sampler=config.crop_sampler
    )
    flip = rng.uniform([batch], rng.fold_in(seed, 7)) < config.flip_prob
    return image_ops.crop_resize_channels_first(images, boxes, size, flip, config.resize_method)


@tf.autograph.experimental.do_not_convert  # no Python control flow on tensors
def crop_and_flip(
    images,
    seed,
    image_size=None,
    *,
    crop_area=(0.08, 1.0),
    crop_aspect=(3 / 4, 4 / 3),
    flip_prob=0.5,
    crop_sampler="clamped",
    resize_method="bicubic",
):
    """Random-resized crop and horizontal flip of every image: the training input of the linear
    and fine-tuning evaluations (docs/algorithm.md §6).

    Each image gets its own crop (area ∈ U[crop_area] of the image, width / height log-uniform
    in `crop_aspect`, by `image_ops.sample_crop_boxes`), resized to `image_size`, and its own
    flip. The defaults are the official code's training crop of linear evaluation (one draw
    clamped to the image, bicubic resize, flip with probability 0.5). The output keeps the
    input's value range: bicubic overshoot is clipped per channel to the [min, max] that
    channel spans in the batch (the official code clips to [0, 1]; for normalised images of a
    batch that reaches both ends, this is the same clip).

    Args:
        images: [B, H, W, C] with static H and W, any real dtype (e.g. normalised float32).
        seed: stateless seed: Python int or int tensor of shape [] or [2]. Same seed, same crops.
        image_size: output side; defaults to the input height.
        crop_area: (min, max) area fraction, 0 < min <= max <= 1.
        crop_aspect: (min, max) width / height, 0 < min <= max.
        flip_prob: probability of a horizontal flip, in [0, 1].
        crop_sampler: "clamped" (the official code's single draw) or "rejection".
        resize_method: "bicubic" or "bilinear".

    Returns:
        float32 [B, image_size, image_size, C].

    Raises:
        ValueError: for an option out of its range (naming it), a bad `image_size`, or images
            whose height or width is not static.
    """
    config = ViewConfig(
        crop_area=tuple(crop_area),
        crop_aspect=tuple(crop_aspect),
        flip_prob=flip_prob,
        crop_sampler=crop_sampler,
        resize_method=resize_method,
    )
    images = tf.convert_to_tensor(images)
    if images.shape.rank != 4 or images.shape[1] is None or images.shape[2] is None:
        raise ValueError(
            f"images must be [B, H, W, C] with static H and W. Received: shape={images.shape}"
        )
    size = image_size or images.shape[1]
    if not isinstance(size, int) or isinstance(size, bool) or size <= 0:
        raise ValueError(f"image_size must be a positive int. Received: image_size={image_size}")
    crops = _crop_flip_cf(images, rng.as_seed(seed), size, config)
    values = tf.cast(images, tf.float32)
    low = tf.reduce_min(values, axis=[0, 1, 2])[:, None, None]
    high = tf.reduce_max(values, axis=[0, 1, 2])[:, None, None]
    return tf.transpose(tf.clip_by_value(crops, low, high), [0, 2, 3, 1])


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


def _configs_and_stats(preset, overrides):
    """The view configs of `preset` with `overrides`, and the normalisation mean and std."""
    overrides = dict(overrides)
    mean = overrides.pop("mean", None) or IMAGENET_MEAN
    std = overrides.pop("std", None) or IMAGENET_STD
    return view_configs(preset, **overrides), mean, std


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

    Raises:
        ValueError: for an unknown preset or option, a value out of range, or a bad image_size.
    """
    configs, mean, std = _configs_and_stats(preset, overrides)
    images = image_ops.to_rgb(images)
    size = image_size or images.shape[1]
    if not isinstance(size, int) or size <= 0:
        raise ValueError(f"image_size must be a positive int. Received: image_size={image_size}")
    seeds = rng.split(rng.as_seed(seed), 4)
    scale = 1.0 / 255.0 if images.dtype == tf.uint8 else 1.0
    views = []
    for i, config in enumerate(configs):
        crops = _crop_flip_cf(images, seeds[i], size, config)
        crops = tf.clip_by_value(crops * scale, 0.0, 1.0)
        view = tf.transpose(_augment_cf(crops, seeds[2 + i], config, flip=False), [0, 2, 3, 1])
        views.append(image_ops.normalize(view, mean, std))
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

    Raises:
        ValueError: for an unknown preset or option, or a value out of range.
    """
    configs, mean, std = _configs_and_stats(preset, overrides)
    seeds = rng.split(rng.as_seed(seed), 2)
    views = []
    for crops, config, view_seed in zip((crops1, crops2), configs, tf.unstack(seeds), strict=True):
        crops = image_ops.to_unit_float(image_ops.to_rgb(crops))
        view = augment_view(crops, view_seed, config, flip=True)
        views.append(image_ops.normalize(view, mean, std))
    return tuple(views)
