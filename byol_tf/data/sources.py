"""Resolves a `source` argument (demo, arrays, image folder, tfds name) into a source object."""

import dataclasses
import difflib
import os
import re
import tarfile

import numpy as np

from byol_tf.data.decoding import SkippedFiles, note_unsupported
from byol_tf.data.source_kinds import ArraySource, FolderSource, Source, SourceInfo, TfdsSource
from byol_tf.views.image_ops import IMAGENET_MEAN, IMAGENET_STD

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")
# Image formats TensorFlow does not decode: skipped, counted and reported (other files are
# not images and pass unnoticed).
UNSUPPORTED_IMAGE_EXTENSIONS = (
    ".webp", ".tif", ".tiff", ".heic", ".heif", ".avif", ".jp2", ".jxl", ".ico", ".psd",
    ".svg", ".ppm", ".pgm", ".pbm", ".pnm", ".dng", ".cr2", ".nef", ".arw", ".raw",
)  # fmt: skip
# byol_tf/data_files, beside this module's folder.
_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO_FILE = os.path.join(_PACKAGE, "data_files", "fashion_mnist_demo.npz")
DEMO_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
# Channel mean / std of the training split, in [0, 1] units.
KNOWN_STATS = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "stl10": ((0.4467, 0.4398, 0.4066), (0.2603, 0.2566, 0.2713)),
    "imagenet2012": (IMAGENET_MEAN, IMAGENET_STD),
    "demo": ((0.2860,) * 3, (0.3530,) * 3),
}


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


def from_arrays(arrays, mean=None, std=None) -> ArraySource:
    """An in-memory source from NumPy arrays.

    Args:
        arrays: `x`, `(x,)` or `(x, y)`: x [N, H, W] or [N, H, W, C] (C ∈ {1, 3, 4}), uint8 in
            [0, 255] or float in [0, 1]; y [N] integer labels.
        mean: normalisation mean; default ImageNet's.
        std: normalisation std; default ImageNet's.

    Returns:
        An `ArraySource`.

    Raises:
        ValueError: for a tuple of another length, a bad image array, or x and y of different
            lengths.
    """
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
    return ArraySource(info, labels=labels, images=images)


def demo(split="train", mean=None, std=None) -> ArraySource:
    """The Fashion-MNIST subset shipped in byol_tf/data_files (600 / 100 images per class).

    Args:
        split: "train" or "test".
        mean: normalisation mean; default the demo set's.
        std: normalisation std; default the demo set's.

    Returns:
        An `ArraySource` of uint8 [N, 28, 28, 1] images with labels.

    Raises:
        ValueError: for another split.
    """
    if split not in ("train", "test"):
        raise ValueError(
            f"The demo source has splits 'train' and 'test'. Received: split={split!r}"
        )
    with np.load(DEMO_FILE) as data:
        images, labels = data[f"x_{split}"][..., None], data[f"y_{split}"]
    info, labels = _labelled(images, labels, "demo", mean, std, DEMO_CLASSES)
    return ArraySource(info, labels=labels, images=images, name="demo", split=split)


def _images_in(folder, skipped):
    """The readable image files in `folder`, sorted; those of unsupported image formats are
    counted in `skipped` and reported (`decoding.note_unsupported`)."""
    files = [
        os.path.join(folder, n)
        for n in sorted(os.listdir(folder))
        if os.path.isfile(os.path.join(folder, n))
    ]
    unsupported = [p for p in files if p.lower().endswith(UNSUPPORTED_IMAGE_EXTENSIONS)]
    if unsupported:
        note_unsupported(folder, unsupported, IMAGE_EXTENSIONS, skipped)
    return [p for p in files if p.lower().endswith(IMAGE_EXTENSIONS)]


def split_folder(root, split) -> str:
    """The folder that split `split` of image folder `root` reads: `root/<split>` when that
    exists, else `root` itself."""
    if split and os.path.isdir(os.path.join(root, split)):
        return os.path.join(root, split)
    return root


