"""BYOL's two view distributions T and T' (paper Table 6) as batched, seeded, XLA-compilable ops."""

import tensorflow as tf

# The view distributions are data (byol_tf.settings.view_presets); their names stay importable
# from here.
from byol_tf.settings.view_presets import PRESETS, ViewConfig, default_preset, view_configs  # noqa: F401
from byol_tf.views import image_ops, rng
from byol_tf.views.image_ops import IMAGENET_MEAN, IMAGENET_STD


def _blur_radius(side, config):
    return max(int(side * config.blur_kernel_fraction) // 2, 1)


def _select(mask, a, b):
    """Per-image choice; mask is bool [B]."""
    return tf.where(mask[:, None, None, None], a, b)


# After the crop, each image draws one uniform number per decision from its own seed, by index.
_FLIP, _GREYSCALE, _BLUR, _SOLARIZE, _SIGMA = range(5)
_AUGMENT_TAG = 2  # fold_in tag of a batch seed's per-image seeds (0 and 1 seed the crops)


def view_seeds(seed, batch) -> tf.Tensor:
    """The per-image, per-view seeds of everything after the crop.

    Image i's seeds depend on the batch seed and i alone, so its flip, jitter, greyscale, blur
    and solarisation do not depend on the other images of the batch, nor on which replica
    augments it (`augment_on="device"` ships these seeds with the crops).

    Args:
        seed: the batch's stateless seed: Python int or int tensor of shape [] or [2].
        batch: number of images, an int or a scalar int tensor.

    Returns:
        int64 [batch, 2, 2]: `[:, 0]` are view 1's per-image seeds, `[:, 1]` view 2's.
    """
    base = rng.fold_in(rng.as_seed(seed), _AUGMENT_TAG)
    images = rng.fold_in(base, tf.range(batch))
    return tf.stack([rng.fold_in(images, view) for view in range(2)], axis=1)


def _per_image_seeds(seed, batch):
    """`seed` as per-image seeds [B, 2]: kept when it is [B, 2], else derived per image."""
    if not isinstance(seed, int) and tf.convert_to_tensor(seed).shape.rank == 2:
        return tf.cast(seed, tf.int64)
    return rng.fold_in(rng.as_seed(seed), tf.range(batch))


def _flips(seeds, config):
    """The per-image flip decisions (bool [B]) that `_augment_cf` draws from `seeds` [B, 2]."""
    return rng.uniform_per_seed(seeds, [5])[:, _FLIP] < config.flip_prob


def _augment_cf(images, seeds, config, flip):
    """augment_view on channels-first float32 [B, 3, H, W] in [0, 1] with per-image seeds
    [B, 2]; returns the same layout."""
    u = rng.uniform_per_seed(seeds, [5])
    if flip and config.flip_prob > 0:
        images = _select(u[:, _FLIP] < config.flip_prob, images[..., ::-1], images)
    if config.jitter_prob > 0:
        images = image_ops.color_jitter(images, rng.fold_in(seeds, 1), config)
    if config.greyscale_prob > 0:
        grey = image_ops.greyscale(images)
        images = _select(u[:, _GREYSCALE] < config.greyscale_prob, grey, images)
    if config.blur_prob > 0:
        low, high = config.blur_sigma
        sigma = low + (high - low) * u[:, _SIGMA]
        radius = _blur_radius(images.shape[2], config)
        blurred = image_ops.gaussian_blur(images, sigma, radius, config.blur_padding)
        images = _select(u[:, _BLUR] < config.blur_prob, blurred, images)
    if config.solarize_prob > 0:
        solarized = image_ops.solarize(images, config.solarize_threshold)
        images = _select(u[:, _SOLARIZE] < config.solarize_prob, solarized, images)
    return tf.clip_by_value(images, 0.0, 1.0)


def _crop_cf(images, seed, size, config, flip):
    """Random-resized crop of each image ([B, H, W, C], static H and W) by `config`, mirrored
    where `flip` (bool [B], or None): float32 [B, C, size, size] in the input's value range
    (bicubic may overshoot it)."""
    shape = tf.shape(images)
    batch = shape[0]
    heights = tf.fill([batch], tf.cast(shape[1], tf.float32))
    widths = tf.fill([batch], tf.cast(shape[2], tf.float32))
    boxes = image_ops.sample_crop_boxes(
        seed, heights, widths, config.crop_area, config.crop_aspect, sampler=config.crop_sampler
    )
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
) -> tf.Tensor:
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
    size = _output_size(image_size, images)
    seed = rng.as_seed(seed)
    flip = rng.uniform([tf.shape(images)[0]], rng.fold_in(seed, 7)) < config.flip_prob
    crops = _crop_cf(images, seed, size, config, flip)
    values = tf.cast(images, tf.float32)
    low = tf.reduce_min(values, axis=[0, 1, 2])[:, None, None]
    high = tf.reduce_max(values, axis=[0, 1, 2])[:, None, None]
    return tf.transpose(tf.clip_by_value(crops, low, high), [0, 2, 3, 1])


