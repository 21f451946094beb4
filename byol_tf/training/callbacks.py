"""Keras callbacks of a BYOL run: target EMA, checkpoints, guards, kNN monitor, TensorBoard,
progress bar."""

import math
import signal
import threading

import keras
import numpy as np
import tensorflow as tf

from byol_tf.core.schedules import cosine_tau
from byol_tf.settings.choices import SCHEDULE_NAMES
from byol_tf.settings.protocols import KNN_NEIGHBOURS, KNN_TEMPERATURE


def optimizer_step(model) -> int:
    """The number of optimiser updates `model` has applied (micro-batches not counted)."""
    return int(model.optimizer.iterations.numpy())


class TargetEMA(keras.callbacks.Callback):
    """Moves the target network towards the online one after every optimiser step.

    τ follows `cosine_tau` over the whole run's K steps (docs/algorithm.md §3), or stays at
    `base_tau` with `schedule="constant"` (for runs of a few hundred steps, where τ's climb to
    1 would freeze the target early). The step is read from `model.optimizer.iterations`, so a
    resumed run continues the schedule.

    With `fit(..., steps_per_execution=n)` Keras calls batch callbacks once per n steps; the
    callback then applies the n skipped updates at once with τ_eff = ∏ τ_k, which is exact
    for the schedule and uses the online weights at the end of the execution for all n
    (the difference is the online weights' drift within one execution). Use
    `steps_per_execution=1` for the paper's exact per-step update.

    Args:
        base_tau: τ at step 0 (0.996 for ImageNet, 0.99 for small data sets).
        total_steps: K; defaults to `epochs × steps_per_epoch` of the `fit` call. Unused by
            the constant schedule.
        schedule: `"cosine"` (the paper's, default) or `"constant"`.
    """

    moves_target = True  # what BYOL.fit looks for before warning of a target that never moves

    def __init__(self, base_tau=0.996, total_steps=None, schedule="cosine") -> None:
        super().__init__()
        if not 0.0 <= base_tau <= 1.0:
            raise ValueError(f"base_tau must lie in [0, 1]. Received: base_tau={base_tau}")
        if schedule not in SCHEDULE_NAMES:
            raise ValueError(
                f"schedule must be one of {SCHEDULE_NAMES}. Received: schedule={schedule!r}"
            )
        if total_steps is not None and total_steps <= 0:
            raise ValueError(f"total_steps must be positive. Received: total_steps={total_steps}")
        self.base_tau = base_tau
        self.total_steps = total_steps
        self.schedule = schedule
        self._steps = total_steps
        self._last_step = 0
        self.last_tau = base_tau

    def on_train_begin(self, logs=None) -> None:
        if self.total_steps is None and self.schedule == "cosine":
            epochs, steps = self.params.get("epochs"), self.params.get("steps")
            if not steps:
                raise ValueError(
                    "TargetEMA needs the run's length: pass total_steps=..., or fit with "
                    "steps_per_epoch=... on a dataset of unknown size."
                )
            self._steps = epochs * steps
        self._last_step = optimizer_step(self.model)

    def on_train_batch_end(self, batch, logs=None) -> None:
        step = optimizer_step(self.model)
        if step == self._last_step:
            return  # no optimiser step was taken (e.g. a skipped mixed-precision step)
        self.last_tau = math.prod(self.tau(k) for k in range(self._last_step, step))
        self.model.update_target(self.last_tau)
        self._last_step = step

    def tau(self, step) -> float:
        """τ_k for optimiser step k under this callback's schedule."""
        if self.schedule == "constant":
            return self.base_tau
        return cosine_tau(step, self._steps, self.base_tau)


def _finite(logs, key="loss"):
    value = (logs or {}).get(key)
    return value is None or math.isfinite(float(value))


class Checkpointer(keras.callbacks.Callback):
    """Saves atomic checkpoints every `every_steps` optimiser steps, at epoch ends and at the end.

    Never saves a model whose running loss is not finite, so the newest checkpoint is always
    the last good one.

    Args:
        model_dir: the run's folder (checkpoints go to `model_dir/checkpoints`).
        every_steps: interval in optimiser steps; 0 saves only at epoch ends and at the end.
        keep: number of checkpoints kept.
    """

    def __init__(self, model_dir, every_steps=0, keep=3) -> None:
        super().__init__()
        self.model_dir, self.every_steps, self.keep = model_dir, every_steps, keep
        self.last_saved = None

    def save(self, logs=None) -> None:
        """Saves now unless this step is saved already or the loss is not finite."""
        from byol_tf.runs.checkpoints import save_checkpoint

        step = optimizer_step(self.model)
        if step == self.last_saved or not _finite(logs):
            return
        save_checkpoint(self.model, self.model_dir, step, self.keep)
        self.last_saved = step

    def on_train_begin(self, logs=None) -> None:
        self.last_saved = optimizer_step(self.model)  # what we resumed from is on disk already

    def on_train_batch_end(self, batch, logs=None) -> None:
        if self.every_steps and optimizer_step(self.model) // self.every_steps != (
            (self.last_saved or 0) // self.every_steps
        ):
            self.save(logs)

    def on_epoch_end(self, epoch, logs=None) -> None:
        self.save(logs)