def from_folder(root, split="train", mean=None, std=None) -> FolderSource:
    """Images under `root/<class>/*` (labels from sorted folder names) or directly in `root`.

    When `root/<split>` exists (e.g. `root/train/<class>/...`) it is used instead of `root`.

    Args:
        root: the folder.
        split: the split's subfolder, used when it exists.
        mean: normalisation mean; default ImageNet's.
        std: normalisation std; default ImageNet's.

    Returns:
        A `FolderSource`, labelled when the images are in class subfolders.

    Raises:
        FileNotFoundError: when `root` does not exist.
        ValueError: when it is a file or holds no images.
    """
    if os.path.isfile(root):
        raise ValueError(
            f"Data source {root} is a file, not a folder; a data source is 'demo', a "
            "tensorflow-datasets name or a folder of images (root/<class>/<image> or "
            "root/<image>)"
        )
    if not os.path.isdir(root):
        raise FileNotFoundError(f"Image folder not found: {root}")
    name, root, skipped = root, split_folder(root, split), SkippedFiles()
    paths = _images_in(root, skipped)
    labels, class_names = None, None
    if not paths:
        subdirs = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
        per_class = [(d, _images_in(os.path.join(root, d), skipped)) for d in subdirs]
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
    return FolderSource(
        info, labels=labels, paths=np.asarray(paths), name=name, split=split, skipped=skipped
    )


def _tfds_base_name(name):
    """The dataset name of a tfds name with config and version: "cifar10" of "cifar10:3.*"."""
    return name.split(":")[0].split("/")[0]


def _tfds_builder(name, data_dir, manual_dir):
    import tensorflow as tf
    import tensorflow_datasets as tfds  # imported lazily: it is slow to import

    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError:
        close = difflib.get_close_matches(
            _tfds_base_name(name), tfds.list_builders(), n=3, cutoff=0.6
        )
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ValueError(
            f"Unknown data source {name!r}: not 'demo', an existing folder or a "
            f"tensorflow-datasets name{hint}"
        ) from None
    config = tfds.download.DownloadConfig(manual_dir=manual_dir) if manual_dir else None
    try:
        builder.download_and_prepare(download_config=config)  # a no-op once prepared
    except _download_errors() as error:  # before OSError: requests' errors are OSErrors
        raise ValueError(_download_failed(builder, name, manual_dir, error)) from None
    except (AssertionError, FileNotFoundError, tf.errors.NotFoundError, tarfile.TarError) as error:
        # What tensorflow-datasets raises when the files of a manual data set are missing or
        # damaged: an AssertionError about the manual folder, a file of it not found
        # (ImageNet's), a tar file cut short.
        message = _manual_files_missing(builder, name, manual_dir, error)
        if message is None:
            raise
        raise ValueError(message) from None
    except (OSError, tf.errors.PermissionDeniedError, tf.errors.FailedPreconditionError) as error:
        # A data_dir that cannot be written: under a file, read-only, a full disk.
        raise ValueError(
            f"Cannot prepare tensorflow-datasets data set {name!r} in "
            f"--data_dir={_tfds_folders(builder, manual_dir)[0]}: {error}"
        ) from None
    return builder


def _download_errors():
    """What a tensorflow-datasets download raises without a network or a reachable server."""
    import urllib.error

    import requests
    import tensorflow_datasets as tfds

    return requests.exceptions.RequestException, urllib.error.URLError, tfds.download.DownloadError


def _tfds_folders(builder, manual_dir):
    """`--data_dir=... and --manual_dir=...` as tensorflow-datasets uses them (defaults filled)."""
    data_dir = os.fspath(builder.data_dir_root)
    manual = os.path.expanduser(manual_dir or os.path.join(data_dir, "downloads", "manual"))
    return data_dir, manual


def _manual_files_missing(builder, name, manual_dir, error):
    """The message for `error` if it says files of a manual data set are missing, else None."""
    if not builder.MANUAL_DOWNLOAD_INSTRUCTIONS:
        return None
    data_dir, manual = _tfds_folders(builder, manual_dir)
    text = str(error)
    missing = re.search(re.escape(os.path.join(manual, "")) + r"([^;\s]+)", text)
    if not os.path.isdir(manual):
        state = "does not exist"
    elif not os.listdir(manual):
        state = "is empty"
    elif missing:
        state = f"has no {missing.group(1)}"
    elif isinstance(error, tarfile.TarError):
        state = f"holds a tar file that cannot be read ({error}; cut short by its download?)"
    elif isinstance(error, AssertionError) and "manual" in text.lower():
        state = "does not hold them"
    else:
        return None
    expected = " ".join(builder.MANUAL_DOWNLOAD_INSTRUCTIONS.split())
    return (
        f"tensorflow-datasets data set {name!r} is not prepared in --data_dir={data_dir}, and "
        f"it is prepared from files downloaded by hand: --manual_dir={manual} {state}. "
        f"Expected there: {expected}"
    )


