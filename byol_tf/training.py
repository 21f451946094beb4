"""A whole BYOL pretraining run from a `TrainConfig`: data, model, monitors, resume, export."""

import dataclasses
import functools
import os
import sys
import time

import keras
import tensorflow as tf

from byol_tf import checkpoints, data, networks, official, recipes, splits
from byol_tf.batches import CROPS, SEEDS
from byol_tf.callbacks import (
    Checkpointer,
    CollapseGuard,
    GracefulStop,
    KNNMonitor,
    NaNGuard,
    ProgressBar,
    ScalarLogger,
    TargetEMA,
    optimizer_step,
)
from byol_tf.device_augment import default_augment_on
from byol_tf.distribution import ignored_cluster_note, is_chief, make_strategy
from byol_tf.model import BYOL
from byol_tf.run_dir import (
    WriteError,
    check_resume,
    check_schedule,
    prepare_folder,
    read_run_config,
    read_summary,
    record_flags,
    remove_write_dir,
    schedule_changes,
    write_dir,
    write_run_config,
    write_summary,
)


class TrainingError(RuntimeError):
    """Training stopped for a reason the user must act on (divergence, collapse)."""


def _encoder(cfg, **kwargs):
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


def build_model(cfg, num_classes, strategy, total_steps, steps_per_epoch, augmentation=None):
    """Encoder + BYOL + optimiser and schedule, built and compiled under `strategy.scope()`.

    `total_steps` and `steps_per_epoch` count optimiser steps (micro-batches / accumulation).
    Settings `cfg` leaves unset come from its recipe (`byol_tf.recipes.resolve`; the data-set
    size is then taken as `steps_per_epoch × batch_size`). `augmentation` is the model's
    `ViewAugmentation` with `--augment_on=device` (see `view_augmentation`), else None.
    """
    cfg, _ = recipes.resolve(cfg, total_steps, steps_per_epoch, steps_per_epoch * cfg.batch_size)
    size = cfg.image_size
    with strategy.scope():
        encoder = _encoder(cfg, synchronized_bn=strategy.num_replicas_in_sync > 1, name="encoder")
        model = BYOL(
            encoder,
            cfg.projection_dim,
            cfg.hidden_dim,
            image_shape=(size, size, 3),
            num_classes=num_classes,
            joint_views=cfg.joint_views,
            head_output_bias=cfg.head_output_bias,
            augmentation=augmentation,
        )
        accumulation = {}
        if cfg.accumulation_steps > 1:
            accumulation = {"gradient_accumulation_steps": cfg.accumulation_steps}
        plan = recipes.build(
            cfg,
            total_steps,
            steps_per_epoch,
            cfg.batch_size,
            **accumulation,
        )
        optimizer = plan.optimizer
        model.compile(
            optimizer=optimizer,
            jit_compile=cfg.jit_compile,
            steps_per_execution=cfg.steps_per_execution,
        )
        optimizer.build(model.trainable_variables)
    return model


def resolve_augment_on(cfg, saved, strategy):
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


def view_augmentation(cfg):
    """The model's `ViewAugmentation` for `--augment_on=device`, else None."""
    if cfg.augment_on != "device":
        return None
    return data.view_augmentation(
        cfg.dataset,
        cfg.image_size,
        split=cfg.train_split,
        data_dir=cfg.data_dir,
        manual_dir=cfg.manual_dir,
        preset=cfg.preset,
        augment_overrides=cfg.augment_overrides(),
    )


def recipe_line(cfg, recipe, total_steps, num_examples):
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


def warmup_warning(cfg, steps_per_epoch, total_steps):
    """The line warning that the warm-up lasts the whole run (the rate climbs all run and never
    decays), or None. `cfg` is resolved (`recipes.resolve`: `warmup_epochs` is set)."""
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


def _restore(model, path):
    checkpoints.restore(model, path)  # one-line ValueError: damaged, or another architecture


def _segments(start, steps_per_epoch, epochs):
    """`(initial_epoch, steps)` fit calls that finish the run from optimiser step `start`."""
    epoch, done = divmod(start, steps_per_epoch)
    if done and epoch < epochs:
        yield epoch, steps_per_epoch - done
        epoch += 1
    if epoch < epochs:
        yield epoch, steps_per_epoch


