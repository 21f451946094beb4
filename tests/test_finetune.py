"""Fine-tuning's test scores: counted to the end of data of unknown length, without warnings."""

import importlib
import warnings

import keras
import numpy as np
import tensorflow as tf
from helpers import tiny_encoder

from byol_tf import evaluation

# The module (byol_tf.evaluation.finetune, as an attribute, is the function of that name).
finetune_module = importlib.import_module("byol_tf.evaluation.finetune")


def _unknown_length(images, labels, batch_size):
    """Batches of `(images, labels)` whose length tf.data cannot tell (as an image folder's)."""
    data = tf.data.Dataset.from_tensor_slices((images, labels)).filter(lambda x, y: True)
    return data.batch(batch_size)


def test_finetune_scores_data_of_unknown_length_without_running_out_of_data():
    rng = np.random.default_rng(0)
    images = rng.uniform(size=(20, 8, 8, 3)).astype("float32")
    labels = rng.integers(0, 3, 20).astype("int32")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = evaluation.finetune(
            tiny_encoder(), _unknown_length(images, labels, 8), _unknown_length(images, labels, 6),
            num_classes=3, epochs=2, batch_size=8,
        )  # fmt: skip
    assert not [w for w in caught if "ran out of data" in str(w.message)]
    assert 0.0 <= result["top1"] <= result["top5"] == 1.0  # k is clipped to the 3 classes


def test_test_scores_match_a_numpy_reference():
    rng = np.random.default_rng(1)
    features = rng.normal(size=(23, 4)).astype("float32")
    labels = rng.integers(0, 7, 23).astype("int32")
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(7)])
    logits = features @ model.get_weights()[0] + model.get_weights()[1]
    ranking = np.argsort(-logits, axis=1)
    top1 = np.mean(ranking[:, 0] == labels)
    top5 = np.mean([y in row[:5] for y, row in zip(labels, ranking, strict=True)])
    scores = finetune_module._test_scores(model, _unknown_length(features, labels, 5))
    np.testing.assert_allclose(scores, (top1, top5), rtol=1e-12)
