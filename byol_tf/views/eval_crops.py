"""Internal: the official linear evaluation's per-image inputs: random crops of whole images, centre
crops.

Both take one whole image of any size and follow the official order (deepmind-research
`byol/utils/dataset.py`, docs/algorithm.md §6): choose a window of the decoded image, cut it,
resize it with `tf.image.resize` bicubic *without* antialiasing, divide by 255 and clip to
[0, 1]; then (training) flip, and normalise.
"""

import tensorflow as tf

from byol_tf.views import image_ops, rng

_FLIP_TAG = 1  # fold_in tag of an image's flip draw (its crop uses the seed itself)


def _resize(image, size):
    """The official resize: bicubic without antialiasing, then (uint8 input) / 255, then the
    overshoot clipped to [0, 1]. Float input is taken as in [0, 1] already."""
    resized = tf.image.resize(image, [size, size], method="bicubic", antialias=False)
    return tf.clip_by_value(resized / 255.0 if image.dtype == tf.uint8 else resized, 0.0, 1.0)


def center_crop_window(height, width, crop_fraction) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """The official centre-crop window `(top, left, side)` of an image (int32 scalars).

    As `_decode_and_center_crop`: side = int(crop_fraction · min(h, w)) (truncated; 224/256
    of the short side at 224 px), offsets ((h - side) + 1) // 2 and ((w - side) + 1) // 2.

    Args:
        height: int32 scalar, image height.
        width: int32 scalar, image width.
        crop_fraction: share of the short side kept, in (0, 1].

    Returns:
        `(top, left, side)`, int32 scalars; side >= 1.
    """
    short = tf.cast(tf.minimum(height, width), tf.float32)
    side = tf.maximum(tf.cast(crop_fraction * short, tf.int32), 1)
    return ((height - side) + 1) // 2, ((width - side) + 1) // 2, side


def official_center_crop(image, size, crop_fraction) -> tf.Tensor:
    """The official evaluation crop: the centre window, then a non-antialiased bicubic resize.

    Args:
        image: [H, W, C] or [B, H, W, C] (one window for all), uint8 in [0, 255] or float in
            [0, 1].
        size: output side.
        crop_fraction: share of the short side kept (0.875: 224 of 256).

    Returns:
        float32 [..., size, size, C] in [0, 1].
    """
    shape = tf.shape(image)
    top, left, side = center_crop_window(shape[-3], shape[-2], crop_fraction)
    window = image[..., top : top + side, left : left + side, :]
    return _resize(window, size)


def random_crop_window(
    seed, height, width, area=(0.08, 1.0), aspect=(3 / 4, 4 / 3), sampler="clamped"
) -> tf.Tensor:
    """An integer random-resized-crop window `[top, left, h, w]` (int32 [4]) of a whole image.

    The box is `image_ops.sample_crop_boxes`'s (by default the official one draw clamped to
    the image, as pretraining's), rounded to whole pixels and kept inside the image, as the
    windows `byol_tf.data.decoding.decode_crops` decodes.
    """
    shape = tf.stack([height, width])
    box = image_ops.sample_crop_boxes(
        seed, tf.cast(height, tf.float32)[None], tf.cast(width, tf.float32)[None],
        area, aspect, sampler=sampler,
    )[0]  # fmt: skip
    hw = tf.maximum(tf.cast(tf.round(box[2:]), tf.int32), 1)
    top_left = tf.maximum(tf.minimum(tf.cast(tf.floor(box[:2]), tf.int32), shape - hw), 0)
    return tf.concat([top_left, hw], axis=0)


def random_crop(image, seed, size, sampler="clamped", flip_prob=0.5) -> tf.Tensor:
    """The official linear-evaluation training view of one whole image: a random-resized crop
    of the whole image (area U[0.08, 1], aspect log-U[3/4, 4/3]), resized bicubic without
    antialiasing to `size`, clipped to [0, 1], and a horizontal flip with `flip_prob`.

    Args:
        image: [H, W, C], any H and W, uint8 in [0, 255] or float in [0, 1].
        seed: stateless seed of this image, shape [2].
        size: output side.
        sampler: "clamped" (the official one draw) or "rejection".
        flip_prob: probability of the horizontal flip.

    Returns:
        float32 [size, size, C] in [0, 1].
    """
    shape = tf.shape(image)
    top, left, h, w = tf.unstack(random_crop_window(seed, shape[0], shape[1], sampler=sampler))
    crop = _resize(image[top : top + h, left : left + w], size)
    flip = rng.uniform([], rng.fold_in(seed, _FLIP_TAG)) < flip_prob
    return tf.cond(flip, lambda: crop[:, ::-1], lambda: crop)
