"""Weighted k-nearest-neighbour classification of frozen features (docs/algorithm.md §6)."""

import numbers

import numpy as np

from byol_tf.evaluation.features import check_int, check_splits, resolve_num_classes, topk_hits
from byol_tf.settings.protocols import KNN_NEIGHBOURS, KNN_TEMPERATURE


def _l2_normalize(x):
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def knn_classify(
    train_features,
    train_labels,
    test_features,
    test_labels,
    k=KNN_NEIGHBOURS,
    temperature=KNN_TEMPERATURE,
    num_classes=None,
    chunk_size=None,
) -> dict[str, float | int]:
    """Weighted k-nearest-neighbour classification (InstDisc / solo-learn / lightly monitor).

    Features are l2-normalised; each test point takes the `k` train points of highest cosine
    similarity s and gives class c the score Σ exp(s / temperature) over its neighbours of class
    c. The test set is processed in chunks, so memory is O(chunk_size · N_train).

    Args:
        train_features: float [N, D].
        train_labels: int [N].
        test_features: float [M, D].
        test_labels: int [M].
        k: neighbours (clipped to N).
        temperature: softness of the vote weights.
        num_classes: number of classes; default max label + 1.
        chunk_size: test points per chunk; default keeps a chunk's similarities near 64 MB.

    Returns:
        {"top1", "top5": fractions of test points, "k", "temperature"}.

    Raises:
        ValueError: for a bad argument, naming it.
    """
    train_x, train_y, test_x, test_y = check_splits(
        train_features, train_labels, test_features, test_labels
    )
    check_int("k", k)
    if not isinstance(temperature, numbers.Real) or temperature <= 0:
        raise ValueError(f"temperature must be > 0. Received: temperature={temperature!r}")
    num_classes = resolve_num_classes(num_classes, train_y, test_y)
    k = min(k, len(train_x))
    chunk_size = chunk_size or max(1, (1 << 24) // len(train_x))
    check_int("chunk_size", chunk_size)
    train_x, test_x = _l2_normalize(train_x), _l2_normalize(test_x)
    top1 = top5 = 0
    for start in range(0, len(test_x), chunk_size):
        sim = test_x[start : start + chunk_size] @ train_x.T  # [c, N] cosine similarities
        rows = np.arange(len(sim))[:, None]
        nearest = np.argpartition(-sim, k - 1, axis=1)[:, :k]  # the k most similar, unordered
        weights = np.exp(sim[rows, nearest] / temperature)
        scores = np.zeros((len(sim), num_classes), np.float64)
        np.add.at(scores, (np.broadcast_to(rows, nearest.shape), train_y[nearest]), weights)
        labels = test_y[start : start + chunk_size]
        top1 += int(topk_hits(scores, labels, 1).sum())
        top5 += int(topk_hits(scores, labels, 5).sum())
    n = len(test_x)
    return {"top1": top1 / n, "top5": top5 / n, "k": k, "temperature": float(temperature)}
