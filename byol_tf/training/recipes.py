"""Optimisation recipes chosen by budget: the paper's presets, the small-data one, a short one.

A recipe fixes what the budget decides: the optimiser and its learning-rate schedule, weight
decay, the target decay τ and its schedule, and the paper-parity choices (residual γ, bias-free
head outputs, the official crop sampler, initialisation and blur padding). `select` names the
recipe for a run; `for_budget` builds what `BYOL.compile` and `fit` take:

    plan = byol_tf.training.recipes.for_budget(total_steps=1_000, batch_size=64, num_examples=6_000)
    model.compile(optimizer=plan.optimizer)
    model.fit(views, epochs=..., callbacks=[plan.target_ema])

Recipes (docs/algorithm.md §4 gives their sources and docs/recipes.md the measurements behind
`auto`):

* `paper`: the paper's setting, with the official presets by number of epochs
  (`byol/configs/byol.py` of the official code, ImageNet, batch 4096): LARS with η 1e-3, 10
  warm-up epochs, cosine decay, τ from the preset to 1 (cosine), γ = 1 in every BatchNorm (the
  official README's "Note on batch normalization": the paper's results were obtained so), no
  bias on the heads' last layer, Haiku's initialisation (`networks.HaikuTruncatedNormal`, heads
  and probe included), the official one-draw crop sampler and zero-padded blur.
* `official_code`: `paper` with the official code's default instead: the γ of the last BatchNorm
  of each residual block starts at 0 (Goyal et al.'s initialisation, which the official README
  says trains more stably and slightly harms the largest networks).
* `small_data`: the CIFAR-10 ResNet-18 recipe (solo-learn's BYOL config): LARS lr 1.0, weight
  decay 1e-5, η 0.02, 10 warm-up epochs, τ 0.99 → 1.
* `short`: for runs of a few thousand steps or fewer: AdamW at a constant rate with a constant
  τ; the cosine τ schedule and LARS's warm-up are made for hundreds of epochs.
* `auto`: `short` below `SHORT_BUDGET_STEPS` optimiser steps; above it `paper` for data sets
  of ImageNet's order (`LARGE_DATA_EXAMPLES` images or more), `small_data` otherwise.
"""

import dataclasses
import math
from typing import Any

from byol_tf.settings.choices import RECIPE_NAMES
from byol_tf.settings.train_config import TrainConfig

# The official presets (byol/configs/byol.py): epochs -> (learning rate per 256 images, weight
# decay, base τ). The paper trains 1000 epochs (Grill et al. 2020, appendix C).
PAPER_PRESETS = {
    40: (0.45, 1e-6, 0.97),
    100: (0.45, 1e-6, 0.99),
    300: (0.3, 1e-6, 0.99),
    1000: (0.2, 1.5e-6, 0.996),
}
# Below this many optimiser steps `auto` takes the short recipe (docs/recipes.md).
SHORT_BUDGET_STEPS = 5_000
# From this many training images on, `auto` takes the paper's (ImageNet-scale) presets.
LARGE_DATA_EXAMPLES = 500_000


