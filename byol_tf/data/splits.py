"""Internal: whether two splits of a source suit a labelled evaluation: classes, and no image in
both."""

import os
import types

import numpy as np

from byol_tf.data import sources
from byol_tf.data.source_kinds import FolderSource, TfdsSource

_SHOWN = 5  # class names quoted in a message at most


def where(source, split):
    """The images split `split` of `source` reads, in words (for messages and results).

    A folder's split is its subfolder of that name when there is one, else the folder itself.

    Args:
        source: "demo", a folder path, an `(x[, y])` tuple of arrays, or a tfds name.
        split: the split.

    Returns:
        `"folder <path>"`, `"<name>/<split>"`, or `"the arrays"`.
    """
    if isinstance(source, (tuple, list, np.ndarray)):
        return "the arrays"
    root = _folder_root(source)
    if root is not None:
        return f"folder {sources.split_folder(root, split)}"
    return f"{os.fspath(source)}/{split}"


def _folder_root(source):
    """The path of image folder `source`, or None when `source` is not a folder."""
    if not isinstance(source, (str, os.PathLike)):
        return None
    source = os.fspath(source)
    if source == "demo" or not sources.is_folder_name(source):
        return None
    return os.path.expanduser(source)


def evaluation_problem(
    source, train_split, test_split, data_dir=None, manual_dir=None, *, train=None, test=None
):
    """What keeps two splits from serving a labelled evaluation (kNN, linear, fine-tuning).

    The training split (memory bank, classifier) needs at least 2 classes; the test split
    labels with the same classes; and no image may be in both: scoring a classifier on its
    own training images (a folder without a `<test_split>` subfolder reads the folder itself;
    an array source has a single split) measures memory, not the representation.

    Args:
        source: "demo", a folder path, an `(x[, y])` tuple of arrays, or a tfds name.
        train_split: the split the memory bank or classifier is made of.
        test_split: the split scored.
        data_dir: tensorflow-datasets data directory.
        manual_dir: tensorflow-datasets manual download directory.
        train: the training split as a resolved `Source`, when the caller has it.
        test: the test split as a resolved `Source`, when the caller has it.

    Returns:
        None when the splits suit, else `(split, reason)`: `"train"` or `"test"`, the split
        to change, and one line saying why.
    """
    if train is None:
        train = sources.resolve_source(source, train_split, data_dir, manual_dir)
    reason = _too_few_classes(source, train_split, train.info)
    if reason:
        return "train", reason
    reason = _missing_subfolder(source, train_split, test_split)
    if reason:
        return "test", reason
    if test is None:
        test = sources.resolve_source(source, test_split, data_dir, manual_dir)
    reason = _other_classes(source, train_split, test_split, train.info, test.info)
    reason = reason or _shared_images(source, train_split, test_split, train, test)
    return ("test", reason) if reason else None


def _too_few_classes(source, split, info):
    found = info.num_classes or 0
    if found >= 2:
        return None
    folder = _folder_root(source) is not None
    if info.class_names:
        detail = f"found {found} ({', '.join(info.class_names)})"
    elif info.num_classes is not None:
        detail = f"found {found}"
    elif folder:
        detail = "found none: its images are not in class subfolders"
    else:
        detail = "it has no labels"
    needs = "at least 2 classes (subfolders)" if folder else "at least 2 classes"
    return f"{where(source, split)} needs {needs} for a labelled evaluation; {detail}"


def _names(names):
    shown = ", ".join(names[:_SHOWN]) or "none"
    return shown + (f", ... ({len(names)} in all)" if len(names) > _SHOWN else "")


def _other_classes(source, train_split, test_split, train_info, test_info):
    """Why the test split's labels do not match the training split's, or None."""
    if not test_info.num_classes:
        return f"{where(source, test_split)} has no labels (no class subfolders)"
    names, other = train_info.class_names, test_info.class_names
    if names is None or other is None or names == other:
        return None
    return (
        f"{where(source, test_split)} and {where(source, train_split)} have different class "
        f"subfolders (only in the training split: {_names([n for n in names if n not in other])}"
        f"; only in the test split: {_names([n for n in other if n not in names])}); labels "
        "follow the sorted subfolder names, so both need the same ones"
    )


def _shared_images(source, train_split, test_split, train, test):
    """Why two resolved splits share images, or None."""
    if isinstance(train, FolderSource):
        return _shared_files(source, train_split, test_split, train, test)
    if isinstance(train, TfdsSource):
        return _shared_examples(train, test)
    if source == "demo":
        return f"the demo's {test_split!r} split is both" if train_split == test_split else None
    return "an array source has a single split, the same images whatever the split's name"


def _missing_subfolder(source, train_split, test_split):
    """Why a folder's test split would not be its own subfolder, or None (also for non-folders)."""
    root = _folder_root(source)
    if root is None or test_split == train_split or sources.split_folder(root, test_split) != root:
        return None
    why = f"folder {root} has no {test_split!r} subfolder"
    if sources.split_folder(root, train_split) == root:
        why += f", so split {test_split!r} would be the folder itself, the training images"
    layout = f"{os.path.join(root, 'train', '<class>')}, {os.path.join(root, 'test', '<class>')}"
    return f"{why} (give each split its subfolder: {layout})"


def _shared_files(source, train_split, test_split, train, test):
    common = np.intersect1d(
        [os.path.realpath(p) for p in train.paths], [os.path.realpath(p) for p in test.paths]
    )
    if not len(common):
        return None
    if train_split == test_split:
        return f"both splits read {where(source, test_split)}"
    return (
        f"{len(common)} images are in both {where(source, train_split)} and "
        f"{where(source, test_split)}"
    )


def _absolute_ranges(src):
    """`[(split name, start, stop)]` that the tfds split (slices and `+` included) reads."""
    import tensorflow_datasets as tfds

    names = {part.split("[")[0].strip() for part in src.split.split("+")}
    known = src.builder.info.splits
    infos = {
        name: known[name]
        if name in known
        else types.SimpleNamespace(
            num_examples=sources.count_examples(src.builder, name, src.image_key)
        )
        for name in names
    }
    instructions = tfds.core.ReadInstruction.from_spec(src.split).to_absolute(infos)
    return [
        (i.splitname, i.from_ or 0, infos[i.splitname].num_examples if i.to is None else i.to)
        for i in instructions
    ]


def _shared_examples(train, test):
    shared = {}
    for name, start, stop in _absolute_ranges(train):
        for other, other_start, other_stop in _absolute_ranges(test):
            overlap = min(stop, other_stop) - max(start, other_start)
            if name == other and overlap > 0:
                shared[name] = shared.get(name, 0) + overlap
    if not shared:
        return None
    counts = ", ".join(f"{n:,} examples of {name!r}" for name, n in sorted(shared.items()))
    return (
        f"tensorflow-datasets splits {train.split!r} and {test.split!r} share {counts} "
        "(disjoint slices look like 'train[:90%]' and 'train[90%:]')"
    )
