"""TensorBoard summaries of a BYOL run: scalars per step and grids of augmented view pairs."""

import keras
import numpy as np
import tensorflow as tf

from byol_tf.callbacks import optimizer_step


def view_grid(view1, view2, mean, std, max_pairs=8):
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

    Args:
        log_dir: TensorBoard folder.
        every_steps: scalar interval in optimiser steps.
        tau_source: object with a `last_tau` attribute (the `TargetEMA` callback), or None.
        sample_views: optional `(view1, view2, mean, std)` written once as an image grid.
    """

    def __init__(self, log_dir, every_steps=10, tau_source=None, sample_views=None):
        super().__init__()
        self.log_dir, self.every_steps = log_dir, max(int(every_steps), 1)
        self.tau_source, self.sample_views = tau_source, sample_views
        self._writer = None

    def on_train_begin(self, logs=None):
        self._writer = tf.summary.create_file_writer(self.log_dir)
        if self.sample_views is not None:
            view1, view2, mean, std = self.sample_views
            with self._writer.as_default():
                tf.summary.image(
                    "augmented_view_pairs",
                    view_grid(view1, view2, mean, std),
                    step=optimizer_step(self.model),
                )

    def _learning_rate(self):
        return float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))

    def on_train_batch_end(self, batch, logs=None):
        step = optimizer_step(self.model)
        if step % self.every_steps or not logs:
            return
        with self._writer.as_default(step=step):
            for key in ("loss", "embedding_std", "probe_accuracy"):
                if key in logs:
                    tf.summary.scalar(f"step/{key}", float(logs[key]))
            tf.summary.scalar("step/learning_rate", self._learning_rate())
            if self.tau_source is not None:
                tf.summary.scalar("step/tau", float(self.tau_source.last_tau))

    def on_epoch_end(self, epoch, logs=None):
        with self._writer.as_default(step=epoch + 1):
            for key, value in (logs or {}).items():
                tf.summary.scalar(f"epoch/{key}", float(value))
        self._writer.flush()

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()
