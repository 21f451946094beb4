"""A run's plan: everything a pretraining run needs, resolved once from its `TrainConfig`.

`make_plan` resolves the data source, the steps, the recipe, the kNN monitor, the checkpoint
to resume from and where the augmentation runs, prints what it chose, and returns a frozen
`RunPlan`; `byol_tf.training.train_run` then builds the model and the input stream from the
plan alone.
"""

import dataclasses
import os
from collections.abc import Callable
from typing import Any

import keras
import tensorflow as tf

from byol_tf.core import networks
from byol_tf.core.model import BYOL
from byol_tf.data import pipelines, sources
from byol_tf.data.source_kinds import SourceInfo
from byol_tf.runs import checkpoints
from byol_tf.runs.run_folder import check_resume, resume_config
from byol_tf.settings.train_config import TrainConfig
from byol_tf.training import hardware, monitoring, recipes
from byol_tf.training.callbacks import TargetEMA
from byol_tf.views.device_augment import ViewAugmentation, default_augment_on


@dataclasses.dataclass(frozen=True)
class RunPlan:
    """What one pretraining run does, decided before its first step.

    Attributes:
        cfg: the `TrainConfig`, with the recipe's settings filled in (`recipes.resolve_recipe`) and
            `augment_on` chosen (`resolve_augment_on`).
        recipe: the chosen `byol_tf.training.recipes.Recipe`.
        source: the training split, resolved (a `byol_tf.data.sources` `Source`).
        steps_per_epoch: optimiser steps per epoch.
        total_steps: optimiser steps of the whole run.
        knn: the kNN monitor's `byol_tf.training.monitoring.KNNPlan`, or None when it is off.
        resume_from: the newest readable checkpoint of `--model_dir`, or None for a new run.
        saved: the run_config.json of the run resumed ({} for a new run).
    """

    cfg: object
    recipe: object
    source: object
    steps_per_epoch: int
    total_steps: int
    knn: object
    resume_from: str | None
    saved: dict

    @property
    def info(self) -> SourceInfo:
        """The training split's `SourceInfo` (size, classes, mean and std)."""
        return self.source.info

    @property
    def probe_classes(self) -> int | None:
        """The online probe's classes: the split's, when it has 2 or more; else None (no probe)."""
        classes = self.info.num_classes or 0
        return classes if classes >= 2 else None

    def run_config(self) -> dict[str, Any]:
        """The run's run_config.json: its settings and what was resolved from them."""
        return dict(
            self.cfg.to_json(),
            mean=list(self.info.mean),
            std=list(self.info.std),
            num_classes=self.info.num_classes,
            steps_per_epoch=self.steps_per_epoch,
            total_steps=self.total_steps,
            recipe_chosen=self.recipe.name,
            recipe_overrides=sorted(recipes.overridden(self.cfg, self.recipe)),
        )


def make_plan(cfg, strategy, log) -> RunPlan:
    """Resolves `cfg` into the run's `RunPlan`, printing each choice in one line through `log`.

    Raises:
        ValueError: for a configuration or data the run cannot use, naming the flag, file or
            folder; for a resume whose architecture differs from the run's.
    """
    _check_replicas(cfg, strategy)
    check_head_memory(cfg)
    source = sources.source(
        cfg.dataset, cfg.train_split, data_dir=cfg.data_dir, manual_dir=cfg.manual_dir
    )
    num_examples = source.info.num_examples
    if num_examples is not None and cfg.batch_size > num_examples:  # else no batch, ever
        raise ValueError(
            f"--batch_size={cfg.batch_size} exceeds the {num_examples} examples of "
            f"--dataset={cfg.dataset} (--train_split={cfg.train_split}): pass a --batch_size "
            f"of at most {num_examples}."
        )
    steps_per_epoch = cfg.steps_per_epoch or num_examples // cfg.batch_size
    total_steps = cfg.epochs * steps_per_epoch
    cfg, recipe = recipes.resolve_recipe(cfg, total_steps, steps_per_epoch, num_examples)
    log(recipe_line(cfg, recipe, total_steps, num_examples))
    warning = warmup_warning(cfg, steps_per_epoch, total_steps)
    if warning:
        log(warning)
    knn = monitoring.knn_plan(cfg, source, log)
    resume_from = checkpoints.latest_readable(cfg.model_dir, log)  # names damaged ones
    saved = resume_config(cfg.model_dir, log) if resume_from else {}
    if resume_from:
        check_resume(cfg, cfg.model_dir, saved)
        _check_classes(cfg, saved, source.info.num_classes)
        if cfg.init_from:
            log(_init_from_note(cfg, saved.get("init_from")))
    elif cfg.init_from:
        check_init_from(cfg.init_from, log)
    cfg, line = resolve_augment_on(cfg, saved, strategy)
    log(line)
    cfg, line = resolve_jit_compile(cfg, strategy)
    log(line)
    return RunPlan(cfg, recipe, source, steps_per_epoch, total_steps, knn, resume_from, saved)


