"""tf.data pipelines: BYOL view pairs for pretraining and (image, label) batches for evaluation."""

import logging

import numpy as np
import tensorflow as tf

from byol_tf import augment, sources
from byol_tf.sources import SourceInfo  # noqa: F401  (re-exported: byol_tf.data.SourceInfo)

AUTOTUNE = tf.data.AUTOTUNE
_SHUFFLE_TAG, _CROP_TAG = 0x5348, 0x4352  # keep the shuffle and crop streams apart
_SKIPPED = []


def source_info(source, split="train", data_dir=None, manual_dir=None):
    """Size, classes and normalisation statistics of a source split.

    Args:
        source: "demo", a folder path, an `(x[, y])` tuple of arrays, or a tfds name.
        split: the split.
        data_dir: tensorflow-datasets data directory.
        manual_dir: tensorflow-datasets manual directory (imagenet2012).

    Returns:
        A frozen `SourceInfo(num_examples, num_classes, class_names, mean, std)`.
    """
    return sources.resolve(source, split, data_dir, manual_dir).info


def steps_per_epoch(source, batch_size, split="train", data_dir=None, manual_dir=None):
    """Full batches per epoch (`pretrain_dataset` drops the remainder)."""
    _check_positive(batch_size=batch_size)
    return source_info(source, split, data_dir, manual_dir).num_examples // batch_size


def skipped_files():
    """Paths of the corrupt images skipped so far in this process (`skip_corrupt=True`)."""
    return list(_SKIPPED)


def _check_positive(**values):
    for name, value in values.items():
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value <= 0:
            raise ValueError(f"{name} must be a positive int. Received: {name}={value!r}")


def _check_size(src, image_size, allow_upscale):
    shape = src.images.shape[1:3] if src.kind == "array" else (src.fixed_shape or (None,))[:2]
    if None in shape or allow_upscale or image_size <= 2 * min(shape):
        return
    raise ValueError(
        f"image_size={image_size} is more than twice the source images' size "
        f"({shape[0]}x{shape[1]}); pass allow_upscale=True if that is intended"
    )


def _seed_pair(seed, counter):
    return tf.stack([tf.constant(seed, tf.int64), tf.cast(counter, tf.int64)])


def _epochs(first_epoch, repeat):
    if repeat:
        return tf.data.Dataset.counter(first_epoch)
    return tf.data.Dataset.range(first_epoch, first_epoch + 1)


def _records(src, seed, offset, repeat, shuffle_buffer):
    """The shuffled record stream from element `offset` of the run on: indices or tfds dicts.

    Epoch e's order is seeded by (seed, e), so the stream from `offset` is the same whether the
    run was interrupted or not; the skip happens before any decoding.
    """
    n = src.info.num_examples
    first_epoch, skip = divmod(offset, n)
    if src.kind in ("array", "files"):

        def epoch_order(epoch):
            keys = augment.uniform([n], augment.fold_in(_seed_pair(seed, _SHUFFLE_TAG), epoch))
            return tf.data.Dataset.from_tensor_slices(tf.argsort(keys, stable=True))

        return _epochs(first_epoch, repeat).flat_map(epoch_order).skip(skip)
    import tensorflow_datasets as tfds

    records = src.builder.as_dataset(
        split=src.split,
        shuffle_files=False,
        decoders={src.image_key: tfds.decode.SkipDecoding()},
        read_config=tfds.ReadConfig(add_tfds_id=False, try_autocache=False),
    )

    def epoch_records(epoch):
        epoch_seed = augment.fold_in(_seed_pair(seed, _SHUFFLE_TAG), epoch)[0]
        return records.shuffle(min(shuffle_buffer, n), seed=epoch_seed)

    return _epochs(first_epoch, repeat).flat_map(epoch_records).skip(skip)


