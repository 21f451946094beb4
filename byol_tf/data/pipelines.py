"""tf.data pipelines: BYOL view pairs for pretraining and (image, label) batches for evaluation."""

import functools
import warnings

import numpy as np
import tensorflow as tf

from byol_tf.core.batches import CROPS, LABEL, SEEDS, VIEW1, VIEW2
from byol_tf.data import sources
from byol_tf.data.source_kinds import SourceInfo
from byol_tf.views import augment, eval_crops, image_ops, rng
from byol_tf.views.device_augment import ViewAugmentation, check_augment_on

AUTOTUNE = tf.data.AUTOTUNE


def source_info(source) -> SourceInfo:
    """Size, classes and normalisation statistics of a source split.

    Args:
        source: a `Source`, or anything `byol_tf.data.source` takes (then its "train" split).

    Returns:
        A frozen `SourceInfo(num_examples, num_classes, class_names, mean, std)`.
    """
    return sources.source(source).info


def steps_per_epoch(source, batch_size) -> int:
    """Full batches per epoch (`pretrain_dataset` drops the remainder).

    Args:
        source: a `Source`, or anything `byol_tf.data.source` takes (then its "train" split).
        batch_size: the batch size.

    Returns:
        The number of full batches in one pass over the split.
    """
    _check_positive(batch_size=batch_size)
    return source_info(source).num_examples // batch_size


def _check_positive(**values):
    for name, value in values.items():
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value <= 0:
            raise ValueError(f"{name} must be a positive int. Received: {name}={value!r}")


def _check_start_step(start_step):
    if not isinstance(start_step, (int, np.integer)) or start_step < 0:
        raise ValueError(
            f"start_step must be a non-negative int. Received: start_step={start_step!r}"
        )


def _check_size(shape, image_size, allow_upscale):
    """Refuses views over twice the size of fixed-size images (`shape`: (H, W) or None)."""
    if shape is None or allow_upscale or image_size <= 2 * min(shape):
        return
    raise ValueError(
        f"image_size={image_size} is more than twice the source images' size "
        f"({shape[0]}x{shape[1]}); pass allow_upscale=True if that is intended"
    )


@functools.lru_cache(maxsize=32)
def _augment_function(preset, image_size, precropped, options, jit_compile, shape, dtype, device):
    """One cached augmentation per configuration and image shape, for any batch size: each is
    traced (and compiled by XLA) once per process. With `device` it only crops, and adds the
    seeds of the rest, which the train step does (`BYOL(augmentation=...)`)."""
    overrides = dict(options)

    def views(images, batch_seed):
        if precropped:
            return augment.augment_pair(images[:, 0], images[:, 1], batch_seed, preset, **overrides)
        return augment.two_views(images, batch_seed, preset, image_size, **overrides)

    def crops(images, batch_seed):
        if precropped:
            pairs = image_ops.to_uint8(images)
        else:
            pairs = augment.two_crops(images, batch_seed, preset, image_size, **overrides)
        return pairs, augment.view_seeds(batch_seed, tf.shape(images)[0])

    signature = [tf.TensorSpec((None, *shape), dtype), tf.TensorSpec([2], tf.int64)]
    return tf.function(
        crops if device else views, signature, jit_compile=jit_compile, autograph=False
    )


def _views_from_batches(batches, start_step, seed, augment_fn, device):
    """Adds the stateless per-step seed (seed, step) and applies the XLA augmentation per batch
    (with `device`, the crops and seeds of `augment_fn`)."""
    steps = tf.data.Dataset.counter(start_step)
    keys = (CROPS, SEEDS) if device else (VIEW1, VIEW2)

    def views(step, images, labels):
        first, second = augment_fn(images, rng.seed_pair(seed, step))
        return {keys[0]: first, keys[1]: second, LABEL: labels}

    return tf.data.Dataset.zip(steps, batches).map(
        lambda step, batch: views(step, *batch), num_parallel_calls=AUTOTUNE
    )


def _augment_settings(src, image_size, preset, augment_overrides):
    """The preset and the `two_views` overrides (with the source's mean and std) of a run."""
    preset = preset or augment.default_preset(image_size)
    return preset, dict(augment_overrides or {}, mean=src.info.mean, std=src.info.std)


def _finish(ds, seed):
    options = tf.data.Options()
    options.deterministic = seed is not None
    return ds.with_options(options).prefetch(AUTOTUNE)


def _warn_if_float_pixels_of_0_255(source):
    """Warns when an array source holds float images that look like [0, 255] pixels: floats
    are read as [0, 1] (uint8 as [0, 255]), so their views would clip to white."""
    if not isinstance(source, (tuple, list, np.ndarray)) or len(source) == 0:
        return
    images = source if isinstance(source, np.ndarray) else source[0]
    if not np.issubdtype(np.asarray(images[:1]).dtype, np.floating):
        return
    largest = float(np.max(np.asarray(images[:256], np.float32), initial=0.0))
    if largest > 2.0:  # [0, 1] pixels, with room for a resize's overshoot
        warnings.warn(
            f"pretrain_dataset: the float images of the source reach {largest:g}; float "
            "images are read as [0, 1] pixels (uint8 ones as [0, 255]), so these views would "
            "clip to white. Divide them by 255, or pass them as uint8.",
            UserWarning,
            stacklevel=3,
        )


