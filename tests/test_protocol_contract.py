"""The protocol contract (tests/contracts.py) on byol_tf's evaluation protocols (kNN, the
linear probe on features, the paper's linear protocol, fine-tuning), and on fakes that break
one check each, so that each check is seen to fail."""

import dataclasses

import keras
import numpy as np
import pytest
from contracts import (
    check_protocol_refuses_class_count,
    check_protocol_refuses_label_length,
    check_protocol_scores,
    check_protocol_seed,
    protocol_contract,
)

from byol_tf import data, evaluation

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


def knn(train, test, num_classes, seed):
    del seed  # deterministic
    return evaluation.knn_classify(*train, *test, k=5, num_classes=num_classes)


def linear(train, test, num_classes, seed):
    return evaluation.linear_eval(
        *train, *test, num_classes, learning_rates=(0.1,), l2_values=(0.0,), epochs=5,
        batch_size=16, seed=seed,
    )  # fmt: skip


def colour_encoder():
    """BatchNorm then global average pooling: the (normalised) mean colour, separable."""
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.BatchNormalization(name="bn")(inputs)
    return keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x), name="colour")


def _sources(train, test, num_classes):
    """Array sources of the splits; `num_classes`, the training split's class count."""
    train_source = data.source(train, mean=MEAN, std=STD)
    info = dataclasses.replace(train_source.info, num_classes=num_classes)
    test_source = data.source(test, "test", mean=MEAN, std=STD)
    return dataclasses.replace(train_source, info=info), test_source


def linear_official(train, test, num_classes, seed):
    train_source, test_source = _sources(train, test, num_classes)
    images, info = data.whole_images(train_source)
    return evaluation.linear_eval_official(
        colour_encoder(), images, data.eval_dataset(test_source, 8, 8, official_crop=True), info,
        learning_rates=(2.0,), epochs=8, batch_size=16, seed=seed,
    )  # fmt: skip


def finetune(train, test, num_classes, seed):
    train_source, test_source = _sources(train, test, num_classes)
    return evaluation.finetune(
        colour_encoder(), data.eval_dataset(train_source, 16, 8),
        data.eval_dataset(test_source, 16, 8), num_classes, epochs=3, learning_rate=0.1,
        batch_size=16, seed=seed,
    )  # fmt: skip


# name: (run_protocol, inputs, argument names a wrong label length may give, top-1 bound)
PROTOCOLS = {
    "knn_classify": (knn, "features", ("test_labels",), 1.0),
    "linear_eval": (linear, "features", ("test_labels",), 1.0),
    # Images with labels of another length are refused by the data API (`data.source`).
    "linear_eval_official": (linear_official, "images", ("y",), 0.9),
    "finetune": (finetune, "images", ("y",), 0.9),
}


@pytest.mark.parametrize(
    "run, inputs, label_names, min_top1", list(PROTOCOLS.values()), ids=list(PROTOCOLS)
)
def test_protocol_contract(run, inputs, label_names, min_top1):
    protocol_contract(run, inputs, label_names, min_top1)


# --- each check can fail ----------------------------------------------------------------------


def test_scores_check_fails_on_top1_above_top5_and_on_chance_level():
    with pytest.raises(AssertionError, match="scores: top1=1.0, top5=0.5"):
        check_protocol_scores(lambda *args: {"top1": 1.0, "top5": 0.5}, "features")

    def shuffled_labels(train, test, num_classes, seed):
        x, y = train
        return knn((x, np.random.default_rng(0).permutation(y)), test, num_classes, seed)

    with pytest.raises(AssertionError, match="on separable data"):
        check_protocol_scores(shuffled_labels, "features")


def test_seed_check_fails_on_a_protocol_ignoring_its_seed():
    def unseeded(train, test, num_classes, seed):
        return {"top1": float(np.random.default_rng().uniform()), "top5": 1.0}

    with pytest.raises(AssertionError, match="seed: "):
        check_protocol_seed(unseeded, "features")


def test_refusal_checks_fail_on_a_protocol_that_accepts_or_explains_at_length():
    def truncating(train, test, num_classes, seed):
        (x, y), n = test, min(len(test[0]), len(test[1]))
        return knn(train, (x[:n], y[:n]), None, seed)

    with pytest.raises(AssertionError, match="label length: accepted"):
        check_protocol_refuses_label_length(truncating, "features", ("test_labels",))
    with pytest.raises(AssertionError, match="class count: accepted"):
        check_protocol_refuses_class_count(truncating, "features")

    def long_winded(train, test, num_classes, seed):
        raise ValueError("Something went wrong.\nnum_classes must be 3")

    with pytest.raises(AssertionError, match="not one line"):
        check_protocol_refuses_class_count(long_winded, "features")

    def vague(train, test, num_classes, seed):
        raise ValueError("bad input")

    with pytest.raises(AssertionError, match="names none of"):
        check_protocol_refuses_label_length(vague, "features", ("test_labels",))