def _decode_full(data):
    """Any supported encoded image → uint8 [H, W, 3] (greyscale replicated, alpha dropped)."""
    image = tf.io.decode_image(data, channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    return image


def _decode_crops(data, elem_seed, configs, size):
    """Two random-resized crops of one encoded image → float32 [2, size, size, 3] in [0, 1].

    JPEGs are decoded with `tf.image.decode_and_crop_jpeg`, so only the crop windows are decoded.
    """
    is_jpeg = tf.io.is_jpeg(data)
    shape = tf.cond(
        is_jpeg,
        lambda: tf.image.extract_jpeg_shape(data)[:2],
        lambda: tf.shape(_decode_full(data))[:2],
    )
    crops = []
    for i, config in enumerate(configs):
        box = augment.sample_crop_boxes(
            augment.fold_in(elem_seed, i),
            tf.cast(shape[:1], tf.float32),
            tf.cast(shape[1:], tf.float32),
            config.crop_area,
            config.crop_aspect,
        )[0]
        hw = tf.maximum(tf.cast(tf.round(box[2:]), tf.int32), 1)
        top_left = tf.minimum(tf.cast(tf.floor(box[:2]), tf.int32), shape - hw)
        window = tf.concat([top_left, hw], axis=0)
        crop = tf.cond(
            is_jpeg,
            lambda w=window: tf.image.decode_and_crop_jpeg(data, w, channels=3),
            lambda w=window: tf.image.crop_to_bounding_box(
                _decode_full(data), w[0], w[1], w[2], w[3]
            ),
        )
        crops.append(tf.image.resize(crop, [size, size], method=config.resize_method) / 255.0)
    return tf.clip_by_value(tf.stack(crops), 0.0, 1.0)


def _note_skipped(path):
    def record(p):
        _SKIPPED.append(p.numpy().decode())
        logging.warning(
            "byol_tf: skipped corrupt image %s (%d so far)", _SKIPPED[-1], len(_SKIPPED)
        )
        return False

    return tf.py_function(record, [path], tf.bool)


def _decode_files(paths, decode, skip_corrupt):
    """Maps `(path, index, label)` to `(decode(bytes, index), index, label)`, naming or skipping
    unreadable files.

    Each file is decoded inside its own one-element dataset with `ignore_errors`, so a corrupt
    file yields ok=False instead of an error that does not say which file it was.
    """

    def one(path, *rest):
        good = tf.data.Dataset.from_tensors(path)
        good = good.map(lambda p: (decode(tf.io.read_file(p), rest[0]), True))
        good = good.ignore_errors()
        spec = good.element_spec[0]
        bad = tf.data.Dataset.from_tensors(
            (tf.zeros([d or 1 for d in spec.shape], spec.dtype), False)
        )
        return good.concatenate(bad).take(1).map(lambda image, ok: (path, image, ok, *rest))

    decoded = paths.interleave(one, cycle_length=8, num_parallel_calls=AUTOTUNE, deterministic=True)
    if skip_corrupt:
        decoded = decoded.filter(
            lambda path, image, ok, *rest: tf.cond(ok, lambda: ok, lambda: _note_skipped(path))
        )
    else:

        def check(path, image, ok, *rest):
            message = [
                "Cannot decode image file",
                path,
                "(corrupt or unsupported; skip_corrupt=True skips it)",
            ]
            with tf.control_dependencies([tf.debugging.Assert(ok, message, summarize=1)]):
                return (tf.identity(image), *rest)

        return decoded.map(check)
    return decoded.map(lambda path, image, ok, *rest: (image, *rest))


def _views_from_batches(batches, start_step, seed, augment_fn):
    """Adds the stateless per-step seed (seed, step) and applies the XLA augmentation per batch."""
    steps = tf.data.Dataset.counter(start_step)

    def views(step, images, labels):
        view1, view2 = augment_fn(images, _seed_pair(seed, step))
        return {"view1": view1, "view2": view2, "label": labels}

    return tf.data.Dataset.zip(steps, batches).map(
        lambda step, batch: views(step, *batch), num_parallel_calls=AUTOTUNE
    )


def _pair_batches(src, records, seed, batch_size, image_size, configs, skip_corrupt):
    """Batches of `(images or crop pairs, labels)` from the record stream of a source."""
    if src.kind == "array":
        images, labels = tf.constant(src.images), src.labels
        labels = tf.constant(
            labels if labels is not None else np.full(len(src.images), -1, np.int32)
        )
        batches = records.batch(batch_size, drop_remainder=True)
        return batches.map(
            lambda i: (tf.gather(images, i), tf.gather(labels, i)), num_parallel_calls=AUTOTUNE
        )

    def crops(data, index):
        return _decode_crops(
            data, augment.fold_in(_seed_pair(seed, _CROP_TAG), index), configs, image_size
        )

    if src.kind == "files":
        paths = tf.constant(src.paths)
        labels = tf.constant(
            src.labels if src.labels is not None else np.full(len(src.paths), -1, np.int32)
        )
        elements = records.map(lambda i, g: (tf.gather(paths, i), g, tf.gather(labels, i)))
        elements = _decode_files(elements, crops, skip_corrupt)
    else:
        decode = (lambda data, g: _decode_full(data)) if src.fixed_shape else crops
        label_key = src.label_key

        def tfds_element(g, record):
            label = tf.cast(record[label_key], tf.int32) if label_key else tf.constant(-1, tf.int32)
            return decode(record[src.image_key], g), g, label

        elements = records.map(tfds_element, num_parallel_calls=AUTOTUNE)
        if src.fixed_shape:
            elements = elements.map(
                lambda image, g, label: (tf.ensure_shape(image, src.fixed_shape), g, label)
            )
    elements = elements.map(lambda image, g, label: (image, label))
    return elements.batch(batch_size, drop_remainder=True, num_parallel_calls=AUTOTUNE)


def _finish(ds, seed):
    options = tf.data.Options()
    options.deterministic = seed is not None
    return ds.with_options(options).prefetch(AUTOTUNE)


def pretrain_dataset(
    source,
    batch_size,
    image_size,
    seed=0,
    *,
    split="train",
    data_dir=None,
    manual_dir=None,
    preset=None,
    augment_overrides=None,
    mean=None,
    std=None,
    with_labels=True,
    skip_corrupt=False,
    repeat=True,
    start_step=0,
    shuffle_buffer=10_000,
    allow_upscale=False,
):
    """A `tf.data.Dataset` of BYOL view pairs, ready for `BYOL.fit`.

    Elements are `{"view1", "view2": float32 [B, S, S, 3]}` plus `"label": int32 [B]` when the
    source has labels (-1 for unlabelled examples) and `with_labels`. Batches are augmented as a
    whole by one XLA-compiled function; batch k (counting from `start_step`) uses the stateless
    seed (seed, k) and epoch e is shuffled with (seed, e), so `start_step=k` resumes exactly.
    Fixed-size sources are cropped inside the XLA function; folders and variable-size tfds
    images are cropped at decode time (JPEG: only the crop windows are decoded).

    Args:
        source: "demo", a folder path, an `(x[, y])` tuple of arrays, or a tfds name.
        batch_size: batch size; the last partial batch of the stream is dropped.
        image_size: side of the square views.
        seed: int seed of shuffling and augmentation; None for a random, non-deterministic run.
        split: source split ("train", "test", "unlabelled" for stl10, tfds slices...).
        data_dir: tensorflow-datasets data directory.
        manual_dir: tensorflow-datasets manual download directory (imagenet2012).
        preset: "imagenet" or "small"; default "small" when image_size <= 64.
        augment_overrides: dict of `two_views` overrides (e.g. `{"view2_blur_prob": 0.0}`).
        mean: normalisation mean; default from the source (known table, else ImageNet's).
        std: normalisation std; same default.
        with_labels: include "label" when the source has labels.
        skip_corrupt: skip unreadable image files (see `skipped_files`) instead of failing.
        repeat: infinite stream of epochs (use `fit(steps_per_epoch=...)`) or one pass.
        start_step: first step of the stream, to resume a run.
        shuffle_buffer: shuffle buffer of tfds sources (others are fully permuted).
        allow_upscale: allow image_size above twice the size of fixed-size source images.

    Returns:
        A `tf.data.Dataset`.
    """
    _check_positive(batch_size=batch_size, image_size=image_size, shuffle_buffer=shuffle_buffer)
    if not isinstance(start_step, (int, np.integer)) or start_step < 0:
        raise ValueError(
            f"start_step must be a non-negative int. Received: start_step={start_step!r}"
        )
    src = sources.resolve(source, split, data_dir, manual_dir, mean, std)
    _check_size(src, image_size, allow_upscale)
    preset = preset or ("small" if image_size <= 64 else "imagenet")
    overrides = dict(augment_overrides or {}, mean=src.info.mean, std=src.info.std)
    run_seed = int(np.random.randint(2**31)) if seed is None else int(seed)
    records = _records(src, run_seed, start_step * batch_size, repeat, shuffle_buffer)
    if src.kind == "files":
        records = records.enumerate(start_step * batch_size).map(lambda g, i: (i, g))
    elif src.kind == "tfds":
        records = records.enumerate(start_step * batch_size)
    configs = augment.view_configs(
        preset, **{k: v for k, v in overrides.items() if k not in ("mean", "std")}
    )
    batches = _pair_batches(src, records, run_seed, batch_size, image_size, configs, skip_corrupt)
    precropped = src.kind == "files" or (src.kind == "tfds" and not src.fixed_shape)

    @tf.function(jit_compile=True)
    def augment_fn(images, batch_seed):
        if precropped:
            return augment.augment_pair(images[:, 0], images[:, 1], batch_seed, preset, **overrides)
        return augment.two_views(images, batch_seed, preset, image_size, **overrides)

    ds = _views_from_batches(batches, start_step, run_seed, augment_fn)
    if not (with_labels and src.info.num_classes):
        ds = ds.map(lambda e: {"view1": e["view1"], "view2": e["view2"]})
    return _finish(ds, seed)
