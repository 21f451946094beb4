"""Recipes chosen by budget: the official presets, `auto`'s choices, overrides, the built plan."""

import dataclasses

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import tiny_encoder
from test_training import planned_model

import byol_tf
from byol_tf.settings import train_config
from byol_tf.training import recipes, run_plan


@pytest.mark.parametrize(
    "epochs, expected",
    [
        # byol/configs/byol.py of the official code: lr per 256 images, weight decay, base τ.
        (40, (0.45, 1e-6, 0.97)),
        (100, (0.45, 1e-6, 0.99)),
        (300, (0.3, 1e-6, 0.99)),
        (1000, (0.2, 1.5e-6, 0.996)),
    ],
)
def test_paper_recipe_is_the_official_preset_for_its_epochs(epochs, expected):
    recipe = recipes.paper(epochs)
    assert (recipe.learning_rate, recipe.weight_decay, recipe.base_tau) == expected
    assert (recipe.optimizer, recipe.eta, recipe.momentum) == ("lars", 1e-3, 0.9)
    assert (recipe.warmup_epochs, recipe.lr_schedule, recipe.tau_schedule) == (
        10,
        "cosine",
        "cosine",
    )
    # The paper's network and the official views: γ = 1 (official README, "Note on batch
    # normalization"), bias-free head outputs, the one-draw crop sampler; official_code is the
    # same with the official code's zero-initialised residual γ.
    assert not recipe.zero_init_residual and not recipe.head_output_bias
    assert recipe.crop_sampler == "clamped"
    assert f"official {epochs}-epoch preset" in recipe.describe()
    assert recipes.official_code(epochs) == dataclasses.replace(
        recipe, name="official_code", zero_init_residual=True
    )


@pytest.mark.parametrize("epochs, preset", [(10, 40), (60, 40), (70, 100), (200, 300), (600, 1000)])
def test_paper_recipe_takes_the_nearest_preset_on_a_log_scale(epochs, preset):
    assert recipes.paper(epochs) == recipes.paper(preset)


@pytest.mark.parametrize(
    "total_steps, steps_per_epoch, num_examples, expected",
    [
        (1_116, 93, 6_000, "short"),  # the demo
        (152, 19, 5_000, "short"),  # bench/quality.py's CIFAR-10 subset
        (recipes.SHORT_BUDGET_STEPS - 1, 100, 50_000, "short"),
        (recipes.SHORT_BUDGET_STEPS, 195, 50_000, "small_data"),
        (195_000, 195, 50_000, "small_data"),  # configs/cifar10.flags: 1000 epochs
        (93_800, 313, 1_281_167, "paper"),  # ImageNet, 300 epochs of batch 4096
    ],
)
def test_auto_chooses_by_steps_and_data_set_size(
    total_steps, steps_per_epoch, num_examples, expected
):
    recipe = recipes.select(
        "auto", total_steps=total_steps, steps_per_epoch=steps_per_epoch, num_examples=num_examples
    )
    assert recipe.name == expected


def test_auto_on_imagenet_takes_the_preset_of_the_run_length():
    recipe = recipes.select(
        "auto", total_steps=313 * 300, steps_per_epoch=313, num_examples=1_281_167
    )
    assert recipe == recipes.paper(300)


def test_named_recipes_ignore_the_budget():
    for name, expected in (("short", recipes.SHORT), ("small_data", recipes.SMALL_DATA)):
        chosen = recipes.select(name, total_steps=10**6, steps_per_epoch=10, num_examples=10**7)
        assert chosen == expected
    assert recipes.select(
        "paper", total_steps=50, steps_per_epoch=1, num_examples=10
    ) == recipes.paper(50)


def test_unknown_recipe_names_the_choices():
    with pytest.raises(ValueError, match="recipe must be one of auto, paper"):
        recipes.select("fast", total_steps=10, steps_per_epoch=1, num_examples=10)
    with pytest.raises(ValueError, match="--recipe must be one of auto"):
        train_config.TrainConfig(recipe="fast")


