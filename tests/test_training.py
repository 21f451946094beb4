"""Training-run pieces: resume segments, model_dir checks, guards and checkpoints."""

import math
import os
import random

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import tiny_encoder

import byol_tf
from byol_tf.runs import checkpoints
from byol_tf.runs.run_folder import prepare_model_dir
from byol_tf.settings import train_config
from byol_tf.training import recipes, run_plan, train_run
from byol_tf.training.callbacks import Checkpointer, CollapseGuard, NaNGuard


def planned_model(model_dir, total_steps, steps_per_epoch=10, **values):
    """The model (and `TargetEMA`) `train` would build for a tiny run on the demo data of
    `total_steps` optimiser steps, from the `TrainConfig` fields `values`."""
    cfg = train_config.TrainConfig(
        dataset="demo",
        image_size=16,
        width_multiplier=0.125,
        projection_dim=8,
        hidden_dim=16,
        steps_per_epoch=steps_per_epoch,
        epochs=total_steps // steps_per_epoch,
        knn_every_epochs=0,
        model_dir=str(model_dir),
        **values,
    )
    strategy = tf.distribute.get_strategy()
    return run_plan.build_model(run_plan.make_plan(cfg, strategy, log=lambda line: None), strategy)


@pytest.mark.parametrize(
    "start, expected",
    [
        (0, [(0, 5)]),
        (5, [(1, 5)]),
        (7, [(1, 3), (2, 5)]),
        (14, [(2, 1)]),
        (15, []),
    ],
)
def test_resume_segments_finish_the_run_exactly(start, expected):
    # A full-epoch segment runs fit from its epoch to the last one; a partial one, one epoch.
    segments = list(train_run._segments(start, 5, 3))
    assert segments == expected
    covered = sum((3 - epoch) * 5 if steps == 5 else steps for epoch, steps in segments)
    assert start + covered == 15


def test_model_dir_that_is_a_file_is_refused(tmp_path):
    path = tmp_path / "file"
    path.write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        prepare_model_dir(str(path))


