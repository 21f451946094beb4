"""Data sources for byol_tf.data (tfds, image folders, NumPy arrays, the demo set) and decoding."""

import dataclasses
import difflib
import logging
import os
import re

import numpy as np
import tensorflow as tf

from byol_tf import image_ops, rng
from byol_tf.image_ops import IMAGENET_MEAN, IMAGENET_STD

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")
DEMO_FILE = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "data_files", "fashion_mnist_demo.npz"
)
DEMO_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
_SKIPPED = {}  # path → times skipped (an ordered set with counts)
# Channel mean / std of the training split, in [0, 1] units.
KNOWN_STATS = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "stl10": ((0.4467, 0.4398, 0.4066), (0.2603, 0.2566, 0.2713)),
    "imagenet2012": (IMAGENET_MEAN, IMAGENET_STD),
    "demo": ((0.2860,) * 3, (0.3530,) * 3),
}


@dataclasses.dataclass(frozen=True)
class SourceInfo:
    """What training code needs to know about a source split.

    Attributes:
        num_examples: number of examples in the split.
        num_classes: number of classes, or None when unlabelled.
        class_names: class names in label order, or None.
        mean: per-channel mean used for normalisation.
        std: per-channel standard deviation used for normalisation.
    """

    num_examples: int
    num_classes: int | None
    class_names: tuple | None
    mean: tuple
    std: tuple


@dataclasses.dataclass(frozen=True)
class Source:
    """A resolved source split. `kind` is "array", "files" or "tfds".

    "array": `images` uint8/float [N, H, W, C] and `labels` (or None), in memory.
    "files": `paths` (str array) and `labels` (or None), decoded on the fly.
    "tfds": a `builder` read with `split`, `image_key` and `label_key`; `fixed_shape` is the
    image shape when all images share it, else None.
    """

    kind: str
    info: SourceInfo
    images: np.ndarray | None = None
    labels: np.ndarray | None = None
    paths: np.ndarray | None = None
    builder: object = None
    split: str = "train"
    image_key: str = "image"
    label_key: str | None = None
    fixed_shape: tuple | None = None


def _stats(name, mean, std):
    known_mean, known_std = KNOWN_STATS.get(name, (IMAGENET_MEAN, IMAGENET_STD))
    return tuple(mean or known_mean), tuple(std or known_std)


def _labelled(images, labels, name, mean, std, class_names=None):
    if labels is not None:
        labels = np.asarray(labels).astype(np.int32).reshape(-1)
        if len(labels) != len(images):
            raise ValueError(
                f"x and y must have the same length. Received: len(x)={len(images)}, "
                f"len(y)={len(labels)}"
            )
    num_classes = None if labels is None else int(labels.max()) + 1 if len(labels) else 0
    if class_names is not None:
        num_classes = len(class_names)
    info = SourceInfo(len(images), num_classes, class_names, *_stats(name, mean, std))
    return info, labels


def from_arrays(arrays, mean=None, std=None):
    """An in-memory source from `(x,)` or `(x, y)`: x [N, H, W] or [N, H, W, C]."""
    if isinstance(arrays, np.ndarray):
        arrays = (arrays,)
    if not 1 <= len(arrays) <= 2:
        raise ValueError(f"An array source is (x,) or (x, y). Received a tuple of {len(arrays)}")
    images = np.asarray(arrays[0])
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or images.shape[-1] not in (1, 3, 4) or len(images) == 0:
        raise ValueError(
            f"x must be a non-empty array [N, H, W] or [N, H, W, C] with C in (1, 3, 4). "
            f"Received: shape={images.shape}"
        )
    if images.dtype != np.uint8:
        images = images.astype(np.float32)
    info, labels = _labelled(images, arrays[1] if len(arrays) == 2 else None, "", mean, std)
    return Source("array", info, images=images, labels=labels)


def demo(split="train", mean=None, std=None):
    """The Fashion-MNIST subset shipped in byol_tf/data_files (600 / 100 images per class)."""
    if split not in ("train", "test"):
        raise ValueError(
            f"The demo source has splits 'train' and 'test'. Received: split={split!r}"
        )
    with np.load(DEMO_FILE) as data:
        images, labels = data[f"x_{split}"][..., None], data[f"y_{split}"]
    info, labels = _labelled(images, labels, "demo", mean, std, DEMO_CLASSES)
    return Source("array", info, images=images, labels=labels)


def _images_in(folder):
    names = sorted(os.listdir(folder))
    return [
        os.path.join(folder, n)
        for n in names
        if n.lower().endswith(IMAGE_EXTENSIONS) and os.path.isfile(os.path.join(folder, n))
    ]


def from_folder(root, split="train", mean=None, std=None):
    """Images under `root/<class>/*` (labels from sorted folder names) or directly in `root`.

    When `root/<split>` exists (e.g. `root/train/<class>/...`) it is used instead of `root`.
    """
    if not os.path.isdir(root):
        raise FileNotFoundError(f"Image folder not found: {root}")
    if split and os.path.isdir(os.path.join(root, split)):
        root = os.path.join(root, split)
    paths = _images_in(root)
    labels, class_names = None, None
    if not paths:
        subdirs = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
        per_class = [(d, _images_in(os.path.join(root, d))) for d in subdirs]
        per_class = [(d, files) for d, files in per_class if files]
        class_names = tuple(d for d, _ in per_class)
        paths = [p for _, files in per_class for p in files]
        labels = np.concatenate([np.full(len(f), i) for i, (_, f) in enumerate(per_class)] or [[]])
    if not paths:
        raise ValueError(
            f"No images ({', '.join(IMAGE_EXTENSIONS)}) found in folder {root} "
            "(expected root/<class>/<image> or root/<image>)"
        )
    info, labels = _labelled(np.asarray(paths), labels, "", mean, std, class_names)
    return Source("files", info, paths=np.asarray(paths), labels=labels)