def test_resolve_fills_only_the_unset_settings():
    cfg = train_config.TrainConfig(recipe="paper", learning_rate=0.7, head_output_bias=True)
    resolved, recipe = recipes.resolve_recipe(
        cfg, total_steps=300 * 10, steps_per_epoch=10, num_examples=1
    )
    assert recipe == recipes.paper(300)
    assert resolved.learning_rate == 0.7 and resolved.head_output_bias is True  # explicit wins
    assert (resolved.weight_decay, resolved.base_tau, resolved.eta) == (1e-6, 0.99, 1e-3)
    assert resolved.zero_init_residual is False and resolved.crop_sampler == "clamped"
    assert recipes.overridden(resolved, recipe) == {"learning_rate": 0.7, "head_output_bias": True}
    again, _ = recipes.resolve_recipe(resolved, 3000, 10, 1)
    assert again == resolved  # idempotent
    assert resolved.augment_overrides()["crop_sampler"] == "clamped"


def test_every_recipe_setting_is_a_train_flag_left_unset_by_default():
    fields = {f.name: f for f in dataclasses.fields(train_config.TrainConfig)}
    for name in recipes.SETTINGS:
        assert name in fields and fields[name].default is None, name


def _lr(schedule, step):
    return float(schedule(tf.constant(step, tf.int64)))


def test_built_plan_follows_the_recipe_numbers():
    # 300 epochs of 10 steps at batch 512: peak 0.3 × 512 / 256 = 0.6, 10 warm-up epochs.
    plan = recipes.build(recipes.paper(300), total_steps=3000, steps_per_epoch=10, batch_size=512)
    assert isinstance(plan.optimizer, byol_tf.LARS)
    assert (plan.optimizer.lars_weight_decay, plan.optimizer.eta) == (1e-6, 1e-3)
    assert _lr(plan.learning_rate, 50) == pytest.approx(0.6 * 50 / 100)
    assert _lr(plan.learning_rate, 100) == pytest.approx(0.6)
    reference = 0.6 * 0.5 * (1 + np.cos(np.pi * (2000 - 100) / (3000 - 100)))
    assert _lr(plan.learning_rate, 2000) == pytest.approx(reference, rel=1e-5)
    ema = plan.target_ema
    assert (ema.base_tau, ema.total_steps, ema.schedule) == (0.99, 3000, "cosine")


def test_short_plan_is_adamw_at_a_constant_rate_without_decay_on_biases_and_batchnorm():
    variables = [
        keras.Variable(np.ones((3, 3)), name="kernel"),
        keras.Variable(np.ones(3), name="b"),
    ]
    plan = recipes.for_budget(total_steps=500, batch_size=128, num_examples=6_000)
    assert plan.recipe == recipes.SHORT
    assert isinstance(plan.optimizer, keras.optimizers.AdamW)
    peak = recipes.SHORT.learning_rate  # AdamW: not scaled with the batch
    assert _lr(plan.learning_rate, 0) == pytest.approx(peak)
    assert _lr(plan.learning_rate, 499) == pytest.approx(peak)
    assert (plan.target_ema.base_tau, plan.target_ema.schedule) == (
        recipes.SHORT.base_tau,
        "constant",
    )
    # A zero gradient leaves Adam's moments at 0: the only change is decoupled weight decay.
    plan.optimizer.apply_gradients([(tf.zeros_like(v), v) for v in variables])
    decay = 1 - peak * recipes.SHORT.weight_decay
    np.testing.assert_allclose(variables[0].numpy(), np.full((3, 3), decay), rtol=1e-6)
    np.testing.assert_array_equal(variables[1].numpy(), np.ones(3))