def _probe_outputs(num_classes):
    """The online probe's outputs for a split of `num_classes` (None: no probe)."""
    return num_classes if (num_classes or 0) >= 2 else None


def _check_classes(cfg, saved, num_classes):
    """Refuses to resume on a data set whose classes do not fit the run's online probe."""
    if "num_classes" not in saved:
        return
    before, now = _probe_outputs(saved["num_classes"]), _probe_outputs(num_classes)
    if before != now:

        def classes(count):
            return f"{count} classes" if count else "no labels (no online probe)"

        raise ValueError(
            f"--dataset={cfg.dataset} has {classes(now)}, but the run in {cfg.model_dir} was "
            f"trained on --dataset={saved.get('dataset')} with {classes(before)}: its online "
            "probe cannot be resumed on it. Pass the run's --dataset, or another --model_dir "
            "to start a run on this one. The checkpoint was not modified."
        )


def _init_from_note(cfg, started_from):
    """The note that `--init_from` is ignored by a resumed run."""
    origin = f"--init_from={started_from}" if started_from else "random initialisation"
    return (
        f"Note: --init_from={cfg.init_from} is ignored: {cfg.model_dir} resumes from its own "
        f"checkpoint (the run started from {origin}, which run_config.json keeps)."
    )


def check_init_from(source, log=print) -> None:
    """Refuses an `--init_from` that does not exist or holds no BYOL networks, before any work.

    A run folder gives its newest readable checkpoint; a `.keras` file must hold a `BYOL`
    model (`checkpoints.check_is_checkpoint`); other files are official checkpoints, which
    `byol_tf.official.importer` reads.

    Raises:
        ValueError: one line naming `--init_from`.
    """
    if not os.path.exists(source):
        raise ValueError(f"--init_from={source} not found.")
    source = checkpoints.source_checkpoint(source, "--init_from", log)
    if source.endswith(".keras"):
        checkpoints.check_is_checkpoint(source, "--init_from")


def head_parameters(cfg) -> tuple[int, int]:
    """`(trainable, target)`: the parameters of the online projector and predictor, and of the
    target projector, that `cfg` builds.

    The encoder's features are 512·w wide (ResNet-18/34) or 2048·w (50 and deeper).
    """
    features = max(int(round(64 * cfg.width_multiplier * 8)), 1) * (4 if cfg.depth >= 50 else 1)
    hidden, output = cfg.hidden_dim, cfg.projection_dim

    def mlp(inputs):  # Dense → BatchNorm (4 vectors) → Dense, with biases
        return inputs * hidden + 5 * hidden + (hidden + 1) * output

    return mlp(features) + mlp(output), mlp(features)


