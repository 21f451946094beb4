"""TargetEMA: the cosine τ schedule over the whole run, resume, steps_per_execution; the
per-step values ScalarLogger writes to TensorBoard; the kNN monitor's queries."""

import glob
import math
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import tiny_encoder

import byol_tf
from byol_tf.training import callbacks


class _RecordTau(keras.callbacks.Callback):
    def __init__(self, ema):
        super().__init__()
        self.ema, self.taus = ema, []

    def on_train_batch_end(self, batch, logs=None):
        self.taus.append(self.ema.last_tau)


def _fit(views, epochs=2, steps=3, ema=None, initial_step=0, **compile_kwargs):
    model = byol_tf.BYOL(tiny_encoder(), projection_dim=8, hidden_dim=16)
    model.compile(optimizer=keras.optimizers.SGD(0.05), **compile_kwargs)
    model.optimizer.build(model.trainable_variables)
    model.optimizer.iterations.assign(initial_step)
    ema = ema or byol_tf.TargetEMA(0.9)
    record = _RecordTau(ema)
    data = tf.data.Dataset.from_tensors({"view1": views["view1"], "view2": views["view2"]})
    model.fit(
        data.repeat(), epochs=epochs, steps_per_epoch=steps, verbose=0, callbacks=[ema, record]
    )
    return model, ema, record.taus


def test_tau_follows_cosine_schedule_over_all_epochs_times_steps(views):
    _, ema, taus = _fit(views, epochs=2, steps=3)
    expected = [byol_tf.cosine_tau(k, 6, 0.9) for k in range(6)]
    np.testing.assert_allclose(taus, expected)
    assert ema._steps == 6


def test_resumed_run_continues_the_schedule_from_optimizer_iterations(views):
    _, _, taus = _fit(
        views, epochs=1, steps=3, ema=byol_tf.TargetEMA(0.9, total_steps=6), initial_step=3
    )
    np.testing.assert_allclose(taus, [byol_tf.cosine_tau(k, 6, 0.9) for k in (3, 4, 5)])


def test_steps_per_execution_compounds_the_skipped_updates(views):
    _, ema, taus = _fit(views, epochs=1, steps=4, steps_per_execution=2)
    expected = math.prod(byol_tf.cosine_tau(k, 4, 0.9) for k in (2, 3))
    assert len(taus) == 2
    assert taus[-1] == pytest.approx(expected)


