"""Labelled features: extraction from an encoder, argument checks and class-balanced subsets."""

import numbers
import weakref
from typing import Any

import keras
import numpy as np
import tensorflow as tf


def check_int(name, value, minimum=1) -> None:
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}. Received: {name}={value!r}")


def check_fraction(name, value, allow_one=True) -> None:
    ok = isinstance(value, numbers.Real) and 0 < value and (value <= 1 if allow_one else value < 1)
    if not ok:
        upper = "1]" if allow_one else "1)"
        raise ValueError(f"{name} must be in (0, {upper}. Received: {name}={value!r}")


def _check_features(prefix, features, labels):
    """Validates a `(features [N, D], labels [N])` pair; returns float32 / int64 arrays."""
    features = np.asarray(features, np.float32)
    labels = np.asarray(labels)
    if features.ndim != 2 or len(features) == 0:
        raise ValueError(
            f"{prefix}_features must be a non-empty [N, D] array. Received: shape={features.shape}"
        )
    if labels.shape != (len(features),) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"{prefix}_labels must be ints of shape [{len(features)}]. "
            f"Received: shape={labels.shape}, dtype={labels.dtype}"
        )
    if labels.min() < 0:
        raise ValueError(f"{prefix}_labels must be >= 0. Received: min={labels.min()}")
    return features, labels.astype(np.int64)


