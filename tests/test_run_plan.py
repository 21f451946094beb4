"""The run plan: the warm-up warning, the recipe line, what a plan resolves and records."""

import pytest

from byol_tf.settings.train_config import TrainConfig
from byol_tf.training import recipes, run_plan


@pytest.mark.parametrize(
    "overrides, expected",
    [
        (
            dict(recipe="paper", epochs=1),
            "--warmup_epochs=10 (from --recipe=paper), 100 steps) covers the whole run",
        ),
        (dict(warmup_epochs=5, epochs=1, explicit=("warmup_epochs",)), "--warmup_epochs=5, 50"),
        (dict(warmup_epochs=1, epochs=2), None),
    ],
    ids=["paper_recipe_one_epoch", "warmup_5_epochs_1", "shorter_warmup"],
)
def test_a_warmup_as_long_as_the_run_warns(overrides, expected):
    cfg = TrainConfig(**overrides)
    steps_per_epoch = 10
    total = cfg.epochs * steps_per_epoch
    resolved, _ = recipes.resolve_recipe(cfg, total, steps_per_epoch, 640)
    warning = run_plan.warmup_warning(resolved, steps_per_epoch, total)
    if expected is None:
        assert warning is None
    else:
        assert warning.startswith("warning: the learning-rate warm-up") and expected in warning
        assert "never decays" in warning and "\n" not in warning


def test_the_plan_resolves_the_run_once_and_records_what_it_chose(tmp_path):
    lines = []
    cfg = TrainConfig(
        dataset="demo", epochs=2, batch_size=100, knn_max_examples=512, knn_k=600,
        model_dir=str(tmp_path / "run"),
    )  # fmt: skip
    import tensorflow as tf

    plan = run_plan.make_plan(cfg, tf.distribute.get_strategy(), lines.append)
    assert (plan.steps_per_epoch, plan.total_steps) == (60, 120)  # 6,000 images / 100
    assert plan.recipe.name == "short" and plan.cfg.optimizer == "adamw"  # auto, 120 steps
    assert plan.resume_from is None and plan.saved == {} and plan.probe_classes == 10
    assert plan.knn.bank_size == 512 and plan.knn.k == 512  # --knn_k clamped to the bank
    assert plan.knn.queries.info.num_examples == 1000
    assert lines[0].startswith("Recipe (--recipe=auto, 120 steps, 6,000 images): short")
    assert "--knn_k=600 exceeds the kNN memory bank (512 examples); using 512." in lines[1]
    assert lines[-2] == "Augmentation on the host (--augment_on=host: no GPU or TPU is visible)."
    assert lines[-1].startswith("Train step on TensorFlow's own kernels, without XLA")
    assert plan.cfg.jit_compile is False and plan.run_config()["jit_compile"] is False
    recorded = plan.run_config()
    assert recorded["recipe_chosen"] == "short" and recorded["total_steps"] == 120
    assert recorded["mean"] == [0.286] * 3 and recorded["learning_rate"] == 5e-4
    with pytest.raises(ValueError, match="--batch_size=7000 exceeds the 6000 examples"):
        run_plan.make_plan(
            TrainConfig(dataset="demo", batch_size=7000, model_dir=str(tmp_path / "other")),
            tf.distribute.get_strategy(),
            lines.append,
        )


@pytest.mark.parametrize(
    "explicit, expected",
    [
        (None, "Train step on TensorFlow's own kernels, without XLA (--jit_compile=false: faster"),
        (False, "Train step on TensorFlow's own kernels, without XLA (--jit_compile=false)."),
        (True, "Train step compiled with XLA (--jit_compile=true)."),
    ],
)
def test_an_unset_jit_compile_takes_the_faster_exact_path_on_a_cpu(explicit, expected):
    import tensorflow as tf

    from byol_tf.training import hardware

    assert not tf.config.list_logical_devices("GPU")
    cfg = TrainConfig(jit_compile=explicit)
    resolved, line = run_plan.resolve_jit_compile(cfg, tf.distribute.get_strategy())
    assert resolved.jit_compile is bool(explicit)
    assert line.startswith(expected) and "\n" not in line
    if explicit is None:
        assert line.endswith(f"this one: {hardware.cpu_model()}).")