def augment_view(images, seed, config, flip=True) -> tf.Tensor:
    """Everything after the crop, per image: flip → colour jitter → greyscale → blur → solarise.

    Args:
        images: float32 [B, H, W, 3] in [0, 1] (already cropped and resized), static H and W.
        seed: per-image seeds, int [B, 2] (image i's draws depend on `seed[i]` only), or one
            stateless seed (Python int, or int tensor of shape [] or [2]) that per-image seeds
            are derived from.
        config: a `ViewConfig`.
        flip: whether to apply the random flip here (False when the crop did it).

    Returns:
        float32 [B, H, W, 3] in [0, 1].
    """
    seeds = _per_image_seeds(seed, tf.shape(images)[0])
    # Channels first inside: XLA vectorises along the width instead of over 3 channels.
    images = _augment_cf(tf.transpose(images, [0, 3, 1, 2]), seeds, config, flip)
    return tf.transpose(images, [0, 2, 3, 1])


def _configs_and_stats(preset, overrides):
    """The view configs of `preset` with `overrides`, and the normalisation mean and std."""
    overrides = dict(overrides)
    mean = overrides.pop("mean", None) or IMAGENET_MEAN
    std = overrides.pop("std", None) or IMAGENET_STD
    return view_configs(preset, **overrides), mean, std


def _crop_setup(images, seed, preset, image_size, overrides):
    """What `two_views` and `two_crops` draw their crops from, so that both draw the same ones.

    Returns:
        `(configs, mean, std, rgb_images, size, crop_seeds, scale)`: `crop_seeds` one seed per
        view; `scale` brings the images to [0, 1].
    """
    configs, mean, std = _configs_and_stats(preset, overrides)
    images = image_ops.to_rgb(images)
    size = _output_size(image_size, images)
    crop_seeds = rng.split(rng.as_seed(seed), 2)
    scale = 1.0 / 255.0 if images.dtype == tf.uint8 else 1.0
    return configs, mean, std, images, size, crop_seeds, scale


def _output_size(image_size, images):
    """`image_size`, by default the images' height, checked to be a positive int."""
    size = image_size or images.shape[1]
    if not isinstance(size, int) or isinstance(size, bool) or size <= 0:
        raise ValueError(f"image_size must be a positive int. Received: image_size={image_size}")
    return size