def test_unwritable_model_dir_is_refused_before_training(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        if os.access(folder, os.W_OK):
            pytest.skip("running as a user who can write anywhere (root)")
        with pytest.raises(ValueError, match="not writable"):
            prepare_model_dir(str(folder / "run"))
    finally:
        folder.chmod(0o700)


def test_adamw_with_constant_rate_decays_kernels_but_not_biases_or_batchnorm(tmp_path):
    model, _ = planned_model(
        tmp_path,
        100,
        optimizer="adamw",
        lr_schedule="constant",
        learning_rate=0.5,
        batch_size=256,
        warmup_epochs=0,
        weight_decay=0.1,
    )
    assert isinstance(model.optimizer, keras.optimizers.AdamW)
    assert float(model.optimizer.learning_rate) == pytest.approx(0.5)  # constant, no warm-up
    variables = model.trainable_variables
    before = [v.numpy().copy() for v in variables]
    # A zero gradient leaves Adam's moments at 0: the only change is decoupled weight decay.
    model.optimizer.apply_gradients([(tf.zeros_like(v), v) for v in variables])
    decayed = 0
    for old, v in zip(before, variables, strict=True):
        if v.shape.rank <= 1:
            np.testing.assert_array_equal(v.numpy(), old, err_msg=v.path)
        else:
            np.testing.assert_allclose(v.numpy(), old * (1 - 0.5 * 0.1), rtol=1e-6, atol=1e-7)
            decayed += 1
    assert decayed >= 20  # convolution and dense kernels
    assert float(model.optimizer.learning_rate) == pytest.approx(0.5)  # still, after a step


@pytest.mark.parametrize(
    "total_steps, optimizer, schedule",
    [
        (100, keras.optimizers.AdamW, byol_tf.WarmupConstant),  # auto: the short recipe
        (recipes.SHORT_BUDGET_STEPS, byol_tf.LARS, byol_tf.WarmupCosine),  # auto: small data
    ],
)
def test_default_recipe_follows_the_budget(tmp_path, total_steps, optimizer, schedule):
    model, _ = planned_model(tmp_path, total_steps)
    assert isinstance(model.optimizer, optimizer)
    assert isinstance(model.optimizer._learning_rate, schedule)


def _compiled_model():
    model = byol_tf.BYOL(tiny_encoder(), projection_dim=8, hidden_dim=16)
    model.compile(optimizer=byol_tf.LARS(0.1))
    model.optimizer.build(model.trainable_variables)
    return model


def test_checkpoints_are_atomic_and_pruned(tmp_path, views):
    model = _compiled_model()
    for step in (1, 2, 3, 4):
        model.optimizer.iterations.assign(step)
        checkpoints.save_checkpoint(model, str(tmp_path), step, keep=2)
    # A crash during a save leaves only a temporary file, which is never taken as the latest.
    (tmp_path / "checkpoints" / ".ckpt-00000005.tmp.keras").write_bytes(b"partial")
    assert [s for s, _ in checkpoints.list_checkpoints(str(tmp_path))] == [3, 4]
    latest = checkpoints.latest_checkpoint(str(tmp_path))
    loaded = checkpoints.load_checkpoint(latest)
    assert int(loaded.optimizer.iterations.numpy()) == 4
    np.testing.assert_array_equal(loaded.encoder(views["view1"]), model.encoder(views["view1"]))


def test_unreadable_checkpoint_gets_an_error_naming_the_file(tmp_path):
    bad = tmp_path / "ckpt-00000001.keras"
    bad.write_bytes(b"not a zip file")
    with pytest.raises(ValueError, match="ckpt-00000001.keras"):
        checkpoints.load_checkpoint(str(bad))


def test_checkpointer_never_saves_a_non_finite_loss(tmp_path):
    model = _compiled_model()
    saver = Checkpointer(str(tmp_path), every_steps=1)
    saver.set_model(model)
    saver.on_train_begin()
    model.optimizer.iterations.assign(1)
    saver.on_train_batch_end(0, {"loss": float("nan")})
    assert checkpoints.list_checkpoints(str(tmp_path)) == []
    saver.on_train_batch_end(0, {"loss": 1.0})
    assert [s for s, _ in checkpoints.list_checkpoints(str(tmp_path))] == [1]


def test_nan_guard_stops_at_the_first_non_finite_loss(views):
    model = byol_tf.BYOL(tiny_encoder(), projection_dim=8, hidden_dim=16)
    model.compile(optimizer=keras.optimizers.SGD(1e30))  # diverges at once
    guard = NaNGuard()
    data = tf.data.Dataset.from_tensors({"view1": views["view1"], "view2": views["view2"]})
    model.fit(data.repeat(), steps_per_epoch=20, verbose=0, callbacks=[guard])
    assert guard.failed_step is not None and guard.failed_step < 20


def test_collapse_guard_warns_then_stops_after_patience():
    messages = []
    guard = CollapseGuard(threshold=0.01, patience=2, log=messages.append)
    model = _compiled_model()
    guard.set_model(model)
    guard.on_epoch_end(0, {"embedding_std": 0.001})
    assert len(messages) == 1 and "collapse" in messages[0] and not model.stop_training
    guard.on_epoch_end(1, {"embedding_std": 0.05})
    guard.on_epoch_end(2, {"embedding_std": 0.002})
    guard.on_epoch_end(3, {"embedding_std": 0.003})
    assert model.stop_training and guard.stopped_epoch == 4


def test_collapsed_network_has_near_zero_embedding_std():
    z = np.ones((16, 8), "float32") + 1e-9
    assert math.isclose(float(byol_tf.core.losses.embedding_std(z)), 0.0, abs_tol=1e-6)


def _tiny_resnet(depth, width_multiplier, cifar_stem, input_shape, name=None, **_):
    """Stands in for `networks.resnet` so that a whole `train` call takes seconds."""
    return tiny_encoder(input_shape[0], name=name)


def test_a_run_resolves_each_split_once_builds_one_target_ema_and_keeps_its_config_close(
    tmp_path, monkeypatch
):
    """One `train` call, kNN monitor and baselines on: the plan is built once."""
    import sys

    from byol_tf.core import networks
    from byol_tf.data import sources
    from byol_tf.training import callbacks

    monkeypatch.setattr(networks, "resnet", _tiny_resnet)
    resolved, emas = [], []
    demo = sources.demo
    monkeypatch.setattr(
        sources, "demo", lambda split, *a: resolved.append(split) or demo(split, *a)
    )
    ema_init = callbacks.TargetEMA.__init__

    def counted(self, *args, **kwargs):
        emas.append(self)
        ema_init(self, *args, **kwargs)

    monkeypatch.setattr(callbacks.TargetEMA, "__init__", counted)
    # The modules whose functions receive the run's config or its plan, followed from `train`.
    reached = set()

    def profile(frame, event, arg):
        module = frame.f_globals.get("__name__", "")
        if event == "call" and module.startswith("byol_tf"):
            if any(
                isinstance(v, (train_config.TrainConfig, run_plan.RunPlan))
                for v in frame.f_locals.values()
            ):
                reached.add(module)

    cfg = train_config.TrainConfig(
        dataset="demo", image_size=8, projection_dim=8, hidden_dim=16, batch_size=16, epochs=2,
        steps_per_epoch=2, knn_every_epochs=1, knn_max_examples=256, demo_baseline=True,
        model_dir=str(tmp_path / "run"),
    )  # fmt: skip
    random.seed(5)
    numpy_before, python_before = np.random.get_state()[1].copy(), random.getstate()
    sys.setprofile(profile)
    try:
        summary = train_run.train(cfg, log=lambda line: None)
    finally:
        sys.setprofile(None)
    # The run set its own seed and gave the process its random state back.
    assert random.getstate() == python_before
    assert (np.random.get_state()[1] == numpy_before).all()
    assert summary["steps"] == 4 and "knn_top1_random_init" in summary
    assert sorted(resolved) == ["test", "train"]  # the train split once, the queries once
    assert len(emas) == 1
    print("config reaches", len(reached), "modules:", sorted(reached))
    assert len(reached) <= 12, sorted(reached)
    assert {"byol_tf.training.train_run", "byol_tf.training.run_plan"} <= reached
