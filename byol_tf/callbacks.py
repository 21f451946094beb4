"""Keras callbacks: the EMA target update with the cosine τ schedule."""

import math

import keras

from byol_tf.schedules import cosine_tau


class TargetEMA(keras.callbacks.Callback):
    """Moves the target network towards the online one after every optimiser step.

    τ follows `cosine_tau` over the whole run's K steps (SPEC §3). The step is read from
    `model.optimizer.iterations`, so a resumed run continues the schedule.

    With `fit(..., steps_per_execution=n)` Keras calls batch callbacks once per n steps; the
    callback then applies the n skipped updates at once with τ_eff = ∏ τ_k, which is exact
    for the schedule and uses the online weights at the end of the execution for all n
    (the difference is the online weights' drift within one execution). Use
    `steps_per_execution=1` for the paper's exact per-step update.

    Args:
        base_tau: τ at step 0 (0.996 for ImageNet, 0.99 for small data sets).
        total_steps: K; defaults to `epochs × steps_per_epoch` of the `fit` call.
    """

    def __init__(self, base_tau=0.996, total_steps=None):
        super().__init__()
        if not 0.0 <= base_tau <= 1.0:
            raise ValueError(f"base_tau must lie in [0, 1]. Received: base_tau={base_tau}")
        if total_steps is not None and total_steps <= 0:
            raise ValueError(f"total_steps must be positive. Received: total_steps={total_steps}")
        self.base_tau = base_tau
        self.total_steps = total_steps
        self._steps = total_steps
        self._last_step = 0
        self.last_tau = base_tau

    def on_train_begin(self, logs=None):
        if self.total_steps is None:
            epochs, steps = self.params.get("epochs"), self.params.get("steps")
            if not steps:
                raise ValueError(
                    "TargetEMA needs the run's length: pass total_steps=..., or fit with "
                    "steps_per_epoch=... on a dataset of unknown size."
                )
            self._steps = epochs * steps
        self._last_step = int(self.model.optimizer.iterations.numpy())

    def on_train_batch_end(self, batch, logs=None):
        step = int(self.model.optimizer.iterations.numpy())
        if step == self._last_step:
            return  # no optimiser step was taken (e.g. a skipped mixed-precision step)
        taus = [cosine_tau(k, self._steps, self.base_tau) for k in range(self._last_step, step)]
        self.last_tau = math.prod(taus)
        self.model.update_target(self.last_tau)
        self._last_step = step