class NaNGuard(keras.callbacks.Callback):
    """Stops training at the first non-finite loss and remembers the step."""

    def __init__(self) -> None:
        super().__init__()
        self.failed_step = None

    def on_train_batch_end(self, batch, logs=None) -> None:
        if not _finite(logs):
            self.failed_step = optimizer_step(self.model)
            self.model.stop_training = True


class CollapseGuard(keras.callbacks.Callback):
    """Warns when the std of l2-normalised projections (`embedding_std`) drops below
    `threshold` at an epoch end, and stops after `patience` such epochs in a row.

    A healthy d-dimensional projection has a std near 1/sqrt(d); collapse drives it to 0.
    """

    def __init__(self, threshold=0.01, patience=3, log=print) -> None:
        super().__init__()
        self.threshold, self.patience, self.log = threshold, patience, log
        self.bad_epochs = 0
        self.stopped_epoch = None

    def on_epoch_end(self, epoch, logs=None) -> None:
        std = (logs or {}).get("embedding_std")
        if std is not None and not math.isfinite(std):
            return  # NaN/Inf: a divergence, the NaN guard's to report, not a collapse
        if std is None or std >= self.threshold:
            self.bad_epochs = 0
            return
        self.bad_epochs += 1
        self.log(
            f"warning: representation collapse suspected at epoch {epoch + 1}: embedding_std "
            f"{std:.5f} < {self.threshold} ({self.bad_epochs}/{self.patience} epochs)"
        )
        if self.bad_epochs >= self.patience:
            self.stopped_epoch = epoch + 1
            self.model.stop_training = True


class ProgressBar(keras.callbacks.ProgbarLogger):
    """Keras's progress bar, ending each epoch at the step it reached.

    Keras's own fills the bar to the epoch's length when `fit` stops early, so a run stopped
    at step 30 of 200 (NaN guard, collapse, a signal) would show `200/200`; this one shows
    `30/200`.
    """

    def _finalize_progbar(self, logs):
        if self.target is None or not self.seen:
            super()._finalize_progbar(logs)
            return
        self.progbar.update(min(self.seen, self.target), list((logs or {}).items()), finalize=True)


class KNNMonitor(keras.callbacks.Callback):
    """Adds the kNN top-1 of the online encoder to the epoch logs as `knn_top1`.

    The protocol is docs/algorithm.md §6: cosine similarity, k neighbours, exp(sim / T) votes.
    The queries must be images outside the memory bank: a query found in the bank is its own
    nearest neighbour, and the score measures memory, not the representation
    (`byol_tf.data.splits.evaluation_problem` checks two splits of a source).

    Args:
        memory: `tf.data.Dataset` of `(images, labels)` forming the memory bank (train split).
        queries: `tf.data.Dataset` of `(images, labels)` to classify (held-out split).
        every_epochs: interval in epochs.
        k: number of neighbours.
        temperature: temperature of the exp(sim / temperature) vote.

    Raises:
        ValueError: when `queries` is the `memory` dataset itself.
    """

    def __init__(
        self, memory, queries, every_epochs=1, k=KNN_NEIGHBOURS, temperature=KNN_TEMPERATURE
    ) -> None:
        super().__init__()
        if queries is memory:
            raise ValueError(
                "KNNMonitor's queries are its memory bank: pass the images of a held-out split"
            )
        self.memory, self.queries = memory, queries
        self.every_epochs, self.k, self.temperature = every_epochs, k, temperature

    def evaluate(self, encoder=None) -> float:
        """kNN top-1 of `encoder` (default: the model's current online encoder)."""
        from byol_tf import evaluation

        encoder = encoder or self.model.encoder
        bank, bank_labels = evaluation.extract_features(encoder, self.memory)
        feats, labels = evaluation.extract_features(encoder, self.queries)
        result = evaluation.knn_classify(
            bank, bank_labels, feats, labels, k=self.k, temperature=self.temperature
        )
        return float(result["top1"])

    def on_epoch_end(self, epoch, logs=None) -> None:
        if self.every_epochs and (epoch + 1) % self.every_epochs == 0:
            top1 = self.evaluate()
            if logs is not None:
                logs["knn_top1"] = top1