@pytest.mark.parametrize("recipe, last_gamma", [("paper", 1.0), ("official_code", 0.0)])
def test_train_builds_the_paper_networks_from_the_recipe(tmp_path, recipe, last_gamma):
    model, _ = planned_model(tmp_path, 100, recipe=recipe)
    assert isinstance(model.optimizer, byol_tf.LARS)
    assert isinstance(model.optimizer._learning_rate, byol_tf.WarmupCosine)
    last_gammas = [
        layer.gamma.numpy()
        for layer in model.encoder.layers
        if isinstance(layer, keras.layers.BatchNormalization) and layer.name.endswith("_bn2")
    ]
    # paper: γ = 1 everywhere; official_code: the last γ of each block starts at 0.
    assert last_gammas and all(np.all(g == last_gamma) for g in last_gammas)
    for head in (model.projector, model.predictor):
        assert not head.get_layer("output").use_bias
        for name in ("hidden", "output"):  # hk.Linear's initialisation, as the official heads
            initializer = head.get_layer(name).kernel_initializer
            assert isinstance(initializer, byol_tf.core.networks.HaikuTruncatedNormal)


def test_recipe_line_names_the_choice_and_the_overrides():
    cfg = train_config.TrainConfig(learning_rate=2e-3)
    resolved, recipe = recipes.resolve_recipe(
        cfg, total_steps=1116, steps_per_epoch=93, num_examples=6000
    )
    line = run_plan.recipe_line(resolved, recipe, 1116, 6000)
    assert line.startswith("Recipe (--recipe=auto, 1,116 steps, 6,000 images): short (")
    assert line.endswith("overridden by --learning_rate=0.002.")
    assert "\n" not in line


def test_predictor_multiplier_reaches_only_the_predictor():
    recipe = dataclasses.replace(recipes.SHORT, predictor_lr_multiplier=10.0)
    plan = recipes.build(recipe, total_steps=10, steps_per_epoch=5, batch_size=8)
    model = byol_tf.BYOL(tiny_encoder(), projection_dim=8, hidden_dim=16)
    plan.optimizer.build(model.trainable_variables)
    factors = dict(
        zip(map(id, model.trainable_variables), plan.optimizer._rate_factors, strict=True)
    )
    assert {factors[id(v)] for v in model.predictor.trainable_variables} == {10.0}
    others = [v for v in model.trainable_variables
              if all(v is not p for p in model.predictor.trainable_variables)]  # fmt: skip
    assert others and {factors[id(v)] for v in others} == {1.0}


@pytest.mark.parametrize(
    "name, num_examples", [("imagenet", 1_281_167), ("cifar10", 50_000), ("stl10", 105_000)]
)
def test_configs_spell_out_their_recipe_without_overriding_it(name, num_examples):
    import os

    from absl.testing import flagsaver

    from byol_tf.cli import flag_definitions

    flag_definitions.define_flags(train_config.TrainConfig)
    path = os.path.join(os.path.dirname(os.path.dirname(__file__)), "configs", f"{name}.flags")
    with flagsaver.flagsaver():
        flag_definitions.FLAGS(["train.py", f"--flagfile={path}"])
        cfg = flag_definitions.from_flags(flag_definitions.FLAGS)
    steps_per_epoch = num_examples // cfg.batch_size
    resolved, recipe = recipes.resolve_recipe(
        cfg, steps_per_epoch * cfg.epochs, steps_per_epoch, num_examples
    )
    assert recipe.name == ("paper" if name == "imagenet" else "small_data")
    assert recipes.overridden(resolved, recipe) == {}


def test_paper_recipe_takes_the_official_initialisation_and_blur_padding_and_flags_win():
    recipe = recipes.paper(300)
    assert (recipe.kernel_initializer, recipe.blur_padding) == ("haiku", "zero")
    assert "Haiku initialisation" in recipe.describe() and "zero-padded blur" in recipe.describe()
    for other in (recipes.SMALL_DATA, recipes.SHORT):
        assert (other.kernel_initializer, other.blur_padding) == ("he_normal", "reflect")
    cfg = train_config.TrainConfig(recipe="paper", epochs=300, blur_padding="reflect")
    resolved, _ = recipes.resolve_recipe(cfg, 300 * 10, 10, 2560)
    assert resolved.kernel_initializer == "haiku" and resolved.blur_padding == "reflect"
    assert resolved.augment_overrides()["blur_padding"] == "reflect"
