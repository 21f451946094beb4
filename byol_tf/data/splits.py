"""Internal: whether two splits of a source suit a labelled evaluation: classes, and no image in
both."""

import os
import types

import numpy as np

from byol_tf.data import sources
from byol_tf.data.source_kinds import ArraySource, FolderSource, TfdsSource

_SHOWN = 5  # class names quoted in a message at most


def where(source) -> str:
    """The images a source split reads, in words (for messages and results).

    A folder's split is its subfolder of that name when there is one, else the folder itself.

    Args:
        source: a `Source`, or anything `byol_tf.data.source` takes (then its "train" split).

    Returns:
        `"folder <path>"`, `"<name>/<split>"`, or `"the arrays"`.
    """
    src = sources.source(source)
    if isinstance(src, FolderSource):
        return f"folder {sources.split_folder(src.name, src.split)}"
    if isinstance(src, ArraySource) and src.name != "demo":
        return "the arrays"
    return f"{src.name}/{src.split}"


def _folder_root(src):
    """The folder of a resolved source, or None when it is not a folder."""
    return src.name if isinstance(src, FolderSource) else None


def evaluation_problem(train, test) -> tuple[str, str] | None:
    """What keeps two splits from serving a labelled evaluation (kNN, linear, fine-tuning).

    The training split (memory bank, classifier) needs at least 2 classes; the test split
    labels with the same classes; and no image may be in both: scoring a classifier on its
    own training images (a folder without a `<test split>` subfolder reads the folder itself;
    an array source has a single split) measures memory, not the representation.

    Args:
        train: the split the memory bank or classifier is made of: a `Source`
            (`byol_tf.data.source(what, split, ...)`), or anything `byol_tf.data.source` takes.
        test: the split scored, a `Source` of the same data.

    Returns:
        None when the splits suit, else `(split, reason)`: `"train"` or `"test"`, the split
        to change, and one line saying why.
    """
    train, test = sources.source(train), sources.source(test)
    reason = _too_few_classes(train)
    if reason:
        return "train", reason
    reason = _missing_subfolder(train, test)
    if reason:
        return "test", reason
    reason = _other_classes(train, test) or _shared_images(train, test)
    return ("test", reason) if reason else None


def _too_few_classes(src):
    info = src.info
    found = info.num_classes or 0
    if found >= 2:
        return None
    folder = _folder_root(src) is not None
    if info.class_names:
        detail = f"found {found} ({', '.join(info.class_names)})"
    elif info.num_classes is not None:
        detail = f"found {found}"
    elif folder:
        detail = "found none: its images are not in class subfolders"
    else:
        detail = "it has no labels"
    needs = "at least 2 classes (subfolders)" if folder else "at least 2 classes"
    return f"{where(src)} needs {needs} for a labelled evaluation; {detail}"


def _names(names):
    shown = ", ".join(names[:_SHOWN]) or "none"
    return shown + (f", ... ({len(names)} in all)" if len(names) > _SHOWN else "")


def _other_classes(train, test):
    """Why the test split's labels do not match the training split's, or None."""
    if not test.info.num_classes:
        return f"{where(test)} has no labels (no class subfolders)"
    names, other = train.info.class_names, test.info.class_names
    if names is None or other is None or names == other:
        return None
    return (
        f"{where(test)} and {where(train)} have different class "
        f"subfolders (only in the training split: {_names([n for n in names if n not in other])}"
        f"; only in the test split: {_names([n for n in other if n not in names])}); labels "
        "follow the sorted subfolder names, so both need the same ones"
    )


def _shared_images(train, test):
    """Why two resolved splits share images, or None."""
    if isinstance(train, FolderSource):
        return _shared_files(train, test)
    if isinstance(train, TfdsSource):
        return _shared_examples(train, test)
    if train.name == "demo":
        return f"the demo's {test.split!r} split is both" if train.split == test.split else None
    return "an array source has a single split, the same images whatever the split's name"


def _missing_subfolder(train, test):
    """Why a folder's test split would not be its own subfolder, or None (also for non-folders)."""
    root, train_split, test_split = _folder_root(train), train.split, test.split
    if root is None or test_split == train_split or sources.split_folder(root, test_split) != root:
        return None
    why = f"folder {root} has no {test_split!r} subfolder"
    if sources.split_folder(root, train_split) == root:
        why += f", so split {test_split!r} would be the folder itself, the training images"
    layout = f"{os.path.join(root, 'train', '<class>')}, {os.path.join(root, 'test', '<class>')}"
    return f"{why} (give each split its subfolder: {layout})"


def _shared_files(train, test):
    common = np.intersect1d(
        [os.path.realpath(p) for p in train.paths], [os.path.realpath(p) for p in test.paths]
    )
    if not len(common):
        return None
    if train.split == test.split:
        return f"both splits read {where(test)}"
    return f"{len(common)} images are in both {where(train)} and {where(test)}"


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