def _tfds_builder(name, data_dir, manual_dir):
    import tensorflow_datasets as tfds  # imported lazily: it is slow to import

    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError:
        base = name.split(":")[0].split("/")[0]
        close = difflib.get_close_matches(base, tfds.list_builders(), n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ValueError(
            f"Unknown data source {name!r}: not 'demo', an existing folder or a "
            f"tensorflow-datasets name{hint}"
        ) from None
    config = tfds.download.DownloadConfig(manual_dir=manual_dir) if manual_dir else None
    builder.download_and_prepare(download_config=config)  # a no-op once prepared
    return builder


def _count(builder, split, image_key):
    """Examples in a split; counts by reading when the split metadata is missing (mocks)."""
    import tensorflow_datasets as tfds

    try:
        return builder.info.splits[split].num_examples
    except KeyError:
        ds = builder.as_dataset(split=split, decoders={image_key: tfds.decode.SkipDecoding()})
        return int(ds.reduce(0, lambda count, _: count + 1))


def from_tfds(name, split="train", data_dir=None, manual_dir=None, mean=None, std=None):
    """A tensorflow-datasets source, read with the image left encoded (decoded by the pipeline)."""
    import tensorflow_datasets as tfds

    builder = _tfds_builder(name, data_dir, manual_dir)
    features = builder.info.features
    image_keys = [k for k, f in features.items() if isinstance(f, tfds.features.Image)]
    if not image_keys:
        raise ValueError(f"tensorflow-datasets source {name!r} has no image feature")
    image_key = "image" if "image" in image_keys else image_keys[0]
    has_label = "label" in features and isinstance(features["label"], tfds.features.ClassLabel)
    label_key = "label" if has_label else None
    class_names = tuple(features[label_key].names) if label_key else None
    shape = features[image_key].shape
    fixed = tuple(shape[:2]) + (3,) if None not in shape[:2] else None
    base = name.split(":")[0].split("/")[0]
    info = SourceInfo(
        _count(builder, split, image_key),
        len(class_names) if class_names else None,
        class_names,
        *_stats(base, mean, std),
    )
    return Source(
        "tfds", info, builder=builder, split=split, image_key=image_key,
        label_key=label_key, fixed_shape=fixed,
    )  # fmt: skip


def resolve(source, split="train", data_dir=None, manual_dir=None, mean=None, std=None):
    """Turns a user's `source` argument into a `Source`.

    Args:
        source: "demo", a folder path, an `(x[, y])` tuple of arrays, or a tfds name.
        split: split name ("train", "test", a tfds split such as "train[:10%]"...).
        data_dir: tensorflow-datasets data directory.
        manual_dir: tensorflow-datasets manual download directory (imagenet2012).
        mean: normalisation mean override.
        std: normalisation std override.

    Returns:
        A `Source`.

    Raises:
        ValueError: for an unknown source, a bad array or an empty folder.
        FileNotFoundError: for a path that does not exist.
    """
    if isinstance(source, (tuple, list, np.ndarray)):
        return from_arrays(source, mean, std)
    if not isinstance(source, (str, os.PathLike)):
        raise ValueError(
            "source must be 'demo', a folder path, an (x[, y]) tuple of arrays or a "
            f"tensorflow-datasets name. Received: source={source!r}"
        )
    source = os.fspath(source)
    if source == "demo":
        return demo(split, mean, std)
    # tfds names may contain "/" ("name/config"), so only these count as paths.
    if source.startswith((".", "/", "~")) or os.path.exists(source):
        return from_folder(os.path.expanduser(source), split, mean, std)
    return from_tfds(source, split, data_dir, manual_dir, mean, std)


def skipped_files():
    """Distinct paths of the corrupt images skipped so far in this process (`skip_corrupt`)."""
    return list(_SKIPPED)


def decode_full(data):
    """Any supported encoded image → uint8 [H, W, 3] (greyscale replicated, alpha dropped)."""
    image = tf.io.decode_image(data, channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    return image


@tf.autograph.experimental.do_not_convert  # explicit tf.cond only
def decode_crops(data, elem_seed, configs, size):
    """Two random-resized crops of one encoded image → float32 [2, size, size, 3] in [0, 1].

    JPEGs are decoded with `tf.image.decode_and_crop_jpeg`, so only the crop windows are decoded.
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


def _note_skipped(path):
    def record(p):
        path = p.numpy().decode()
        if path not in _SKIPPED:
            logging.warning(
                "byol_tf: skipping corrupt image %s (%d so far)", path, len(_SKIPPED) + 1
            )
        _SKIPPED[path] = _SKIPPED.get(path, 0) + 1
        return False

    return tf.py_function(record, [path], tf.bool)


def unreadable_file(error):
    """The path named by `decode_files`' assertion in a `tf.errors.OpError`, else None."""
    match = re.search(r"\[Cannot decode image file\] \[(.*?)\]", str(error))
    return match.group(1) if match else None


def decode_files(paths, decode, skip_corrupt):
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

    decoded = paths.interleave(
        one, cycle_length=8, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
    )
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
