"""The callback contract (tests/contracts.py) on every public callback of
byol_tf.training.callbacks (and the few-label kNN monitor), and on fakes that break one check
each, so that each check is seen to fail."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from contracts import callback_contract, check_callback_in_fit, check_callback_logs_none

import byol_tf
from byol_tf.training import callbacks, monitoring


def _labelled(seed):
    rng = np.random.default_rng(seed)
    images = rng.normal(size=(12, 8, 8, 3)).astype("float32")
    return tf.data.Dataset.from_tensor_slices((images, np.arange(12) % 3)).batch(6)


def _checkpointer(folder):
    return callbacks.Checkpointer(str(folder / "run"), every_steps=1, keep=2)


# name: (make_callback(folder), moves_target)
CALLBACKS = {
    "TargetEMA": (lambda folder: byol_tf.TargetEMA(0.9, total_steps=4), True),
    "Checkpointer": (_checkpointer, False),
    "NaNGuard": (lambda folder: callbacks.NaNGuard(), False),
    "CollapseGuard": (
        lambda folder: callbacks.CollapseGuard(threshold=10.0, patience=5, log=lambda line: None),
        False,
    ),
    "GracefulStop": (lambda folder: callbacks.GracefulStop(_checkpointer(folder)), False),
    "ScalarLogger": (
        lambda folder: callbacks.ScalarLogger(str(folder / "tb"), every_steps=1), False
    ),
    "ProgressBar": (lambda folder: callbacks.ProgressBar(), False),
    "KNNMonitor": (lambda folder: callbacks.KNNMonitor(_labelled(0), _labelled(1), k=3), False),
    "FewLabelKNNMonitor": (
        lambda folder: monitoring.FewLabelKNNMonitor(
            _labelled(0), _labelled(1), k=3, labels_per_class=2, draws=2
        ),
        False,
    ),
}


@pytest.mark.parametrize("make, moves_target", list(CALLBACKS.values()), ids=list(CALLBACKS))
def test_callback_contract(make, moves_target, tmp_path):
    callback_contract(make, tmp_path, moves_target)


# --- each check can fail ----------------------------------------------------------------------


class _NudgesTheEncoder(keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        variable = self.model.encoder.trainable_variables[0]
        variable.assign(variable + 0.01)


class _CopiesToTheTarget(keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        self.model.update_target(0.5)


class _OnlyOnce(keras.callbacks.Callback):
    """Breaks on a second `fit`, as a callback holding state of one run might."""

    started = False

    def on_train_begin(self, logs=None):
        assert not self.started, "fit called twice"
        self.started = True


class _SlowsTheOptimizer(keras.callbacks.Callback):
    """Changes no weight in its hooks, but the learning rate of the steps to come."""

    def on_train_begin(self, logs=None):
        self.model.optimizer.learning_rate.assign(0.01)


class _ReadsTheLoss(keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        self.last_loss = float(logs["loss"])


def test_fit_check_fails_on_a_callback_that_changes_the_online_weights(tmp_path):
    with pytest.raises(AssertionError, match="on_train_batch_end changed the online network"):
        check_callback_in_fit(lambda folder: _NudgesTheEncoder(), tmp_path)


def test_fit_check_fails_on_a_callback_that_changes_the_training(tmp_path):
    with pytest.raises(AssertionError, match="differ from a run without the callback"):
        check_callback_in_fit(lambda folder: _SlowsTheOptimizer(), tmp_path)


def test_fit_check_fails_on_a_target_moved_or_left_against_the_declaration(tmp_path):
    with pytest.raises(AssertionError, match="on_train_batch_end moved the target"):
        check_callback_in_fit(lambda folder: _CopiesToTheTarget(), tmp_path)
    with pytest.raises(AssertionError, match="meant to move the target left it"):
        check_callback_in_fit(lambda folder: callbacks.NaNGuard(), tmp_path, moves_target=True)


def test_fit_check_fails_on_a_callback_that_breaks_on_a_second_fit(tmp_path):
    with pytest.raises(AssertionError, match="fit called twice"):
        check_callback_in_fit(lambda folder: _OnlyOnce(), tmp_path)


def test_logs_none_check_fails_on_a_hook_that_indexes_its_logs(tmp_path):
    _, callback = check_callback_in_fit(lambda folder: _ReadsTheLoss(), tmp_path)
    with pytest.raises(AssertionError, match="logs=None: on_train_batch_end raised TypeError"):
        check_callback_logs_none(callback)
