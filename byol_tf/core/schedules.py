"""Learning-rate and target-decay schedules."""

import math
from typing import Any

import keras
import tensorflow as tf


def cosine_tau(step, total_steps, base_tau=0.996) -> float:
    """Target decay rate τ_k = 1 − (1 − τ_base)·(cos(πk/K) + 1)/2 (docs/algorithm.md §3).

    Args:
        step: the optimiser step k (0-based), a Python number.
        total_steps: K, the number of optimiser steps of the whole run.
        base_tau: τ at step 0.

    Returns:
        τ as a Python float; 1.0 from step K on.
    """
    if total_steps <= 0:
        raise ValueError(f"total_steps must be a positive int. Received: total_steps={total_steps}")
    progress = min(max(float(step), 0.0), float(total_steps)) / float(total_steps)
    return 1.0 - (1.0 - base_tau) * (math.cos(math.pi * progress) + 1.0) / 2.0


def _as_float(step, base_learning_rate, warmup_steps):
    """The step and the peak rate as float32 tensors, the warm-up length as a float."""
    step = tf.cast(step, tf.float32)
    return step, tf.cast(base_learning_rate, tf.float32), float(warmup_steps)


def _warm(step, base, warmup):
    """The linear warm-up from 0 to `base` over `warmup` steps (a rate of 0 steps is `base`)."""
    return base * step / max(warmup, 1.0)


@keras.saving.register_keras_serializable(package="byol_tf")
class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up from 0 to `base_learning_rate`, then cosine decay to 0 (docs/algorithm.md §4).

    lr(k) = base·k/W for k < W, else base·(1 + cos(π(k − W)/(K − W)))/2, and 0 from K on.

    Args:
        base_learning_rate: peak learning rate (the paper: 0.2 × batch / 256).
        total_steps: K, the number of optimiser steps of the whole run.
        warmup_steps: W, the number of warm-up steps (0 for none).
    """

    def __init__(self, base_learning_rate, total_steps, warmup_steps=0) -> None:
        if total_steps <= 0:
            raise ValueError(
                f"total_steps must be a positive int. Received: total_steps={total_steps}"
            )
        if not 0 <= warmup_steps <= total_steps:
            raise ValueError(
                "warmup_steps must lie in [0, total_steps]. "
                f"Received: warmup_steps={warmup_steps}, total_steps={total_steps}"
            )
        self.base_learning_rate = base_learning_rate
        self.total_steps = total_steps
        self.warmup_steps = warmup_steps

    def __call__(self, step) -> tf.Tensor:
        step, base, warmup = _as_float(step, self.base_learning_rate, self.warmup_steps)
        decay_steps = max(float(self.total_steps) - warmup, 1.0)
        progress = tf.clip_by_value((step - warmup) / decay_steps, 0.0, 1.0)
        cosine = base * 0.5 * (1.0 + tf.cos(math.pi * progress))
        return tf.where(step < warmup, _warm(step, base, warmup), cosine)

    def get_config(self) -> dict[str, Any]:
        return {
            "base_learning_rate": self.base_learning_rate,
            "total_steps": self.total_steps,
            "warmup_steps": self.warmup_steps,
        }


@keras.saving.register_keras_serializable(package="byol_tf")
class WarmupConstant(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up from 0 to `base_learning_rate`, then constant.

    lr(k) = base·k/W for k < W, else base. For runs of a few hundred steps (e.g. Adam on a
    small data set), where a cosine decay would spend most of the run at low rates.

    Args:
        base_learning_rate: the rate after warm-up.
        warmup_steps: W, the number of warm-up steps (0 for none).
    """

    def __init__(self, base_learning_rate, warmup_steps=0) -> None:
        if warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0. Received: warmup_steps={warmup_steps}")
        self.base_learning_rate = base_learning_rate
        self.warmup_steps = warmup_steps

    def __call__(self, step) -> tf.Tensor:
        step, base, warmup = _as_float(step, self.base_learning_rate, self.warmup_steps)
        return tf.where(step < warmup, _warm(step, base, warmup), base)

    def get_config(self) -> dict[str, Any]:
        return {"base_learning_rate": self.base_learning_rate, "warmup_steps": self.warmup_steps}


@keras.saving.register_keras_serializable(package="byol_tf")
class PerUpdate(keras.optimizers.schedules.LearningRateSchedule):
    """Evaluates `schedule` at optimiser updates rather than micro-batches.

    With `gradient_accumulation_steps=N` a Keras optimiser evaluates its schedule at every
    micro-batch; wrapping the schedule makes it count applied updates (step // N), so warm-up
    and decay lengths are given in optimiser steps.

    Args:
        schedule: a `LearningRateSchedule` over optimiser steps.
        accumulation_steps: micro-batches per optimiser step, N.
    """

    def __init__(self, schedule, accumulation_steps) -> None:
        if not isinstance(accumulation_steps, int) or accumulation_steps < 1:
            raise ValueError(
                "accumulation_steps must be a positive int. "
                f"Received: accumulation_steps={accumulation_steps}"
            )
        self.schedule = schedule
        self.accumulation_steps = accumulation_steps

    def __call__(self, step) -> tf.Tensor:
        return self.schedule(tf.math.floordiv(tf.cast(step, tf.int64), self.accumulation_steps))

    def get_config(self) -> dict[str, Any]:
        return {
            "schedule": keras.optimizers.schedules.serialize(self.schedule),
            "accumulation_steps": self.accumulation_steps,
        }

    @classmethod
    def from_config(cls, config) -> "PerUpdate":
        config = dict(config)
        config["schedule"] = keras.optimizers.schedules.deserialize(config["schedule"])
        return cls(**config)