def memory_bytes() -> int | None:
    """This machine's physical memory in bytes, or None where the system does not say."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_head_memory(cfg, available=None) -> None:
    """Refuses `--hidden_dim`/`--projection_dim` whose heads alone exceed this machine's memory.

    A lower bound of what training needs: 4 bytes (float32) per head weight, online and
    target, and per trainable one its gradient and one optimiser slot (LARS keeps one, AdamW
    two); the encoder and activations come on top. It catches a mistyped width before the
    model is built, where it would end in an out-of-memory error.

    Args:
        cfg: the `TrainConfig`.
        available: the memory in bytes (default: `memory_bytes()`).

    Raises:
        ValueError: one line naming both flags, the estimate and the memory.
    """
    available = available or memory_bytes()
    trainable, target = head_parameters(cfg)
    needed = 4 * (3 * trainable + target)
    if available and needed > available:
        raise ValueError(
            f"--hidden_dim={cfg.hidden_dim} and --projection_dim={cfg.projection_dim} make heads "
            f"of {trainable + target:,} parameters, which need at least {_size(needed)} to "
            "train (4 bytes per weight; per trainable one, its gradient and an optimiser slot); "
            f"this machine has {_size(available)}. The paper's heads: --hidden_dim=4096 "
            "--projection_dim=256."
        )


def _size(count):
    """A byte count in GiB (or MiB below one GiB), for a message."""
    return f"{count / 2**30:,.1f} GiB" if count >= 2**30 else f"{count / 2**20:,.1f} MiB"


def _check_replicas(cfg, strategy):
    replicas = strategy.num_replicas_in_sync
    if (cfg.batch_size // cfg.accumulation_steps) % replicas:
        raise ValueError(
            f"--batch_size={cfg.batch_size} (/ --accumulation_steps={cfg.accumulation_steps}) "
            f"must be divisible by the number of replicas ({replicas})."
        )


def recipe_line(cfg, recipe, total_steps, num_examples) -> str:
    """The one line train.py prints about the recipe: which, why, and the flags that override it."""
    why = (
        f"--recipe=auto, {total_steps:,} steps, {num_examples:,} images"
        if cfg.recipe == "auto"
        else f"--recipe={cfg.recipe}"
    )
    changed = recipes.overridden(cfg, recipe)
    overrides = (
        "; overridden by " + ", ".join(f"--{k}={v}" for k, v in sorted(changed.items()))
        if changed
        else ""
    )
    return f"Recipe ({why}): {recipe.describe()}{overrides}."


def warmup_warning(cfg, steps_per_epoch, total_steps) -> str | None:
    """The line warning that the warm-up lasts the whole run (the rate climbs all run and never
    decays), or None. `cfg` is resolved (`recipes.resolve_recipe`: `warmup_epochs` is set)."""
    warmup = round((cfg.warmup_epochs or 0) * steps_per_epoch)
    if not warmup or warmup < total_steps:
        return None
    source = "" if "warmup_epochs" in cfg.explicit else f" (from --recipe={cfg.recipe})"
    return (
        f"warning: the learning-rate warm-up (--warmup_epochs={cfg.warmup_epochs:g}{source}, "
        f"{warmup:,} steps) covers the whole run ({total_steps:,} steps, --epochs={cfg.epochs}):"
        " the rate climbs for the whole run and never decays; pass a smaller --warmup_epochs "
        "or more --epochs."
    )


def resolve_augment_on(cfg, saved, strategy) -> tuple[TrainConfig, str]:
    """`cfg` with `augment_on` set, and the line train.py prints about the choice.

    An unset `--augment_on` keeps the choice of the run being resumed (`saved`, its
    run_config.json; runs that do not record one augmented on the host), else is "device"
    when a GPU or TPU is visible (`default_augment_on`).
    """
    value, why = cfg.augment_on, ""
    if value is None and saved:
        value, why = saved.get("augment_on", "host"), ", as the run being resumed"
    elif value is None:
        value = default_augment_on(strategy)
        why = ": a GPU or TPU is visible" if value == "device" else ": no GPU or TPU is visible"
    where = "on the device, in the train step" if value == "device" else "on the host"
    line = f"Augmentation {where} (--augment_on={value}{why})."
    return dataclasses.replace(cfg, augment_on=value), line


def resolve_jit_compile(cfg, strategy) -> tuple[TrainConfig, str]:
    """`cfg` with `jit_compile` set, and the line train.py prints about the choice.

    An unset `--jit_compile` takes the faster exact (float32) path where the run is: XLA on a
    GPU or TPU; on a CPU, TensorFlow's own kernels (oneDNN on x86), measured faster than XLA side
    by side on both Intel and AMD CPUs (bench/train_step.py; README "Speed on CPUs").
    """
    value, why = cfg.jit_compile, ""
    if value is None and default_augment_on(strategy) == "device":
        value, why = True, ": a GPU or TPU is visible"
    elif value is None:
        value = False
        measured = "faster than XLA on CPUs, measured on Intel and AMD"
        why = f": {measured}; this one: {hardware.cpu_model()}"
    path = "compiled with XLA" if value else "on TensorFlow's own kernels, without XLA"
    line = f"Train step {path} (--jit_compile={str(value).lower()}{why})."
    return dataclasses.replace(cfg, jit_compile=value), line


def encoder(cfg, **kwargs) -> keras.Model:
    """The ResNet encoder `cfg` names; `kwargs` go to `networks.resnet`."""
    size = cfg.image_size
    return networks.resnet(
        cfg.depth,
        cfg.width_multiplier,
        cfg.cifar_stem,
        input_shape=(size, size, 3),
        zero_init_residual=bool(cfg.zero_init_residual),
        kernel_initializer=cfg.kernel_initializer or "he_normal",
        **kwargs,
    )


def build_model(plan, strategy) -> tuple[BYOL, TargetEMA]:
    """The plan's `BYOL`, compiled with its recipe's optimiser, and the recipe's `TargetEMA`.

    Built under `strategy.scope()`; the optimiser and the `TargetEMA` are made once, by
    `byol_tf.training.recipes.build`.

    Returns:
        `(model, target_ema)`.
    """
    cfg, size = plan.cfg, plan.cfg.image_size
    with strategy.scope():
        model = BYOL(
            encoder(cfg, synchronized_bn=strategy.num_replicas_in_sync > 1, name="encoder"),
            cfg.projection_dim,
            cfg.hidden_dim,
            image_shape=(size, size, 3),
            num_classes=plan.probe_classes,
            joint_views=cfg.joint_views,
            head_output_bias=cfg.head_output_bias,
            augmentation=augmentation_layer(plan),
            # "haiku" initialises the heads and the probe as hk.Linear; else Keras's default.
            head_kernel_initializer="haiku" if cfg.kernel_initializer == "haiku" else None,
        )
        accumulation = {}
        if cfg.accumulation_steps > 1:
            accumulation = {"gradient_accumulation_steps": cfg.accumulation_steps}
        built = recipes.build(
            cfg, plan.total_steps, plan.steps_per_epoch, cfg.batch_size, **accumulation
        )
        model.compile(
            optimizer=built.optimizer,
            jit_compile=cfg.jit_compile,
            steps_per_execution=cfg.steps_per_execution,
        )
        built.optimizer.build(model.trainable_variables)
    return model, built.target_ema


def augmentation_layer(plan) -> ViewAugmentation | None:
    """The model's `ViewAugmentation` for `--augment_on=device`, else None."""
    cfg = plan.cfg
    if cfg.augment_on != "device":
        return None
    return pipelines.train_step_augmentation(
        plan.source, cfg.image_size, preset=cfg.preset, augment_overrides=cfg.augment_overrides()
    )


def pretrain_data(plan, micro_step) -> tf.data.Dataset:
    """The pretraining stream from micro-batch `micro_step` on (micro = batch / accumulation)."""
    cfg = plan.cfg
    dataset = pipelines.pretrain_dataset(
        plan.source,
        cfg.batch_size // cfg.accumulation_steps,
        cfg.image_size,
        seed=cfg.seed,
        preset=cfg.preset,
        augment_overrides=cfg.augment_overrides(),
        skip_corrupt=cfg.skip_corrupt,
        start_step=micro_step,
        augment_on=cfg.augment_on,
    )
    # Several workers: each computes the whole global batch and keeps its share (DATA
    # sharding), so the union of the workers' batches is the single-process batch.
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


def random_init_encoder(cfg) -> Callable[[], keras.Model]:
    """A function building the run's encoder architecture at random initialisation, seeded
    with `--seed` (the baseline of `byol_tf.training.monitoring.baseline_scores`)."""

    def build():
        keras.utils.set_random_seed(cfg.seed)
        return encoder(cfg)

    return build