class GracefulStop(keras.callbacks.Callback):
    """On SIGTERM or Ctrl-C (SIGINT), finishes the current step, checkpoints and stops.

    The handlers are installed for the duration of `fit` only (and only from the main thread);
    a second signal while stopping falls back to the previous handler.

    Args:
        checkpointer: the run's `Checkpointer`, used to save before stopping.
    """

    def __init__(self, checkpointer) -> None:
        super().__init__()
        self.checkpointer = checkpointer
        self.received = None
        self._previous = {}

    def _handle(self, signum, frame):
        self.received = signal.Signals(signum).name
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def on_train_begin(self, logs=None) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._previous[sig] = signal.signal(sig, self._handle)

    def on_train_batch_end(self, batch, logs=None) -> None:
        if self.received:
            self.checkpointer.save(logs)
            self.model.stop_training = True

    def on_train_end(self, logs=None) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}


def view_grid(view1, view2, mean, std, max_pairs=8) -> np.ndarray:
    """Side-by-side grid image of view pairs, de-normalised to [0, 1].

    Args:
        view1: `[B, H, W, 3]` normalised first views.
        view2: `[B, H, W, 3]` normalised second views.
        mean: per-channel normalisation mean.
        std: per-channel normalisation std.
        max_pairs: number of pairs (rows) shown.

    Returns:
        A `[1, rows·H, 2·W, 3]` float32 image for `tf.summary.image`.
    """
    mean = np.asarray(mean, np.float32)
    std = np.asarray(std, np.float32)
    rows = []
    for a, b in zip(view1[:max_pairs], view2[:max_pairs], strict=True):
        rows.append(np.concatenate([a, b], axis=1))
    grid = np.concatenate(rows, axis=0) * std + mean
    return np.clip(grid, 0.0, 1.0)[None].astype(np.float32)


class ScalarLogger(keras.callbacks.Callback):
    """Writes loss, learning rate, τ, embedding std (per step) and epoch metrics to TensorBoard.

    At TensorBoard step s (optimiser steps done) every per-step value is that of the update
    that took the count to s: its loss, the learning rate it used (read before it ran) and the
    τ of its target update (`TargetEMA.last_tau`), i.e. the schedules at step index s - 1.
    With `steps_per_execution=n` batch callbacks run once per n steps: the rate is that of the
    execution's first step, τ the product of its n values.

    Args:
        log_dir: TensorBoard folder.
        every_steps: scalar interval in optimiser steps.
        tau_source: object with a `last_tau` attribute (the `TargetEMA` callback), or None.
        sample_views: optional `(view1, view2, mean, std)` written once as an image grid.
    """

    def __init__(self, log_dir, every_steps=10, tau_source=None, sample_views=None) -> None:
        super().__init__()
        self.log_dir, self.every_steps = log_dir, max(int(every_steps), 1)
        self.tau_source, self.sample_views = tau_source, sample_views
        self._writer = None
        self._rate = None  # the learning rate of the update the current batch runs

    def on_train_begin(self, logs=None) -> None:
        self._writer = tf.summary.create_file_writer(self.log_dir)
        if self.sample_views is not None:
            view1, view2, mean, std = self.sample_views
            with self._writer.as_default():
                tf.summary.image(
                    "augmented_view_pairs",
                    view_grid(view1, view2, mean, std),
                    step=optimizer_step(self.model),
                )

    def on_train_batch_begin(self, batch, logs=None) -> None:
        # The optimiser's rate follows its step counter: after the update it is already the
        # next step's, so read it before the update.
        self._rate = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))

    def on_train_batch_end(self, batch, logs=None) -> None:
        step = optimizer_step(self.model)
        if step % self.every_steps or not logs:
            return
        with self._writer.as_default(step=step):
            for key in ("loss", "embedding_std", "probe_accuracy"):
                if key in logs:
                    tf.summary.scalar(f"step/{key}", float(logs[key]))
            tf.summary.scalar("step/learning_rate", self._rate)
            if self.tau_source is not None:
                tf.summary.scalar("step/tau", float(self.tau_source.last_tau))

    def on_epoch_end(self, epoch, logs=None) -> None:
        with self._writer.as_default(step=epoch + 1):
            for key, value in (logs or {}).items():
                tf.summary.scalar(f"epoch/{key}", float(value))
        self._writer.flush()

    def on_train_end(self, logs=None) -> None:
        if self._writer is not None:
            self._writer.close()