def pretrain_dataset(
    source,
    batch_size,
    image_size,
    seed=0,
    *,
    preset=None,
    augment_overrides=None,
    with_labels=True,
    skip_corrupt=False,
    repeat=True,
    start_step=0,
    shuffle_buffer=10_000,
    allow_upscale=False,
    jit_compile=True,
    augment_on="host",
) -> tf.data.Dataset:
    """A `tf.data.Dataset` of BYOL view pairs, ready for `BYOL.fit`.

    Elements are `{"view1", "view2": float32 [B, S, S, 3]}` plus `"label": int32 [B]` when the
    source has labels (-1 for unlabelled examples) and `with_labels`. Batches are augmented as a
    whole by one XLA-compiled function; batch k (counting from `start_step`) uses the stateless
    seed (seed, k) and epoch e is shuffled with (seed, e), so `start_step=k` resumes exactly.
    Fixed-size sources are cropped inside the XLA function; folders and variable-size tfds
    images are cropped at decode time (JPEG: only the crop windows are decoded).

    With `augment_on="device"` the pipeline stops after the crops: elements are
    `{"crops": uint8 [B, 2, S, S, 3], "seeds": int64 [B, 2, 2]}` (plus "label"), the crops of
    both views and the per-image, per-view seeds of the rest (`byol_tf.views.augment.view_seeds`),
    which a `BYOL(augmentation=train_step_augmentation(...))` does in its train step. The views are
    those of host mode with the same seed, up to the crops' rounding to uint8.

    Args:
        source: a `Source` (`byol_tf.data.source(...)`, which sets the split, e.g.
            "unlabelled" for stl10 or a tfds slice, the data_dir and the normalisation mean and
            std), or anything `byol_tf.data.source` takes: then its "train" split.
        batch_size: batch size; the last partial batch of the stream is dropped.
        image_size: side of the square views.
        seed: int seed of shuffling and augmentation; None for a random, non-deterministic run.
        preset: "imagenet" or "small"; default `augment.default_preset(image_size)`: "small"
            up to 64 px.
        augment_overrides: dict of `two_views` overrides (e.g. `{"view2_blur_prob": 0.0}`).
        with_labels: include "label" when the source has labels.
        skip_corrupt: skip unreadable image files instead of failing; they are counted in the
            source's record (`Source.skipped_files()`).
        repeat: infinite stream of epochs (use `fit(steps_per_epoch=...)`) or one pass.
        start_step: first step of the stream, to resume a run.
        shuffle_buffer: shuffle buffer of tfds sources (others are fully permuted).
        allow_upscale: allow image_size above twice the size of fixed-size source images.
        jit_compile: compile the augmentation with XLA (same output; False only saves the
            compile time in tests and debugging).
        augment_on: "host" (the views, augmented here) or "device" (crops and seeds; the
            train step augments: docs/algorithm.md §5).

    Returns:
        A `tf.data.Dataset`.

    Raises:
        ValueError: for a bad argument, naming it.
    """
    _check_positive(batch_size=batch_size, image_size=image_size, shuffle_buffer=shuffle_buffer)
    _check_start_step(start_step)
    check_augment_on(augment_on)
    _warn_if_float_pixels_of_0_255(source)
    src = sources.source(source)
    _check_size(src.image_shape, image_size, allow_upscale)
    preset, overrides = _augment_settings(src, image_size, preset, augment_overrides)
    run_seed = int(np.random.randint(2**31)) if seed is None else int(seed)
    records = src.records(run_seed, start_step * batch_size, repeat, shuffle_buffer)
    configs = augment.view_configs(
        preset, **{k: v for k, v in overrides.items() if k not in ("mean", "std")}
    )
    batches = src.pair_batches(records, run_seed, batch_size, image_size, configs, skip_corrupt)
    precropped, options = src.crops_at_decode, tuple(sorted(overrides.items()))
    spec, device = batches.element_spec[0], augment_on == "device"
    augment_fn = _augment_function(
        preset, image_size, precropped, options, jit_compile, tuple(spec.shape[1:]), spec.dtype,
        device,
    )  # fmt: skip
    ds = _views_from_batches(batches, start_step, run_seed, augment_fn, device)
    if not (with_labels and src.info.num_classes):
        ds = ds.map(lambda e: {key: value for key, value in e.items() if key != LABEL})
    return _finish(ds, seed)