def test_target_equals_numpy_ema_of_online_after_each_callback_step(views):
    model = byol_tf.BYOL(tiny_encoder(), projection_dim=8, hidden_dim=16)
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    pairs = [(t, o) for t, o in model._ema_pairs if o.trainable]
    expected = [t.numpy().copy() for t, _ in pairs]

    class Check(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            nonlocal expected
            tau = byol_tf.cosine_tau(batch, 3, 0.8)
            expected = [
                tau * e + (1 - tau) * o.numpy() for e, (_, o) in zip(expected, pairs, strict=True)
            ]
            for e, (t, _) in zip(expected, pairs, strict=True):
                np.testing.assert_allclose(t.numpy(), e, rtol=1e-5, atol=1e-6)

    data = tf.data.Dataset.from_tensors({"view1": views["view1"], "view2": views["view2"]})
    model.fit(
        data.repeat(), steps_per_epoch=3, verbose=0, callbacks=[byol_tf.TargetEMA(0.8), Check()]
    )


def test_unknown_run_length_gets_a_clear_error(views):
    model = byol_tf.BYOL(tiny_encoder(), projection_dim=8, hidden_dim=16)
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    data = tf.data.Dataset.from_tensors({"view1": views["view1"], "view2": views["view2"]})
    data = data.repeat(2).filter(lambda x: True)  # cardinality unknown
    with pytest.raises(ValueError, match="total_steps"):
        model.fit(data, verbose=0, callbacks=[byol_tf.TargetEMA(0.9)])


def test_constant_schedule_keeps_tau_and_compounds_skipped_updates(views):
    _, _, taus = _fit(views, epochs=2, steps=2, ema=byol_tf.TargetEMA(0.9, schedule="constant"))
    np.testing.assert_allclose(taus, [0.9] * 4)
    ema = byol_tf.TargetEMA(0.9, schedule="constant")
    _, _, taus = _fit(views, epochs=1, steps=4, ema=ema, steps_per_execution=2)
    np.testing.assert_allclose(taus, [0.81, 0.81])


def test_constant_schedule_target_matches_numpy_ema_without_known_run_length(views):
    model = byol_tf.BYOL(tiny_encoder(), projection_dim=8, hidden_dim=16)
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    pairs = [(t, o) for t, o in model._ema_pairs if o.trainable]
    expected = [t.numpy().copy() for t, _ in pairs]

    class Check(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            nonlocal expected
            expected = [
                0.7 * e + 0.3 * o.numpy() for e, (_, o) in zip(expected, pairs, strict=True)
            ]
            for e, (t, _) in zip(expected, pairs, strict=True):
                np.testing.assert_allclose(t.numpy(), e, rtol=1e-5, atol=1e-6)

    data = tf.data.Dataset.from_tensors({"view1": views["view1"], "view2": views["view2"]})
    data = data.repeat(3).filter(lambda x: True)  # cardinality unknown: no K needed
    model.fit(data, verbose=0, callbacks=[byol_tf.TargetEMA(0.7, schedule="constant"), Check()])


@pytest.mark.parametrize("kwargs", [{"base_tau": 1.5}, {"total_steps": 0}, {"schedule": "linear"}])
def test_target_ema_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        byol_tf.TargetEMA(**kwargs)


def _scalars(log_dir):
    """`{tag: {step: value}}` of the scalars in the TensorBoard event files of `log_dir`."""
    found = {}
    for path in glob.glob(os.path.join(log_dir, "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                found.setdefault(value.tag, {})[event.step] = float(tf.make_ndarray(value.tensor))
    return found


def test_tensorboard_logs_the_learning_rate_and_tau_at_the_step_that_used_them(views, tmp_path):
    # Peak 0.1 over K = 4 steps, W = 2 of warm-up: lr(k) = 0.1·k/2 for k < 2, else
    # 0.1·(1 + cos(π(k − 2)/2))/2; τ_k = 1 − 0.1·(cos(πk/4) + 1)/2.
    rates = [0.0, 0.05, 0.1, 0.05]
    taus = [1 - 0.1 * (math.cos(math.pi * k / 4) + 1) / 2 for k in range(4)]
    model = byol_tf.BYOL(tiny_encoder(), projection_dim=8, hidden_dim=16)
    model.compile(optimizer=keras.optimizers.SGD(byol_tf.WarmupCosine(0.1, 4, 2)))
    ema = byol_tf.TargetEMA(0.9, total_steps=4)
    logger = callbacks.ScalarLogger(str(tmp_path), every_steps=1, tau_source=ema)
    data = tf.data.Dataset.from_tensors({"view1": views["view1"], "view2": views["view2"]})
    model.fit(data.repeat(), steps_per_epoch=4, verbose=0, callbacks=[ema, logger])
    scalars = _scalars(str(tmp_path))
    # TensorBoard step s = updates done: the values of the update that made it s (index s - 1).
    assert sorted(scalars["step/learning_rate"]) == sorted(scalars["step/tau"]) == [1, 2, 3, 4]
    logged_rates = [scalars["step/learning_rate"][s] for s in (1, 2, 3, 4)]
    np.testing.assert_allclose(logged_rates, rates, atol=1e-7)
    np.testing.assert_allclose([scalars["step/tau"][s] for s in (1, 2, 3, 4)], taus, rtol=1e-6)


def test_knn_monitor_refuses_its_memory_bank_as_queries():
    bank = tf.data.Dataset.from_tensors((np.zeros([2, 8, 8, 3], np.float32), np.array([0, 1])))
    with pytest.raises(ValueError, match="queries are its memory bank"):
        callbacks.KNNMonitor(bank, bank)


def _fit_without_ema(model, views, **kwargs):
    data = tf.data.Dataset.from_tensors({"view1": views["view1"], "view2": views["view2"]})
    model.fit(data.repeat(), epochs=1, steps_per_epoch=1, verbose=0, **kwargs)


def test_fit_without_target_ema_warns_once_per_model(views):
    model = byol_tf.BYOL(tiny_encoder(), projection_dim=8, hidden_dim=16)
    model.compile(optimizer=keras.optimizers.SGD(0.05))
    with pytest.warns(UserWarning, match="without a byol_tf.TargetEMA callback") as record:
        _fit_without_ema(model, views, callbacks=[keras.callbacks.History()])
        _fit_without_ema(model, views)
    assert sum("TargetEMA" in str(w.message) for w in record) == 1


def test_fit_with_target_ema_does_not_warn(views, recwarn):
    _fit(views, epochs=1, steps=1)
    assert not [w for w in recwarn if "TargetEMA" in str(w.message)]


def test_collapse_guard_stays_silent_on_a_nan_embedding_std():
    printed = []
    guard = callbacks.CollapseGuard(threshold=0.01, patience=1, log=printed.append)
    guard.set_model(keras.Sequential())
    guard.on_epoch_end(0, {"loss": float("nan"), "embedding_std": float("nan")})
    assert printed == [] and guard.stopped_epoch is None
    guard.on_epoch_end(1, {"embedding_std": 0.001})
    assert "collapse suspected at epoch 2" in printed[0] and guard.stopped_epoch == 2


class _StopAfter(keras.callbacks.Callback):
    def __init__(self, steps):
        super().__init__()
        self.steps = steps

    def on_train_batch_end(self, batch, logs=None):
        if batch + 1 == self.steps:
            self.model.stop_training = True


def test_progress_bar_of_a_stopped_epoch_ends_at_the_step_reached(views, capsys):
    model = byol_tf.BYOL(tiny_encoder(), projection_dim=8, hidden_dim=16)
    model.compile(optimizer=keras.optimizers.SGD(0.05))
    data = tf.data.Dataset.from_tensors({"view1": views["view1"], "view2": views["view2"]})
    capsys.readouterr()
    model.fit(
        data.repeat(),
        epochs=1,
        steps_per_epoch=7,
        verbose=2,
        callbacks=[byol_tf.TargetEMA(0.9), _StopAfter(3), callbacks.ProgressBar()],
    )
    out = capsys.readouterr().out
    assert "3/7" in out and "7/7" not in out
