"""linear_official's `paper` selection is the paper's (Grill et al. 2020, appendix C.1 and D.1):
its numbers, and results that report the held-out part actually held out."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from byol_tf import evaluation
from byol_tf.data import SourceInfo
from byol_tf.evaluation import linear_official


def test_paper_selection_takes_the_papers_numbers():
    # Appendix C.1: "5 learning rates {0.4, 0.3, 0.2, 0.1, 0.05}", "80 epochs, using a batch
    # size of 1024", "a local validation set (10009 images from ImageNet train set)".
    assert linear_official.LINEAR_OFFICIAL_LEARNING_RATES == (0.4, 0.3, 0.2, 0.1, 0.05)
    assert evaluation.LINEAR_OFFICIAL_LEARNING_RATES == (0.4, 0.3, 0.2, 0.1, 0.05)
    assert linear_official.preset_budget("imagenet", "paper") == {"epochs": 80, "batch_size": 1024}
    assert linear_official.MAX_VALIDATION_EXAMPLES == 10_009
    # The official code: byol/configs/eval.py's base rate 0.2 over 80 epochs of its
    # TRAIN_AND_VALID split, at the main loop's batch of 4096.
    assert linear_official.OFFICIAL_LEARNING_RATE == 0.2
    budget = linear_official.preset_budget("imagenet", "official")
    assert budget == {"epochs": 80, "batch_size": 4096}
    assert linear_official.preset_budget("small", "paper") == {"epochs": 10, "batch_size": None}
    with pytest.raises(ValueError, match="preset must be one of"):
        linear_official.preset_budget("cifar", "paper")


def _data(n, num_classes, size=8, seed=0):
    rng = np.random.default_rng(seed)
    labels = (np.arange(n) % num_classes).astype("int32")
    images = rng.uniform(0, 1, (n, size, size, 3)).astype("float32")
    return images, labels


def _mean_colour_encoder(size=8):
    inputs = keras.Input((size, size, 3))
    return keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(inputs))


def _evaluate(n, num_classes, learning_rates=(0.1,), **kwargs):
    images, labels = _data(n, num_classes)
    train = tf.data.Dataset.from_tensor_slices((images, labels)).batch(16)
    test = tf.data.Dataset.from_tensor_slices((images[:8], labels[:8])).batch(8)
    info = SourceInfo(n, num_classes, None, mean=(0.5,) * 3, std=(0.25,) * 3)
    return evaluation.linear_eval_official(
        _mean_colour_encoder(), train, test, info,
        epochs=1, batch_size=16, learning_rates=learning_rates, **kwargs,
    )  # fmt: skip


@pytest.mark.parametrize(
    "n, num_classes, kwargs, held_out",
    [
        (30, 10, {}, 10),  # one per class: a third, though 0.1 was asked
        (120, 4, {"max_validation_examples": 8}, 8),  # the cap (ImageNet's 10,009)
    ],
)
def test_reported_validation_fraction_is_the_share_held_out(n, num_classes, kwargs, held_out):
    result = _evaluate(n, num_classes, validation_fraction=0.1, **kwargs)
    assert (result["num_train"], result["num_validation"]) == (n, held_out)
    assert result["num_fit"] == n - held_out
    assert result["validation_fraction"] == pytest.approx(held_out / n)
    assert result["requested_validation_fraction"] == 0.1


def test_official_selection_reports_nothing_held_out():
    result = _evaluate(40, 4, selection="official", learning_rates=None)
    assert (result["num_validation"], result["validation_fraction"]) == (0, 0.0)
    assert result["requested_validation_fraction"] is None
    assert result["learning_rate"] == 0.2