@dataclasses.dataclass(frozen=True)
class Recipe:
    """The settings a recipe fixes; the fields are train.py's flags of the same names.

    Attributes:
        name: the recipe (`paper`, `official_code`, `small_data` or `short`).
        source: where its numbers come from, in a few words.
        optimizer: `lars` or `adamw`.
        learning_rate: LARS: base rate per 256 images (the peak rate is `learning_rate × batch /
            256`); AdamW: the rate itself (see `peak_learning_rate`).
        lr_schedule: `cosine` or `constant` after the warm-up.
        warmup_epochs: linear warm-up length, in epochs.
        weight_decay: weight decay (biases and BatchNorm parameters excluded).
        momentum: LARS momentum.
        eta: LARS trust coefficient.
        base_tau: τ at step 0.
        tau_schedule: `cosine` (τ → 1) or `constant`.
        zero_init_residual: zero-initialised γ of the last BatchNorm of each residual block.
        head_output_bias: a bias in the last Dense of projector and predictor.
        crop_sampler: `rejection` or `clamped` (the official one-draw sampler).
        predictor_lr_multiplier: the predictor's learning rate relative to the rest (the
            paper: 1).
        kernel_initializer: the encoder's convolution initialisation, `he_normal` or `haiku`
            (the official code's, which also initialises the heads' and the probe's dense
            layers as `hk.Linear`; with `he_normal` they keep Keras's Glorot uniform).
        blur_padding: how the blur pads, `reflect` or `zero` (the official code's).
    """

    name: str
    source: str
    optimizer: str
    learning_rate: float
    lr_schedule: str
    warmup_epochs: float
    weight_decay: float
    momentum: float
    eta: float
    base_tau: float
    tau_schedule: str
    zero_init_residual: bool
    head_output_bias: bool
    crop_sampler: str
    predictor_lr_multiplier: float = 1.0
    kernel_initializer: str = "he_normal"
    blur_padding: str = "reflect"

    def describe(self) -> str:
        """The recipe in one line: optimiser, rate, schedules, τ and the parity choices."""
        if self.optimizer == "lars":
            optimizer = (
                f"LARS lr {self.learning_rate:g}×B/256 (momentum {self.momentum:g}, "
                f"η {self.eta:g}), wd {self.weight_decay:g}"
            )
        else:
            optimizer = f"AdamW lr {self.learning_rate:g}, wd {self.weight_decay:g}"
        warmup = f"{self.warmup_epochs:g} warm-up epochs + " if self.warmup_epochs else ""
        tau = (
            f"τ {self.base_tau:g} → 1 (cosine)"
            if self.tau_schedule == "cosine"
            else f"τ {self.base_tau:g} (constant)"
        )
        parity = ", ".join(
            text
            for on, text in (
                (self.zero_init_residual, "zero-init residual γ"),
                (not self.head_output_bias, "bias-free head outputs"),
                (self.crop_sampler == "clamped", "clamped crop sampler"),
                (self.kernel_initializer == "haiku", "Haiku initialisation"),
                (self.blur_padding == "zero", "zero-padded blur"),
                (
                    self.predictor_lr_multiplier != 1,
                    f"predictor lr x{self.predictor_lr_multiplier:g}",
                ),
            )
            if on
        )
        return (
            f"{self.name} ({self.source}): {optimizer}, {warmup}{self.lr_schedule} rate, {tau}"
            + (f", {parity}" if parity else "")
        )

    def to_json(self) -> dict[str, Any]:
        """The recipe as a JSON-serialisable dict."""
        return dataclasses.asdict(self)


# The fields of `Recipe` that are train.py settings (all but its name and source).
SETTINGS = tuple(f.name for f in dataclasses.fields(Recipe) if f.name not in ("name", "source"))


def paper(epochs, zero_init_residual=False) -> Recipe:
    """The paper's recipe with the official preset for the number of epochs nearest to
    `epochs` (on a log scale).

    Args:
        epochs: the run's length in epochs (> 0).
        zero_init_residual: False (the paper: γ = 1 in every BatchNorm, official README "Note
            on batch normalization"); True gives `official_code`, the official code's default
            zero-initialised γ of the last BatchNorm of each residual block.
    """
    if not epochs > 0:
        raise ValueError(f"epochs must be positive. Received: epochs={epochs}")
    preset = min(PAPER_PRESETS, key=lambda e: abs(math.log(e) - math.log(epochs)))
    learning_rate, weight_decay, base_tau = PAPER_PRESETS[preset]
    return Recipe(
        name="official_code" if zero_init_residual else "paper",
        source=f"official {preset}-epoch preset",
        optimizer="lars",
        learning_rate=learning_rate,
        lr_schedule="cosine",
        warmup_epochs=10,
        weight_decay=weight_decay,
        momentum=0.9,
        eta=1e-3,
        base_tau=base_tau,
        tau_schedule="cosine",
        zero_init_residual=bool(zero_init_residual),
        head_output_bias=False,
        crop_sampler="clamped",
        # The official network's initialisation (hk.Conv2D's and hk.Linear's default) and blur;
        # neither was measured against byol_tf's own at short budgets, which the other recipes
        # keep (docs/recipes.md).
        kernel_initializer="haiku",
        blur_padding="zero",
    )