def check_splits(
    train_features, train_labels, test_features, test_labels
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    train_x, train_y = _check_features("train", train_features, train_labels)
    test_x, test_y = _check_features("test", test_features, test_labels)
    if train_x.shape[1] != test_x.shape[1]:
        raise ValueError(
            "train_features and test_features must have the same width. "
            f"Received: {train_x.shape[1]} and {test_x.shape[1]}"
        )
    return train_x, train_y, test_x, test_y


def split_batch(batch) -> tuple[Any, Any]:
    """`(images, labels)` from an `(images, labels, ...)` tuple or an {"image", "label"} dict."""
    if isinstance(batch, dict):
        return batch["image"], batch["label"]
    if isinstance(batch, (tuple, list)) and len(batch) >= 2:
        return batch[0], batch[1]
    raise ValueError(
        "dataset elements must be (images, labels) or {'image', 'label'}. "
        f"Received: {type(batch).__name__}"
    )


def as_pairs(dataset) -> tf.data.Dataset:
    """A dataset of `(images, labels)` from one of tuples or {"image", "label"} dicts."""
    return dataset.map(lambda *batch: split_batch(batch[0] if len(batch) == 1 else batch))


def fixed_size_pairs(dataset, name="train_dataset") -> tf.data.Dataset:
    """`as_pairs(dataset)` with the static image shape of its first batch, for random crops.

    Raises:
        ValueError: when `dataset` is empty or its images are not [B, H, W, C] batches.
    """
    pairs = as_pairs(dataset)
    first = next(iter(pairs), None)
    if first is None:
        raise ValueError(f"{name} must yield at least one batch. Received an empty dataset")
    shape = first[0].shape
    if shape.rank != 4:
        raise ValueError(f"{name} must yield [B, H, W, C] image batches. Received: shape={shape}")
    return pairs.map(lambda x, y: (tf.ensure_shape(x, [None, *shape[1:]]), y))


def encoder_input_side(encoder) -> int | None:
    """The static input side of a Keras `encoder`, or None (any side, or not a Keras model)."""
    shape = getattr(encoder, "input_shape", None) if isinstance(encoder, keras.Model) else None
    side = shape[1] if isinstance(shape, tuple) and len(shape) == 4 else None
    return side if isinstance(side, int) else None


# One compiled forward pass per encoder, reused by every extraction (a kNN monitor extracts
# features from the same encoder every epoch; a new tf.function each time would retrace).
_FORWARD = weakref.WeakKeyDictionary()


def _inference_function(encoder):
    """The cached `tf.function` running `encoder` in inference mode."""
    forward = _FORWARD.get(encoder)
    if forward is None:
        # reduce_retracing: one graph for all batch sizes (the last batch is smaller).
        forward = tf.function(lambda x: encoder(x, training=False), reduce_retracing=True)
        _FORWARD[encoder] = forward
    return forward


def extract_features(encoder, dataset) -> tuple[np.ndarray, np.ndarray]:
    """Runs `encoder` over a labelled dataset in inference mode.

    Args:
        encoder: a `keras.Model` (called with `training=False`, so BatchNorm uses its moving
            statistics) or any callable mapping an image batch to `[B, D]` features.
        dataset: an iterable of `(images [B, H, W, C], labels [B])` batches (a batched
            `tf.data.Dataset` such as `byol_tf.data.pipelines.eval_dataset`), or of
            {"image", "label"}.

    Returns:
        `(features float32 [N, D], labels int64 [N])`.

    Raises:
        ValueError: if `encoder` is not callable or `dataset` is empty.
    """
    if not callable(encoder):
        raise ValueError(f"encoder must be callable. Received: encoder={type(encoder).__name__}")
    forward = _inference_function(encoder) if isinstance(encoder, keras.Model) else encoder
    features, labels = [], []
    for batch in dataset:
        images, batch_labels = split_batch(batch)
        features.append(np.asarray(forward(images), np.float32))
        labels.append(np.asarray(batch_labels).astype(np.int64).reshape(-1))
    if not features:
        raise ValueError("dataset must yield at least one batch. Received an empty dataset")
    return np.concatenate(features), np.concatenate(labels)


def topk_hits(scores, labels, k) -> np.ndarray:
    """Per-row flags: is `labels[i]` among the `k` highest `scores[i]`?"""
    k = min(k, scores.shape[1])
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.any(top == labels[:, None], axis=1)


def resolve_num_classes(num_classes, *labels) -> int:
    needed = int(max(y.max() for y in labels)) + 1
    if num_classes is None:
        return needed
    check_int("num_classes", num_classes, minimum=2)
    if num_classes < needed:
        raise ValueError(
            f"num_classes is smaller than the largest label + 1 ({needed}). "
            f"Received: num_classes={num_classes}"
        )
    return int(num_classes)


def subset_by_fraction(labels, fraction, seed=0) -> np.ndarray:
    """Indices of a seeded, class-balanced subset holding `fraction` of the examples.

    The subset has `round(fraction · N)` examples (at least one per class) shared as equally
    as possible between the classes; a class with too few examples gives its share to the
    others. The same labels, fraction and seed always give the same subset.

    Args:
        labels: int [N] class labels.
        fraction: in (0, 1]; 1 keeps everything.
        seed: int seed of the choice.

    Returns:
        Sorted int64 indices into `labels`.

    Raises:
        ValueError: for an empty `labels` or a fraction outside (0, 1].
    """
    labels = np.asarray(labels).reshape(-1)
    if len(labels) == 0:
        raise ValueError("labels must be non-empty. Received: labels of length 0")
    check_fraction("fraction", fraction)
    classes, counts = np.unique(labels, return_counts=True)
    total = min(len(labels), max(int(round(fraction * len(labels))), len(classes)))
    rng = np.random.default_rng(seed)
    quota = np.zeros(len(classes), np.int64)
    remaining = total
    order = rng.permutation(len(classes))  # who gets the remainder of an uneven share
    while remaining > 0:
        open_classes = [c for c in order if quota[c] < counts[c]]
        share = max(remaining // len(open_classes), 1)
        for c in open_classes:
            add = min(share, counts[c] - quota[c], remaining)
            quota[c] += add
            remaining -= add
            if remaining == 0:
                break
    chosen = [
        rng.permutation(np.flatnonzero(labels == cls))[:q]
        for cls, q in zip(classes, quota, strict=True)
    ]
    return np.sort(np.concatenate(chosen)).astype(np.int64)