def train_step_augmentation(
    source, image_size, *, preset=None, augment_overrides=None
) -> ViewAugmentation:
    """The train-step half of `pretrain_dataset(..., augment_on="device")`, for `BYOL`.

    Pass the same source, image size and augmentation options as to `pretrain_dataset`:
    `BYOL(encoder, augmentation=train_step_augmentation(source, image_size, ...))`.

    Args:
        source: the `pretrain_dataset`'s source (its normalisation mean and std are read).
        image_size: side of the square views.
        preset: "imagenet" or "small"; default `augment.default_preset(image_size)`.
        augment_overrides: dict of `two_views` overrides.

    Returns:
        A `byol_tf.views.device_augment.ViewAugmentation`.

    Raises:
        ValueError: for a bad argument, naming it.
    """
    _check_positive(image_size=image_size)
    src = sources.source(source)
    preset, overrides = _augment_settings(src, image_size, preset, augment_overrides)
    mean, std = overrides.pop("mean"), overrides.pop("std")
    return ViewAugmentation(preset, overrides, mean, std)


def eval_dataset(
    source,
    batch_size,
    image_size,
    *,
    crop_fraction=None,
    skip_corrupt=False,
    max_examples=None,
    official_crop=False,
) -> tf.data.Dataset:
    """`(image, label)` batches for linear / kNN evaluation: no augmentation, no shuffling.

    Each image is resized (bicubic, antialiased) so that its short side is
    `image_size / crop_fraction` and centre cropped (docs/algorithm.md §5: 256 → 224 for
    ImageNet); with `official_crop`, the official order instead: the centre window of
    `crop_fraction` of the short side, then a bicubic resize without antialiasing
    (`byol_tf.views.eval_crops.official_center_crop`). The last partial batch is kept.

    Args:
        source: a labelled `Source` (`byol_tf.data.source(what, "test")` for a test split;
            its mean and std normalise the images), or anything `byol_tf.data.source` takes:
            then its "train" split.
        batch_size: batch size.
        image_size: output side.
        crop_fraction: default `image_ops.default_crop_fraction(image_size)`: 0.875 above
            64 px, else 1.0 (whole image).
        skip_corrupt: skip unreadable image files instead of failing (counted in
            `Source.skipped_files()`).
        max_examples: at most this many examples, spread evenly over the split (arrays and
            folders: every (N / max_examples)-th, so a class-ordered folder keeps every class;
            tfds splits, shuffled when prepared: the first); None for all.
        official_crop: crop, then resize without antialiasing, as the official code's
            evaluation (`linear_official`); False: resize, then crop (the other protocols).

    Returns:
        A `tf.data.Dataset` of `(float32 [B, S, S, 3] normalised, int32 [B])`.

    Raises:
        ValueError: when the source has no labels, or for a bad argument.
    """
    _check_positive(batch_size=batch_size, image_size=image_size)
    src = sources.source(source)
    if not src.info.num_classes:
        raise ValueError(
            f"eval_dataset needs labels; source {src.name!r} (split {src.split!r}) has none"
        )
    fraction = crop_fraction or image_ops.default_crop_fraction(image_size)
    if not 0 < fraction <= 1:
        raise ValueError(
            f"crop_fraction must be in (0, 1]. Received: crop_fraction={crop_fraction}"
        )

    def prepare(image):
        image = image_ops.to_rgb(image)
        if official_crop:
            image = eval_crops.official_center_crop(image, image_size, fraction)
            return image_ops.normalize(image, src.info.mean, src.info.std)
        scale = 255.0 if image.dtype == tf.uint8 else 1.0
        image = image_ops.resize_center_crop(image, image_size, fraction) / scale
        return image_ops.normalize(tf.clip_by_value(image, 0.0, 1.0), src.info.mean, src.info.std)

    if max_examples is not None:
        _check_positive(max_examples=max_examples)
    batches = src.eval_batches(prepare, batch_size, skip_corrupt, max_examples=max_examples)
    return batches.prefetch(AUTOTUNE)


def whole_images(source, *, skip_corrupt=False) -> tuple[tf.data.Dataset, SourceInfo]:
    """The labelled examples of a split one by one, whole: the source of random crops.

    Nothing is resized: the linear evaluation's training crops are drawn from the whole
    decoded image (`byol_tf.views.eval_crops.random_crop`), as the official code's.

    Args:
        source: a labelled `Source` (its mean and std are recorded in `info`), or anything
            `byol_tf.data.source` takes: then its "train" split.
        skip_corrupt: skip unreadable image files instead of failing (counted in
            `Source.skipped_files()`).

    Returns:
        `(dataset, info)`: an unbatched `tf.data.Dataset` of `(image [H, W, 3], int32 label)`
        in the split's order (uint8 in [0, 255] or float32 in [0, 1]; H and W may vary from
        image to image), and the split's `SourceInfo` (its mean and std normalise the crops).

    Raises:
        ValueError: when the source has no labels.
    """
    src = sources.source(source)
    if not src.info.num_classes:
        raise ValueError(
            f"whole_images needs labels; source {src.name!r} (split {src.split!r}) has none"
        )
    # One image per batch: images of different sizes cannot share one.
    batches = src.eval_batches(image_ops.to_rgb, 1, skip_corrupt)
    return batches.unbatch().prefetch(AUTOTUNE), src.info