def official_code(epochs) -> Recipe:
    """`paper(epochs)` with the official code's zero-initialised residual γ (`official_code`)."""
    return paper(epochs, zero_init_residual=True)


SMALL_DATA = Recipe(
    name="small_data",
    source="solo-learn's CIFAR-10 BYOL config",
    optimizer="lars",
    learning_rate=1.0,
    lr_schedule="cosine",
    warmup_epochs=10,
    weight_decay=1e-5,
    momentum=0.9,
    eta=0.02,
    base_tau=0.99,
    tau_schedule="cosine",
    zero_init_residual=False,
    head_output_bias=True,
    crop_sampler="rejection",
)

SHORT = Recipe(
    name="short",
    source="measured at short budgets, docs/recipes.md",
    optimizer="adamw",
    learning_rate=5e-4,
    lr_schedule="constant",
    warmup_epochs=0,
    weight_decay=1e-5,
    momentum=0.9,
    eta=0.02,
    base_tau=0.98,
    tau_schedule="constant",
    # The official network's zero-initialised residual γ: +3.4 kNN points on the CIFAR-10 proxy,
    # level within noise on the demo's Fashion-MNIST (two seeds; docs/recipes.md).
    zero_init_residual=True,
    head_output_bias=True,
    crop_sampler="rejection",
    predictor_lr_multiplier=10.0,
)


def select(name="auto", *, total_steps, steps_per_epoch, num_examples) -> Recipe:
    """The recipe called `name` for a run of `total_steps` optimiser steps.

    Args:
        name: one of `RECIPE_NAMES`.
        total_steps: optimiser steps of the whole run.
        steps_per_epoch: optimiser steps per epoch (gives the paper preset's epochs).
        num_examples: training images (decides `auto` between `paper` and `small_data`).

    Raises:
        ValueError: for an unknown name or a non-positive count.
    """
    if name not in RECIPE_NAMES:
        raise ValueError(f"recipe must be one of {', '.join(RECIPE_NAMES)}. Received: {name!r}")
    if total_steps < 1 or steps_per_epoch < 1:
        raise ValueError(
            f"total_steps and steps_per_epoch must be positive. Received: {total_steps}, "
            f"{steps_per_epoch}"
        )
    if name == "auto":
        if total_steps < SHORT_BUDGET_STEPS:
            name = "short"
        elif num_examples is not None and num_examples >= LARGE_DATA_EXAMPLES:
            name = "paper"
        else:
            name = "small_data"
    if name in ("paper", "official_code"):
        return paper(total_steps / steps_per_epoch, zero_init_residual=name == "official_code")
    return SMALL_DATA if name == "small_data" else SHORT


def resolve_recipe(cfg, total_steps, steps_per_epoch, num_examples) -> tuple[TrainConfig, Recipe]:
    """`cfg` with each recipe setting it leaves unset (None) taken from its `--recipe`.

    Settings given explicitly always win. Idempotent: a resolved config has nothing unset.

    Args:
        cfg: a `byol_tf.settings.train_config.TrainConfig`.
        total_steps, steps_per_epoch, num_examples: the run's budget (see `select`).

    Returns:
        `(resolved config, recipe)`.
    """
    recipe = select(
        cfg.recipe,
        total_steps=total_steps,
        steps_per_epoch=steps_per_epoch,
        num_examples=num_examples,
    )
    unset = {key: getattr(recipe, key) for key in SETTINGS if getattr(cfg, key) is None}
    return dataclasses.replace(cfg, **unset), recipe


def overridden(cfg, recipe) -> dict[str, Any]:
    """The recipe settings that `cfg` sets to another value than `recipe`: `{name: value}`."""
    return {k: getattr(cfg, k) for k in SETTINGS if getattr(cfg, k) != getattr(recipe, k)}


