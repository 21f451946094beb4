"""A whole BYOL pretraining run from a `TrainConfig`: plan, model, monitors, resume, export."""

import sys
import time

import keras

from byol_tf.core.batches import CROPS, SEEDS, VIEW1, VIEW2
from byol_tf.official import importer
from byol_tf.runs import checkpoints
from byol_tf.runs.run_folder import (
    WriteError,
    check_schedule,
    export_dir_of,
    new_folders,
    prepare_folder,
    read_summary,
    record_flags,
    remove_empty,
    remove_write_dir,
    schedule_changes,
    tensorboard_dir,
    write_dir,
    write_run_config,
    write_summary,
)
from byol_tf.settings.train_config import TrainConfig
from byol_tf.training import monitoring, run_plan
from byol_tf.training.callbacks import (
    Checkpointer,
    CollapseGuard,
    GracefulStop,
    NaNGuard,
    ProgressBar,
    ScalarLogger,
    optimizer_step,
)
from byol_tf.training.distribution import ignored_cluster_note, is_chief, make_strategy
from byol_tf.training.process_settings import process_settings


class TrainingError(RuntimeError):
    """Training stopped for a reason the user must act on (divergence, collapse)."""


def _segments(start, steps_per_epoch, epochs):
    """`(initial_epoch, steps)` fit calls that finish the run from optimiser step `start`."""
    epoch, done = divmod(start, steps_per_epoch)
    if done and epoch < epochs:
        yield epoch, steps_per_epoch - done
        epoch += 1
    if epoch < epochs:
        yield epoch, steps_per_epoch


def _callbacks(plan, model, target_ema, sample, log, out_dir):
    """The run's callbacks, its guards by name, and its `KNNMonitor` (or None)."""
    cfg = plan.cfg
    saver = Checkpointer(out_dir, cfg.checkpoint_every_steps, cfg.keep_checkpoints)
    guards = {
        "nan": NaNGuard(),
        "collapse": CollapseGuard(cfg.collapse_threshold, cfg.collapse_patience, log),
        "signal": GracefulStop(saver),
    }
    knn = plan.knn.monitor(cfg.image_size) if plan.knn else None
    if cfg.augment_on == "device":  # the plan's choice: the views the train step will draw
        view1, view2 = model.augmentation(sample[CROPS], sample[SEEDS])
        sample = {VIEW1: view1, VIEW2: view2}
    views = (sample[VIEW1].numpy(), sample[VIEW2].numpy(), plan.info.mean, plan.info.std)
    callbacks = [
        target_ema,
        guards["nan"],
        *([knn] if knn else []),
        guards["collapse"],
        saver,
        guards["signal"],
        ScalarLogger(tensorboard_dir(out_dir), cfg.log_every_steps, target_ema, views),
    ]
    return callbacks, guards, knn


def _strategy(cfg, log):
    # First: MultiWorkerMirroredStrategy must exist before the TensorFlow runtime starts.
    strategy = make_strategy(cfg.strategy, cfg.tpu)
    note = ignored_cluster_note(cfg.strategy)
    if note:
        log(note)
    return strategy


