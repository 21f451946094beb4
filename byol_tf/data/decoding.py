"""Internal: image file decoding for the input pipelines, and the record of the image files a
source's pipelines skipped."""

import logging
import os
import re
import threading

import tensorflow as tf

from byol_tf.views import image_ops, rng


class SkippedFiles:
    """The image files skipped while reading one source: corrupt ones (`skip_corrupt`) and those
    of unsupported formats (`note_unsupported`), each with the times it was skipped.

    Each `byol_tf.data.sources.Source` owns one (`Source.skipped`), so the pipelines of two
    sources in one process keep their counts apart. It is filled from inside `tf.py_function`,
    on tf.data's threads, hence the lock.
    """

    def __init__(self) -> None:
        self._counts = {}  # path → times skipped (an ordered set with counts)
        self._lock = threading.Lock()

    def add(self, path) -> bool:
        """Counts one more skip of `path`; returns whether it is new to this record."""
        with self._lock:
            new = path not in self._counts
            self._counts[path] = self._counts.get(path, 0) + 1
            return new

    def paths(self) -> list:
        """Distinct paths skipped, in the order they were first skipped."""
        with self._lock:
            return list(self._counts)

    def count(self, path) -> int:
        """Times `path` was skipped (0 if never)."""
        with self._lock:
            return self._counts.get(path, 0)

    def __len__(self) -> int:
        with self._lock:
            return len(self._counts)

    def __contains__(self, path) -> bool:
        with self._lock:
            return path in self._counts


def note_unsupported(folder, paths, readable, skipped) -> None:
    """Records image files of formats TensorFlow cannot decode, skipped when `folder` is
    listed, and logs the new ones in one line (a format count and an example).

    Args:
        folder: the folder listed.
        paths: the skipped files in it (`.webp`, `.tiff`, ...).
        readable: the extensions that are read, named in the line.
        skipped: the `SkippedFiles` of the source that lists `folder`.
    """
    new = [path for path in paths if path not in skipped]
    for path in new:
        skipped.add(path)
    if not new:
        return
    formats = {}
    for path in new:
        extension = os.path.splitext(path)[1].lower()
        formats[extension] = formats.get(extension, 0) + 1
    counts = ", ".join(f"{n} {ext}" for ext, n in sorted(formats.items()))
    logging.warning(
        "byol_tf: skipping %d image file(s) of unsupported formats in %s (%s; e.g. %s); "
        "readable formats: %s (%d files skipped so far)",
        len(new),
        folder,
        counts,
        new[0],
        ", ".join(readable),
        len(skipped),
    )


def decode_full(data) -> tf.Tensor:
    """Decodes a whole image of any supported format (greyscale replicated, alpha dropped).

    Args:
        data: scalar string tensor, the encoded image.

    Returns:
        uint8 [H, W, 3].
    """
    image = tf.io.decode_image(data, channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    return image


@tf.autograph.experimental.do_not_convert  # explicit tf.cond only
def decode_crops(data, elem_seed, configs, size) -> tf.Tensor:
    """Two random-resized crops of one encoded image.

    JPEGs are decoded with `tf.image.decode_and_crop_jpeg`, so only the crop windows are decoded.

    Args:
        data: scalar string tensor, the encoded image.
        elem_seed: stateless seed of this image, shape [2].
        configs: the two `byol_tf.views.augment.ViewConfig` (crop_area, crop_aspect and
            resize_method are read).
        size: side of the square crops.

    Returns:
        float32 [2, size, size, 3] in [0, 1].
    """
    is_jpeg = tf.io.is_jpeg(data)
    shape = tf.cond(
        is_jpeg,
        lambda: tf.image.extract_jpeg_shape(data)[:2],
        lambda: tf.shape(decode_full(data))[:2],
    )
    crops = []
    for i, config in enumerate(configs):
        box = image_ops.sample_crop_boxes(
            rng.fold_in(elem_seed, i),
            tf.cast(shape[:1], tf.float32),
            tf.cast(shape[1:], tf.float32),
            config.crop_area,
            config.crop_aspect,
            sampler=config.crop_sampler,
        )[0]
        hw = tf.maximum(tf.cast(tf.round(box[2:]), tf.int32), 1)
        top_left = tf.minimum(tf.cast(tf.floor(box[:2]), tf.int32), shape - hw)
        window = tf.concat([top_left, hw], axis=0)
        crop = tf.cond(
            is_jpeg,
            lambda w=window: tf.image.decode_and_crop_jpeg(data, w, channels=3),
            lambda w=window: tf.image.crop_to_bounding_box(
                decode_full(data), w[0], w[1], w[2], w[3]
            ),
        )
        crops.append(tf.image.resize(crop, [size, size], method=config.resize_method) / 255.0)
    return tf.clip_by_value(tf.stack(crops), 0.0, 1.0)


def _note_skipped(path, skipped):
    """A `tf.py_function` that counts the corrupt file `path` in `skipped` (logging it the
    first time) and returns False, so that `filter` drops it."""

    def record(p):
        path = p.numpy().decode()
        if skipped.add(path):
            logging.warning("byol_tf: skipping corrupt image %s (%d so far)", path, len(skipped))
        return False

    return tf.py_function(record, [path], tf.bool)


def unreadable_file(error) -> str | None:
    """The file named by `decode_files`' assertion in an error message.

    Args:
        error: a `tf.errors.OpError` (or any exception).

    Returns:
        The path of the file that could not be decoded, or None.
    """
    match = re.search(r"\[Cannot decode image file\] \[(.*?)\]", str(error))
    return match.group(1) if match else None


def decode_files(paths, decode, skipped=None) -> tf.data.Dataset:
    """Reads and decodes image files, naming or skipping the unreadable ones.

    Each file is decoded inside its own one-element dataset with `ignore_errors`, so a corrupt
    file yields ok=False instead of an error that does not say which file it was.

    Args:
        paths: a `tf.data.Dataset` of `(path, index, label)`.
        decode: `decode(bytes, index)` → the decoded image tensor.
        skipped: a `SkippedFiles` to skip unreadable files into (counted there, and logged
            once each); None raises an error that names the file instead (see
            `unreadable_file`).

    Returns:
        A `tf.data.Dataset` of `(decode(bytes, index), index, label)`.
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

    decoded = paths.interleave(
        one, cycle_length=8, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
    )
    if skipped is not None:
        decoded = decoded.filter(
            lambda path, image, ok, *rest: tf.cond(
                ok, lambda: ok, lambda: _note_skipped(path, skipped)
            )
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