@tf.autograph.experimental.do_not_convert  # no Python control flow on tensors
def two_views(
    images, seed, preset="imagenet", image_size=None, **overrides
) -> tuple[tf.Tensor, tf.Tensor]:
    """Draws the two BYOL views of every image of a batch, each image with its own randomness.

    The crops are drawn from `seed`; everything after them from `view_seeds(seed, B)`, so the
    views equal `augment_crops(two_crops(images, seed, ...), view_seeds(seed, B), ...)` up to
    the crops' rounding to uint8.

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
    configs, mean, std, images, size, crop_seeds, scale = _crop_setup(
        images, seed, preset, image_size, overrides
    )
    seeds = view_seeds(seed, tf.shape(images)[0])
    views = []
    for i, config in enumerate(configs):
        # The flip `augment_view` would draw, done by the resize instead (it costs nothing there).
        flip = _flips(seeds[:, i], config)
        crops = tf.clip_by_value(_crop_cf(images, crop_seeds[i], size, config, flip) * scale, 0, 1)
        view = tf.transpose(_augment_cf(crops, seeds[:, i], config, flip=False), [0, 2, 3, 1])
        views.append(image_ops.normalize(view, mean, std))
    return tuple(views)


@tf.autograph.experimental.do_not_convert  # no Python control flow on tensors
def two_crops(images, seed, preset="imagenet", image_size=None, **overrides) -> tf.Tensor:
    """The random-resized crops of both views, not flipped, as uint8: the host's share of the
    work when the rest of the augmentation runs on the device (`augment_crops`).

    The crops are those of `two_views` with the same seed, before its flip.

    Args:
        images: [B, H, W, C] uint8 in [0, 255] or float in [0, 1]; C ∈ {1, 3, 4}; static H, W.
        seed: the batch's stateless seed, as in `two_views`.
        preset: "imagenet" or "small".
        image_size: output side; defaults to the input height.
        **overrides: as in `two_views` (`mean` and `std` are not used here).

    Returns:
        uint8 [B, 2, image_size, image_size, 3]: `[:, 0]` view 1's crops, `[:, 1]` view 2's.

    Raises:
        ValueError: for an unknown preset or option, a value out of range, or a bad image_size.
    """
    configs, _, _, images, size, crop_seeds, scale = _crop_setup(
        images, seed, preset, image_size, overrides
    )
    crops = [_crop_cf(images, crop_seeds[i], size, c, None) for i, c in enumerate(configs)]
    crops = tf.transpose(tf.stack(crops, axis=1), [0, 1, 3, 4, 2])  # [B, 2, S, S, C]
    return image_ops.to_uint8(crops * scale)


def _views_from_crops(crops, seeds, configs, mean, std):
    """Both normalised views from the crops of each view ([B, S, S, C] each) and seeds [B, 2, 2]."""
    views = []
    for i, config in enumerate(configs):
        view_crops = image_ops.to_unit_float(image_ops.to_rgb(crops[i]))
        view = augment_view(view_crops, seeds[:, i], config, flip=True)
        views.append(image_ops.normalize(view, mean, std))
    return tuple(views)


@tf.autograph.experimental.do_not_convert  # no Python control flow on tensors
def augment_crops(crops, seeds, preset="imagenet", **overrides) -> tuple[tf.Tensor, tf.Tensor]:
    """The two views from crop pairs and their per-image seeds: flip onwards, then normalised.

    What `BYOL` runs inside its train step with `augment_on="device"`
    (`byol_tf.views.device_augment.ViewAugmentation`). Image i's views depend on `crops[i]` and
    `seeds[i]` alone, so each replica can augment its own shard of the batch.

    Args:
        crops: [B, 2, S, S, C] uint8 in [0, 255] or float in [0, 1] (`two_crops`, or crops
            taken at decode time), static S.
        seeds: int [B, 2, 2], per image and view (`view_seeds`).
        preset: "imagenet" or "small".
        **overrides: as in `two_views`.

    Returns:
        `(view1, view2)`, float32 [B, S, S, 3], normalised.

    Raises:
        ValueError: for crops or seeds of another shape, an unknown preset or option, or a
            value out of range.
    """
    configs, mean, std = _configs_and_stats(preset, overrides)
    crops, seeds = tf.convert_to_tensor(crops), tf.convert_to_tensor(seeds)
    if crops.shape.rank != 5 or crops.shape[1] != 2 or seeds.shape[1:] != (2, 2):
        raise ValueError(
            "augment_crops takes crop pairs [B, 2, S, S, C] and seeds [B, 2, 2]. Received: "
            f"crops.shape={crops.shape}, seeds.shape={seeds.shape}"
        )
    return _views_from_crops((crops[:, 0], crops[:, 1]), seeds, configs, mean, std)


@tf.autograph.experimental.do_not_convert  # no Python control flow on tensors
def augment_pair(
    crops1, crops2, seed, preset="imagenet", **overrides
) -> tuple[tf.Tensor, tf.Tensor]:
    """The two views from crops already taken (e.g. at JPEG decode time): flip onwards.

    Equals `augment_crops` with `view_seeds(seed, B)`.

    Args:
        crops1: [B, S, S, C] uint8 or float in [0, 1], view 1's crops.
        crops2: same for view 2.
        seed: the batch's stateless seed, as in `two_views`.
        preset: "imagenet" or "small".
        **overrides: as in `two_views`.

    Returns:
        `(view1, view2)`, float32 [B, S, S, 3], normalised.

    Raises:
        ValueError: for an unknown preset or option, or a value out of range.
    """
    configs, mean, std = _configs_and_stats(preset, overrides)
    seeds = view_seeds(seed, tf.shape(crops1)[0])
    return _views_from_crops((crops1, crops2), seeds, configs, mean, std)