def _knn_bank_size(cfg):
    """Train images in the kNN memory bank: `--knn_max_examples` rounded down to whole batches
    of 256 (at least one)."""
    return max(cfg.knn_max_examples // 256, 1) * 256


def _bank_text(bank, num_examples):
    """How the kNN memory bank samples its split, for summary.json."""
    if bank >= num_examples:
        return f"all {num_examples} images of"
    return f"{bank} images spread evenly over"


def _knn_on(cfg, log):
    """Whether the kNN monitor runs: asked for, and its splits suit a labelled evaluation.

    Splits that do not suit it (fewer than 2 classes, or queries that are images of the
    memory bank) are refused when `--knn_every_epochs` or `--eval_split` was set, else the
    default monitor is turned off with a one-line note through `log`.

    Raises:
        ValueError: naming the flags, the folder or split, and why.
    """
    if not (cfg.eval_split and cfg.knn_every_epochs):
        return False
    problem = splits.evaluation_problem(
        cfg.dataset, cfg.train_split, cfg.eval_split, cfg.data_dir, cfg.manual_dir
    )
    if problem is None:
        return True
    split, reason = problem
    flags = f"--knn_every_epochs={cfg.knn_every_epochs}, --eval_split={cfg.eval_split}"
    advice = "name a labelled split disjoint from --train_split with --eval_split, or pass"
    advice = f"{advice if split == 'test' else 'pass'} --knn_every_epochs=0"
    if {"knn_every_epochs", "eval_split"} & set(cfg.explicit):
        raise ValueError(f"The kNN monitor ({flags}) cannot run: {reason}; {advice}.")
    hint = "; --eval_split names its labelled split" if split == "test" else ""
    log(f"Note: the kNN monitor is off: {reason}{hint}.")
    return False


def _knn_datasets(cfg, knn_on):
    """Memory bank (train) and query (eval split) pipelines for the kNN monitor, or None."""
    if not knn_on:
        return None
    kwargs = dict(
        batch_size=256, image_size=cfg.image_size, data_dir=cfg.data_dir, manual_dir=cfg.manual_dir
    )
    memory = data.eval_dataset(
        cfg.dataset, cfg.train_split, max_examples=_knn_bank_size(cfg), **kwargs
    )
    return memory, data.eval_dataset(cfg.dataset, cfg.eval_split, **kwargs)


def _knn_k(cfg, info, log=None):
    """`--knn_k`, clamped to the memory bank's size (with a one-line note through `log`)."""
    bank = min(_knn_bank_size(cfg), info.num_examples)
    if cfg.knn_k <= bank:
        return cfg.knn_k
    if log is not None:
        log(
            f"Note: --knn_k={cfg.knn_k} exceeds the kNN memory bank ({bank} examples); "
            f"using {bank}."
        )
    return bank


def _callbacks(cfg, model, info, total_steps, sample, log, out_dir, knn_on):
    ema = TargetEMA(cfg.base_tau, total_steps=total_steps, schedule=cfg.tau_schedule)
    saver = Checkpointer(out_dir, cfg.checkpoint_every_steps, cfg.keep_checkpoints)
    guards = {
        "nan": NaNGuard(),
        "collapse": CollapseGuard(cfg.collapse_threshold, cfg.collapse_patience, log),
        "signal": GracefulStop(saver),
    }
    knn_data = _knn_datasets(cfg, knn_on)
    knn = KNNMonitor(*knn_data, cfg.knn_every_epochs, _knn_k(cfg, info, log)) if knn_data else None
    if CROPS in sample:  # --augment_on=device: the views the train step will draw
        view1, view2 = model.augmentation(sample[CROPS], sample[SEEDS])
        sample = {"view1": view1, "view2": view2}
    views = (sample["view1"].numpy(), sample["view2"].numpy(), info.mean, info.std)
    callbacks = [
        ema,
        guards["nan"],
        *([knn] if knn else []),
        guards["collapse"],
        saver,
        guards["signal"],
        ScalarLogger(os.path.join(out_dir, "tensorboard"), cfg.log_every_steps, ema, views),
    ]
    return callbacks, guards, knn


def _pretrain_data(cfg, micro_step):
    """The pretraining stream from micro-batch `micro_step` on (micro = batch / accumulation)."""
    dataset = data.pretrain_dataset(
        cfg.dataset,
        cfg.batch_size // cfg.accumulation_steps,
        cfg.image_size,
        seed=cfg.seed,
        split=cfg.train_split,
        data_dir=cfg.data_dir,
        manual_dir=cfg.manual_dir,
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


def _setup(cfg, log):
    # First: MultiWorkerMirroredStrategy must exist before the TensorFlow runtime starts.
    strategy = make_strategy(cfg.strategy, cfg.tpu)
    note = ignored_cluster_note(cfg.strategy)
    if note:
        log(note)
    keras.utils.set_random_seed(cfg.seed)
    if cfg.deterministic:
        tf.config.experimental.enable_op_determinism()
    keras.mixed_precision.set_global_policy(cfg.mixed_precision)
    return strategy


def _check_replicas(cfg, strategy):
    replicas = strategy.num_replicas_in_sync
    if (cfg.batch_size // cfg.accumulation_steps) % replicas:
        raise ValueError(
            f"--batch_size={cfg.batch_size} (/ --accumulation_steps={cfg.accumulation_steps}) "
            f"must be divisible by the number of replicas ({replicas})."
        )


def _plan(cfg):
    """Source info, optimiser steps per epoch and in the whole run."""
    info = data.source_info(cfg.dataset, cfg.train_split, cfg.data_dir, cfg.manual_dir)
    steps_per_epoch = cfg.steps_per_epoch or data.steps_per_epoch(
        cfg.dataset, cfg.batch_size, cfg.train_split, cfg.data_dir, cfg.manual_dir
    )
    if steps_per_epoch < 1:
        raise ValueError(
            f"--batch_size={cfg.batch_size} exceeds the {info.num_examples} "
            f"examples of --dataset={cfg.dataset}."
        )
    return info, steps_per_epoch, cfg.epochs * steps_per_epoch


def _fit(cfg, model, callbacks, guards, steps_per_epoch):
    """Runs `fit` over the remaining epochs (micro-batch steps); returns the merged history."""
    accumulation, history = cfg.accumulation_steps, {}
    micro_per_epoch = steps_per_epoch * accumulation
    start = optimizer_step(model) * accumulation
    for initial_epoch, steps in _segments(start, micro_per_epoch, cfg.epochs):
        micro_step = optimizer_step(model) * accumulation
        # The rest of the epoch a resumed run stopped in: `epochs` stays the run's total (the
        # progress shows "Epoch 2/3"), and a callback ends this fit after that epoch.
        partial = steps != micro_per_epoch
        end = [keras.callbacks.LambdaCallback(on_epoch_end=_stop(model))] if partial else []
        result = model.fit(
            _pretrain_data(cfg, micro_step),
            initial_epoch=initial_epoch,
            epochs=cfg.epochs,
            steps_per_epoch=steps,
            callbacks=callbacks + end + [ProgressBar()],  # ends at the step a stop reached
            shuffle=False,  # the pipeline shuffles; Keras warns that it ignores shuffle=True
            verbose=1 if sys.stdout.isatty() else 2,  # a file or pipe: one line per epoch
        )
        for key, values in result.history.items():
            history.setdefault(key, []).extend(float(v) for v in values)
        if (model.stop_training and not partial) or any(
            (guards["nan"].failed_step, guards["collapse"].stopped_epoch, guards["signal"].received)
        ):
            break
    return history


def _stop(model):
    """An `on_epoch_end` that ends `model.fit` after the current epoch."""

    def stop(epoch, logs):
        model.stop_training = True

    return stop


def train(cfg, log=print, flags_text=None):
    """Runs (or resumes) BYOL pretraining as configured; returns the run's summary dict.

    Args:
        cfg: a `TrainConfig`.
        log: prints a line (resume, collapse warnings).
        flags_text: the program's flags (`config.flags_text()`); once the checks pass and
            before training, they become `model_dir/flags.txt` and a line of
            `model_dir/flags_history.txt` (`run_dir.record_flags`).

    Raises:
        ValueError: for invalid configuration or data, naming the flag, file or folder.
        TrainingError: if the loss diverged or the representation collapsed.
        WriteError: if writing a checkpoint, a file of the run or the export failed (disk full,
            permission lost): one line naming the path and the reason, and the newest
            checkpoint, which is intact.
    """
    started = time.time()
    strategy = _setup(cfg, log)
    # Every worker runs the same program; only the chief's files land in model_dir.
    chief = is_chief(strategy)
    if cfg.export_dir and chief:  # the chief exports there at the end: check it now
        prepare_folder(cfg.export_dir, "--export_dir")
    out_dir = write_dir(cfg.model_dir, chief, log)  # the chief locks model_dir
    try:
        _check_replicas(cfg, strategy)
        return _train(cfg, strategy, out_dir, started, log, flags_text)
    except WriteError as error:
        last = checkpoints.latest_checkpoint(cfg.model_dir) or "none yet"
        raise WriteError(
            f"{error} The checkpoints already written are intact (newest: {last}); free space "
            "or restore write access, then run the same command again to resume."
        ) from error
    finally:
        remove_write_dir(out_dir, cfg.model_dir)


def _train(cfg, strategy, out_dir, started, log, flags_text):
    info, steps_per_epoch, total_steps = _plan(cfg)
    cfg, recipe = recipes.resolve(cfg, total_steps, steps_per_epoch, info.num_examples)
    log(recipe_line(cfg, recipe, total_steps, info.num_examples))
    warning = warmup_warning(cfg, steps_per_epoch, total_steps)
    if warning:
        log(warning)
    knn_on = _knn_on(cfg, log)
    resume_from = checkpoints.latest_readable(cfg.model_dir, log)  # names damaged ones
    saved = (read_run_config(cfg.model_dir) or {}) if resume_from else {}
    if resume_from:
        check_resume(cfg, cfg.model_dir, saved)
    cfg, line = resolve_augment_on(cfg, saved, strategy)
    log(line)
    # The online probe needs 2 classes or more; with fewer, pretraining runs without it.
    probe_classes = info.num_classes if (info.num_classes or 0) >= 2 else None
    model = build_model(
        cfg, probe_classes, strategy, total_steps, steps_per_epoch, view_augmentation(cfg)
    )
    if resume_from:
        _restore(model, resume_from)
    elif cfg.init_from:
        official.initialize_from(model, cfg.init_from, log)
    run_config = dict(
        cfg.to_json(),
        mean=list(info.mean),
        std=list(info.std),
        num_classes=info.num_classes,
        steps_per_epoch=steps_per_epoch,
        total_steps=total_steps,
        recipe_chosen=recipe.name,
        recipe_overrides=sorted(recipes.overridden(cfg, recipe)),
    )
    if resume_from:
        step, changes = optimizer_step(model), schedule_changes(run_config, saved)
        if step >= total_steps:
            log(f"The run in {cfg.model_dir} is already complete at step {step}.")
            if changes:
                log(f"Note: {_listed(changes)}: ignored, the run has no step left to train.")
            return _finished(cfg, model, info, started, out_dir, knn_on)
        # Refused (one line) before the resume is announced.
        line = check_schedule(changes, cfg.model_dir, cfg.allow_schedule_change, step, out_dir)
        log(f"Resuming from {resume_from} (step {step}).")
        if line:
            log(line)
    if flags_text is not None:
        record_flags(out_dir, flags_text, cfg.explicit, optimizer_step(model))
    write_run_config(out_dir, run_config)
    start = optimizer_step(model) * cfg.accumulation_steps
    sample = next(iter(_pretrain_data(cfg, start).take(1)))
    callbacks, guards, knn = _callbacks(cfg, model, info, total_steps, sample, log, out_dir, knn_on)
    history = _fit(cfg, model, callbacks, guards, steps_per_epoch)
    _raise_if_failed(cfg, guards)
    if guards["signal"].received:
        return {
            "interrupted": guards["signal"].received,
            "steps": optimizer_step(model),
            "checkpoint": checkpoints.latest_checkpoint(out_dir),
        }
    summary = _summarise(cfg, model, history, knn, started, info, out_dir)
    write_summary(out_dir, summary)
    return summary


def _listed(changes):
    """`--name: old -> new, ...` of `schedule_changes`."""
    return ", ".join(f"--{key}: {old} -> {new}" for key, (old, new) in sorted(changes.items()))


def _finished(cfg, model, info, started, out_dir, knn_on):
    """The summary of a run that has no step left: its `summary.json`, else computed again.

    Nothing is trained; the kNN monitor (if on) scores the restored encoder, and `--export_dir`
    gets an export of it.
    """
    summary = read_summary(out_dir)
    if summary is None:
        knn_data = _knn_datasets(cfg, knn_on)
        knn = KNNMonitor(*knn_data, cfg.knn_every_epochs, _knn_k(cfg, info)) if knn_data else None
        summary = _summarise(cfg, model, {}, knn, started, info, out_dir)
        write_summary(out_dir, summary)
    elif cfg.export_dir:
        summary = dict(summary, export=_export(cfg, model, info, out_dir))
    return summary


def _raise_if_failed(cfg, guards):
    last = checkpoints.latest_checkpoint(cfg.model_dir) or "none yet"
    if guards["nan"].failed_step is not None:
        raise TrainingError(
            f"The loss became NaN/Inf at step {guards['nan'].failed_step}; the usual cause is a "
            f"learning rate too high for this batch size (--learning_rate={cfg.learning_rate}). "
            f"Last good checkpoint: {last}."
        )
    if guards["collapse"].stopped_epoch is not None:
        raise TrainingError(
            f"Stopped at epoch {guards['collapse'].stopped_epoch}: the representation collapsed "
            f"(embedding_std < {cfg.collapse_threshold} for {cfg.collapse_patience} epochs). "
            f"Try a lower --learning_rate or a higher --base_tau. Last checkpoint: {last}."
        )


def _summarise(cfg, model, history, knn, started, info, out_dir):
    summary = {
        "dataset": cfg.dataset,
        "steps": optimizer_step(model),
        "wall_time_s": round(time.time() - started, 1),
        "final": {k: v[-1] for k, v in history.items() if v},
        "checkpoint": checkpoints.latest_checkpoint(out_dir),
    }
    if knn is not None:
        summary["knn_top1"] = knn.evaluate(model.encoder)
        summary["knn_protocol"] = (
            f"kNN k={knn.k}, cosine, exp(sim/{knn.temperature}) vote; "
            f"memory: {_bank_text(_knn_bank_size(cfg), info.num_examples)} "
            f"{splits.where(cfg.dataset, cfg.train_split)}, "
            f"queries: {splits.where(cfg.dataset, cfg.eval_split)}"
        )
        if cfg.demo_baseline:
            summary["knn_top1_raw_pixels"] = knn.evaluate(raw_pixels)
            summary["knn_top1_raw_pixels_unit"] = knn.evaluate(
                functools.partial(unit_pixels, mean=info.mean, std=info.std)
            )
            summary["knn_top1_random_init"] = _random_init_knn(cfg, knn)
    if cfg.export_dir:
        summary["export"] = _export(cfg, model, info, out_dir)
    return summary


def _export(cfg, model, info, out_dir):
    """Exports the online encoder to `--export_dir` (a worker's own folder off the chief)."""
    from byol_tf import export

    export_dir = cfg.export_dir if out_dir == cfg.model_dir else os.path.join(out_dir, "export")
    return export.export_encoder(model.encoder, export_dir, cfg.image_size, info.mean, info.std)


def raw_pixels(images):
    """The baseline "encoder" that costs nothing: the images as the encoder receives them
    (normalised), flattened to one vector each."""
    return tf.reshape(tf.cast(images, tf.float32), (tf.shape(images)[0], -1))


def unit_pixels(images, mean, std):
    """The raw-pixel baseline before normalisation: the pixels in [0, 1], flattened."""
    scale, shift = tf.constant(std, tf.float32), tf.constant(mean, tf.float32)
    unit = tf.cast(images, tf.float32) * scale + shift
    return tf.reshape(unit, (tf.shape(images)[0], -1))


def _random_init_knn(cfg, knn):
    """kNN top-1 of the same encoder architecture at random initialisation (seeded)."""
    keras.utils.set_random_seed(cfg.seed)
    return knn.evaluate(_encoder(cfg))
