"""Tests of byol_tf.evaluation: kNN against NumPy, linear probe, label subsets, fine-tuning."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import tiny_encoder

from byol_tf import evaluation


def reference_knn(train_x, train_y, test_x, test_y, k, temperature, num_classes):
    """Brute-force weighted kNN, one test point at a time (InstDisc / solo-learn rule)."""
    train_x = train_x / np.linalg.norm(train_x, axis=1, keepdims=True)
    test_x = test_x / np.linalg.norm(test_x, axis=1, keepdims=True)
    top1 = top5 = 0
    for x, y in zip(test_x, test_y, strict=True):
        sims = np.array([float(np.dot(x, t)) for t in train_x])
        nearest = np.argsort(-sims)[:k]
        scores = np.zeros(num_classes)
        for j in nearest:
            scores[train_y[j]] += np.exp(sims[j] / temperature)
        ranking = np.argsort(-scores, kind="stable")
        top1 += ranking[0] == y
        top5 += y in ranking[:5]
    return top1 / len(test_y), top5 / len(test_y)


def blobs(n, num_classes=4, dim=6, spread=1.0, seed=0):
    """Gaussian clusters around random centres: `(features, labels)`."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(99).normal(size=(num_classes, dim)) * 3
    labels = rng.integers(0, num_classes, n)
    return (centres[labels] + spread * rng.normal(size=(n, dim))).astype("float32"), labels


@pytest.mark.parametrize(
    "k, temperature, chunk_size", [(1, 0.1, None), (5, 0.1, 7), (20, 0.5, 3), (200, 0.07, 11)]
)
def test_knn_matches_brute_force_numpy_reference(k, temperature, chunk_size):
    train_x, train_y = blobs(60, num_classes=8, spread=3.0, seed=1)
    test_x, test_y = blobs(25, num_classes=8, spread=3.0, seed=2)
    result = evaluation.knn_classify(
        train_x, train_y, test_x, test_y, k=k, temperature=temperature, chunk_size=chunk_size
    )
    expected = reference_knn(train_x, train_y, test_x, test_y, min(k, 60), temperature, 8)
    assert (result["top1"], result["top5"]) == pytest.approx(expected)
    assert result["k"] == min(k, 60)


def test_knn_weighting_lets_close_neighbour_outvote_far_majority():
    # One very close neighbour of class 0 against two distant ones of class 1.
    train = np.array([[1.0, 0.0], [0.0, 1.0], [0.1, 1.0]], "float32")
    labels = np.array([0, 1, 1])
    test = np.array([[1.0, 0.05]], "float32")
    sharp = evaluation.knn_classify(train, labels, test, [0], k=3, temperature=0.1)
    flat = evaluation.knn_classify(train, labels, test, [0], k=3, temperature=100.0)
    assert sharp["top1"] == 1.0 and flat["top1"] == 0.0


def test_knn_k_limits_the_vote():
    train = np.array([[1.0, 0.0], [0.9, 0.1], [0.8, 0.3], [0.7, 0.35]], "float32")
    labels = np.array([0, 1, 1, 1])
    test = np.array([[1.0, 0.0]], "float32")
    assert evaluation.knn_classify(train, labels, test, [0], k=1)["top1"] == 1.0
    assert evaluation.knn_classify(train, labels, test, [0], k=4, temperature=1.0)["top1"] == 0.0


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"k": 0}, "k must be"),
        ({"temperature": 0.0}, "temperature must be"),
        ({"num_classes": 2}, "num_classes is smaller"),
        ({"test_features": np.zeros((3, 5))}, "same width"),
        ({"train_labels": np.zeros(2, int)}, "train_labels must be"),
    ],
)
def test_knn_rejects_bad_arguments_naming_them(kwargs, message):
    args = {
        "train_features": np.ones((4, 6)),
        "train_labels": np.array([0, 1, 2, 3]),
        "test_features": np.ones((3, 6)),
        "test_labels": np.array([0, 1, 2]),
    }
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        evaluation.knn_classify(**args)


def test_linear_eval_learns_separable_problem():
    train_x, train_y = blobs(600, spread=0.3, seed=3)
    test_x, test_y = blobs(200, spread=0.3, seed=4)
    result = evaluation.linear_eval(train_x, train_y, test_x, test_y, num_classes=4, epochs=10)
    assert result["top1"] >= 0.99 and result["top5"] == 1.0
    assert result["learning_rate"] in evaluation.DEFAULT_LEARNING_RATES
    assert result["l2"] in evaluation.DEFAULT_L2 and result["val_top1"] >= 0.99