def _fit(plan, model, callbacks, guards):
    """Runs `fit` over the remaining epochs (micro-batch steps); returns the merged history."""
    cfg, history = plan.cfg, {}
    accumulation = cfg.accumulation_steps
    micro_per_epoch = plan.steps_per_epoch * accumulation
    start = optimizer_step(model) * accumulation
    for initial_epoch, steps in _segments(start, micro_per_epoch, cfg.epochs):
        micro_step = optimizer_step(model) * accumulation
        # The rest of the epoch a resumed run stopped in: `epochs` stays the run's total (the
        # progress shows "Epoch 2/3"), and a callback ends this fit after that epoch.
        partial = steps != micro_per_epoch
        end = [keras.callbacks.LambdaCallback(on_epoch_end=_stop(model))] if partial else []
        result = model.fit(
            run_plan.pretrain_data(plan, micro_step),
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


def train(cfg: TrainConfig, log=print, flags_text=None) -> dict:
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
    strategy = _strategy(cfg, log)
    with process_settings(cfg):
        return _run(cfg, strategy, started, log, flags_text)


def _run(cfg, strategy, started, log, flags_text):
    # Every worker runs the same program; only the chief's files land in model_dir.
    chief = is_chief(strategy)
    # Folders this run creates: removed again if it ends before writing anything there.
    created = new_folders(cfg.model_dir) + (new_folders(cfg.export_dir) if cfg.export_dir else [])
    try:
        if cfg.export_dir and chief:  # the chief exports there at the end: check it now
            prepare_folder(cfg.export_dir, "--export_dir")
        out_dir = write_dir(cfg.model_dir, chief, log)  # the chief locks model_dir
        try:
            plan = run_plan.make_plan(cfg, strategy, log)
            return _train(plan, strategy, out_dir, started, log, flags_text)
        except WriteError as error:
            last = checkpoints.latest_checkpoint(cfg.model_dir) or "none yet"
            raise WriteError(
                f"{error} The checkpoints already written are intact (newest: {last}); free "
                "space or restore write access, then run the same command again to resume."
            ) from error
        finally:
            remove_write_dir(out_dir, cfg.model_dir)
    except BaseException:  # a refusal, an error, Ctrl-C or SIGTERM
        remove_empty(created)
        raise


def _train(plan, strategy, out_dir, started, log, flags_text):
    cfg = plan.cfg
    model, target_ema = run_plan.build_model(plan, strategy)
    if plan.resume_from:
        checkpoints.restore(model, plan.resume_from)  # one line: damaged, other architecture
    elif cfg.init_from:
        importer.initialize_from(model, cfg.init_from, log)
    run_config = plan.run_config()
    if plan.resume_from:
        # A resumed run keeps the --init_from it started from (run_plan notes a new one).
        run_config["init_from"] = plan.saved.get("init_from")
        step, changes = optimizer_step(model), schedule_changes(run_config, plan.saved)
        if step >= plan.total_steps:
            log(f"The run in {cfg.model_dir} is already complete at step {step}.")
            if changes:
                log(f"Note: {_listed(changes)}: ignored, the run has no step left to train.")
            return _finished(plan, model, started, out_dir)
        # Refused (one line) before the resume is announced.
        line = check_schedule(changes, cfg.model_dir, cfg.allow_schedule_change, step, out_dir)
        log(f"Resuming from {plan.resume_from} (step {step}).")
        if line:
            log(line)
    if flags_text is not None:
        record_flags(out_dir, flags_text, cfg.explicit, optimizer_step(model))
    write_run_config(out_dir, run_config)
    start = optimizer_step(model) * cfg.accumulation_steps
    sample = next(iter(run_plan.pretrain_data(plan, start).take(1)))
    callbacks, guards, knn = _callbacks(plan, model, target_ema, sample, log, out_dir)
    history = _fit(plan, model, callbacks, guards)
    _raise_if_failed(cfg, guards)
    if guards["signal"].received:
        return {
            "interrupted": guards["signal"].received,
            "steps": optimizer_step(model),
            "checkpoint": checkpoints.latest_checkpoint(out_dir),
        }
    summary = _summarise(plan, model, history, knn, started, out_dir)
    write_summary(out_dir, summary)
    return summary


def _listed(changes):
    """`--name: old -> new, ...` of `schedule_changes`."""
    return ", ".join(f"--{key}: {old} -> {new}" for key, (old, new) in sorted(changes.items()))


def _finished(plan, model, started, out_dir):
    """The summary of a run that has no step left: its `summary.json`, else computed again.

    Nothing is trained; the kNN monitor (if on) scores the restored encoder, and `--export_dir`
    gets an export of it.
    """
    summary = read_summary(out_dir)
    if summary is None:
        knn = plan.knn.monitor(plan.cfg.image_size) if plan.knn else None
        summary = _summarise(plan, model, {}, knn, started, out_dir)
        write_summary(out_dir, summary)
        return summary
    # The checkpoint of this folder: summary.json of a copied run folder names the original's.
    summary = dict(summary, checkpoint=checkpoints.latest_checkpoint(out_dir))
    if plan.cfg.export_dir:
        summary["export"] = _export(plan, model, out_dir)
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


def _summarise(plan, model, history, knn, started, out_dir):
    cfg = plan.cfg
    summary = {
        "dataset": cfg.dataset,
        "steps": optimizer_step(model),
        "wall_time_s": round(time.time() - started, 1),
        "final": {k: v[-1] for k, v in history.items() if v},
        "checkpoint": checkpoints.latest_checkpoint(out_dir),
    }
    if knn is not None:
        summary["knn_top1"] = knn.evaluate(model.encoder)
        summary["knn_protocol"] = plan.knn.protocol
        if cfg.demo_baseline:
            random_init = run_plan.random_init_encoder(cfg)
            mean, std = plan.info.mean, plan.info.std
            scores = monitoring.baseline_scores(knn.evaluate, mean, std, random_init)
            summary.update({f"knn_top1_{name}": value for name, value in scores.items()})
    if cfg.export_dir:
        summary["export"] = _export(plan, model, out_dir)
    return summary


def _export(plan, model, out_dir):
    """Exports the online encoder to `--export_dir` (a worker's own folder off the chief)."""
    from byol_tf.serving import export

    cfg = plan.cfg
    export_dir = export_dir_of(out_dir, cfg.model_dir, cfg.export_dir)
    return export.export_encoder(
        model.encoder, export_dir, cfg.image_size, plan.info.mean, plan.info.std
    )