def _download_failed(builder, name, manual_dir, error):
    data_dir, manual = _tfds_folders(builder, manual_dir)
    url = getattr(getattr(error, "request", None), "url", None)
    reason = f"{type(error).__name__} for {url}" if url else f"{type(error).__name__}: {error}"
    files = sorted({info.filename for info in (builder.url_infos or {}).values() if info.filename})
    place = f"put {', '.join(files)} in --manual_dir={manual}, or " if files else ""
    return (
        f"Cannot download tensorflow-datasets data set {name!r} into --data_dir={data_dir} "
        f"(no network? {' '.join(reason.split())}): run once with network access, {place}"
        "pass the --data_dir where it is already prepared."
    )


def count_examples(builder, split, image_key) -> int:
    """Examples in a split; counts by reading when the split metadata is missing (mocks)."""
    import tensorflow_datasets as tfds

    try:
        return builder.info.splits[split].num_examples
    except KeyError:
        ds = builder.as_dataset(split=split, decoders={image_key: tfds.decode.SkipDecoding()})
        return int(ds.reduce(0, lambda count, _: count + 1))


def from_tfds(
    name, split="train", data_dir=None, manual_dir=None, mean=None, std=None
) -> TfdsSource:
    """A tensorflow-datasets source, read with the image left encoded (decoded by the pipeline).

    The dataset is downloaded and prepared when it is not yet.

    Args:
        name: the tfds name, optionally with config and version ("cifar10", "imagenet2012:5.*").
        split: the split, tfds slicing included ("train[:10%]").
        data_dir: tensorflow-datasets data directory.
        manual_dir: tensorflow-datasets manual download directory (imagenet2012).
        mean: normalisation mean; default the known statistics of the dataset, else ImageNet's.
        std: normalisation std; same default.

    Returns:
        A `TfdsSource`.

    Raises:
        ValueError: for an unknown name (suggesting close ones), a dataset without images,
            one that cannot be downloaded (no network), a manual one whose files are
            missing (each naming the data set, data_dir and manual_dir), or a data_dir that
            cannot be written.
    """
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
    info = SourceInfo(
        count_examples(builder, split, image_key),
        len(class_names) if class_names else None,
        class_names,
        *_stats(_tfds_base_name(name), mean, std),
    )
    return TfdsSource(
        info, builder=builder, name=name, split=split, image_key=image_key,
        label_key=label_key, fixed_shape=fixed,
    )  # fmt: skip


def source(what, split="train", *, data_dir=None, manual_dir=None, mean=None, std=None) -> Source:
    """A data source split, resolved once and handed to every pipeline.

    A `Source` passed in is returned as it is (`with_stats` when `mean` or `std` is given).

    Args:
        what: "demo", a folder path, an `(x[, y])` tuple of arrays, a tfds name, or a
            resolved `Source` (then `split`, `data_dir` and `manual_dir` are those it was
            resolved with).
        split: split name ("train", "test", a tfds split such as "train[:10%]"...).
        data_dir: tensorflow-datasets data directory.
        manual_dir: tensorflow-datasets manual download directory (imagenet2012).
        mean: normalisation mean; default the source's known statistics, else ImageNet's.
        std: normalisation std; same default.

    Returns:
        A `Source`: an `ArraySource` (arrays, "demo"), a `FolderSource` or a `TfdsSource`.

    Raises:
        ValueError: for an unknown source, a bad array or an empty folder.
        FileNotFoundError: for a path that does not exist.
    """
    if isinstance(what, Source):
        return with_stats(what, mean, std)
    if isinstance(what, (tuple, list, np.ndarray)):
        return dataclasses.replace(from_arrays(what, mean, std), split=split)
    if not isinstance(what, (str, os.PathLike)):
        raise ValueError(
            "source must be 'demo', a folder path, an (x[, y]) tuple of arrays or a "
            f"tensorflow-datasets name. Received: source={what!r}"
        )
    what = os.fspath(what)
    if what == "demo":
        return demo(split, mean, std)
    if is_folder_name(what):
        return from_folder(os.path.expanduser(what), split, mean, std)
    return from_tfds(what, split, data_dir, manual_dir, mean, std)


def with_stats(source, mean=None, std=None) -> Source:
    """`source` with its normalisation mean and std replaced by those given (not None)."""
    if mean is None and std is None:
        return source
    info = dataclasses.replace(
        source.info,
        mean=tuple(source.info.mean if mean is None else mean),
        std=tuple(source.info.std if std is None else std),
    )
    return dataclasses.replace(source, info=info)


def is_folder_name(source) -> bool:
    """Whether the string `source` names an image folder (else: "demo" or a tfds name)."""
    # tfds names may contain "/" ("name/config"), so only these count as paths.
    return source.startswith((".", "/", "~")) or os.path.exists(source)