def test_linear_eval_never_uses_test_labels_to_choose_hyper_parameters():
    train_x, train_y = blobs(400, spread=2.5, seed=5)
    test_x, test_y = blobs(200, spread=2.5, seed=6)
    kwargs = {"num_classes": 4, "epochs": 5, "learning_rates": (0.001, 0.1, 3.0)}
    honest = evaluation.linear_eval(train_x, train_y, test_x, test_y, **kwargs)
    shuffled = np.random.default_rng(0).permutation(test_y)
    scrambled = evaluation.linear_eval(train_x, train_y, test_x, shuffled, **kwargs)
    chosen = ("learning_rate", "l2", "val_top1")
    assert {k: honest[k] for k in chosen} == {k: scrambled[k] for k in chosen}
    assert scrambled["top1"] < honest["top1"]


def test_linear_eval_rejects_bad_validation_fraction():
    x, y = blobs(20)
    with pytest.raises(ValueError, match="validation_fraction"):
        evaluation.linear_eval(x, y, x, y, 4, validation_fraction=1.0)


def test_subset_by_fraction_is_class_balanced_and_deterministic():
    labels = np.repeat(np.arange(5), [100, 100, 100, 100, 3])  # class 4 is rare
    subset = evaluation.subset_by_fraction(labels, 0.1, seed=1)
    counts = np.bincount(labels[subset], minlength=5)
    assert len(subset) == 40 and counts[4] == 3  # the rare class gives its share away
    assert counts[:4].max() - counts[:4].min() <= 1
    np.testing.assert_array_equal(subset, evaluation.subset_by_fraction(labels, 0.1, seed=1))
    assert not np.array_equal(subset, evaluation.subset_by_fraction(labels, 0.1, seed=2))
    assert len(np.unique(subset)) == len(subset)


def test_subset_by_fraction_keeps_one_per_class_and_everything_at_one():
    labels = np.repeat(np.arange(10), 20)
    assert np.bincount(labels[evaluation.subset_by_fraction(labels, 0.01)]).tolist() == [1] * 10
    np.testing.assert_array_equal(evaluation.subset_by_fraction(labels, 1.0), np.arange(200))
    with pytest.raises(ValueError, match="fraction must be in"):
        evaluation.subset_by_fraction(labels, 0.0)


def _image_dataset(n=48, size=8, seed=0):
    rng = np.random.default_rng(seed)
    labels = (np.arange(n) % 3).astype("int32")
    images = rng.normal(size=(n, size, size, 3)).astype("float32") + labels[:, None, None, None]
    return tf.data.Dataset.from_tensor_slices((images, labels)).batch(16)


def test_extract_features_runs_encoder_in_inference_mode():
    encoder = tiny_encoder()
    features, labels = evaluation.extract_features(encoder, _image_dataset())
    assert features.shape == (48, 4) and features.dtype == np.float32
    assert labels.dtype == np.int64 and labels.tolist() == (np.arange(48) % 3).tolist()
    images = np.concatenate([x for x, _ in _image_dataset().as_numpy_iterator()])
    np.testing.assert_allclose(features, encoder(images, training=False), rtol=1e-5, atol=1e-6)
    dicts = _image_dataset().map(lambda x, y: {"image": x, "label": y})
    np.testing.assert_allclose(evaluation.extract_features(encoder, dicts)[0], features)


def test_finetune_one_epoch_leaves_the_encoder_untouched():
    encoder = tiny_encoder()
    before = [w.copy() for w in encoder.get_weights()]
    dicts = _image_dataset().map(lambda x, y: {"image": x, "label": y})
    result = evaluation.finetune(
        encoder, dicts, _image_dataset(seed=1), num_classes=3, epochs=1,
        learning_rate=0.1, label_fraction=0.5, batch_size=8,
    )  # fmt: skip
    assert result["num_labelled"] == 24 and 0.0 <= result["top1"] <= 1.0
    assert result["top5"] == 1.0  # k is clipped to the 3 classes
    for old, new in zip(before, encoder.get_weights(), strict=True):
        np.testing.assert_array_equal(old, new)


def test_finetune_rejects_arrays_and_bad_fraction():
    with pytest.raises(ValueError, match="train_dataset must be"):
        evaluation.finetune(tiny_encoder(), np.zeros(3), _image_dataset(), 3)
    with pytest.raises(ValueError, match="label_fraction"):
        evaluation.finetune(tiny_encoder(), _image_dataset(), _image_dataset(), 3, label_fraction=2)
    with pytest.raises(ValueError, match="encoder must be"):
        evaluation.finetune(lambda x: x, _image_dataset(), _image_dataset(), 3)
    assert isinstance(tiny_encoder(), keras.Model)