@dataclasses.dataclass(frozen=True)
class Plan:
    """What `compile` and `fit` take for a recipe.

    Attributes:
        recipe: the `Recipe`.
        optimizer: a `byol_tf.core.optimizers.LARS` or `byol_tf.core.optimizers.AdamW` on the
            recipe's schedule.
        learning_rate: the `LearningRateSchedule` (peak: `peak_learning_rate`).
        target_ema: the `TargetEMA` callback with the recipe's τ and schedule.
    """

    recipe: Recipe
    optimizer: object
    learning_rate: object
    target_ema: object


def peak_learning_rate(optimizer, learning_rate, batch_size) -> float:
    """The peak rate: `learning_rate × batch_size / 256` for LARS (the paper's linear scaling
    rule), `learning_rate` itself for AdamW (the best Adam rate measured here was the same,
    1e-3, at batch 64 and 256; docs/recipes.md)."""
    return learning_rate * batch_size / 256 if optimizer == "lars" else learning_rate


def build(recipe, total_steps, steps_per_epoch, batch_size, **optimizer_kwargs) -> Plan:
    """The optimiser, rate schedule and `TargetEMA` of `recipe` for a run.

    Args:
        recipe: a `Recipe` (or any object with its optimisation fields, e.g. a resolved
            `TrainConfig`).
        total_steps: optimiser steps of the whole run.
        steps_per_epoch: optimiser steps per epoch (the warm-up is given in epochs).
        batch_size: global batch size (LARS's peak rate is `learning_rate × batch_size / 256`).
        **optimizer_kwargs: passed to the optimiser (e.g. `gradient_accumulation_steps`).

    Returns:
        A `Plan`.
    """
    from byol_tf.core.optimizers import LARS, AdamW, predictor_multiplier
    from byol_tf.core.schedules import PerUpdate, WarmupConstant, WarmupCosine
    from byol_tf.training.callbacks import TargetEMA

    peak = peak_learning_rate(recipe.optimizer, recipe.learning_rate, batch_size)
    warmup = min(int(round(recipe.warmup_epochs * steps_per_epoch)), total_steps)
    if recipe.lr_schedule == "constant":
        schedule = WarmupConstant(peak, warmup)
    else:
        schedule = WarmupCosine(peak, total_steps, warmup)
    accumulation = optimizer_kwargs.get("gradient_accumulation_steps", 1) or 1
    if accumulation > 1:
        schedule = PerUpdate(schedule, accumulation)
    # Biases and BatchNorm parameters (rank <= 1) are excluded from weight decay by both
    # optimisers (the paper's exclusion).
    multipliers = predictor_multiplier(recipe.predictor_lr_multiplier)
    if recipe.optimizer == "adamw":
        optimizer = AdamW(
            schedule,
            weight_decay=recipe.weight_decay,
            learning_rate_multipliers=multipliers,
            **optimizer_kwargs,
        )
    else:
        optimizer = LARS(
            schedule,
            momentum=recipe.momentum,
            weight_decay=recipe.weight_decay,
            eta=recipe.eta,
            learning_rate_multipliers=multipliers,
            **optimizer_kwargs,
        )
    ema = TargetEMA(recipe.base_tau, total_steps=total_steps, schedule=recipe.tau_schedule)
    return Plan(recipe=recipe, optimizer=optimizer, learning_rate=schedule, target_ema=ema)


def for_budget(
    total_steps,
    batch_size,
    num_examples,
    recipe="auto",
    steps_per_epoch=None,
    **optimizer_kwargs,
) -> Plan:
    """The optimiser, schedule and `TargetEMA` of the recipe for a budget (see `select`).

    Args:
        total_steps: optimiser steps of the whole run.
        batch_size: global batch size.
        num_examples: training images.
        recipe: one of `RECIPE_NAMES` (default `auto`).
        steps_per_epoch: default `num_examples // batch_size`.
        **optimizer_kwargs: as in `build`.

    Returns:
        A `Plan` (`.optimizer` for `compile`, `.target_ema` for `fit`'s callbacks, `.recipe`).
    """
    steps_per_epoch = steps_per_epoch or max(num_examples // batch_size, 1)
    chosen = select(
        recipe, total_steps=total_steps, steps_per_epoch=steps_per_epoch, num_examples=num_examples
    )
    return build(chosen, total_steps, steps_per_epoch, batch_size, **optimizer_kwargs)
