"""LARS (layer-wise adaptive rate scaling, the optimiser of the BYOL paper) and AdamW, both with
the paper's weight-decay exclusions and per-variable learning-rate multipliers."""

import math
import numbers
import re
from typing import Any

import keras
from keras import ops

VECTORS = "vectors"


def _compile_rule(rule, argument):
    """Turns an exclusion rule into a predicate on variables."""
    if rule is None:
        return lambda variable: False
    if rule == VECTORS:
        # Biases and normalisation γ/β are exactly the rank ≤ 1 variables: selected by
        # structure, not by name (docs/algorithm.md §4).
        return lambda variable: len(variable.shape) <= 1
    if (
        isinstance(rule, str)
        or not isinstance(rule, (list, tuple))
        or not all(isinstance(p, str) for p in rule)
    ):
        raise ValueError(
            f"{argument} must be None, '{VECTORS}' or a list of regular expressions "
            f"matched against Variable.path. Received: {argument}={rule!r}"
        )
    patterns = [re.compile(p) for p in rule]
    return lambda variable: any(p.search(variable.path) for p in patterns)


def _multiplier_rule(multipliers):
    """Turns `learning_rate_multipliers` into `variable -> factor` (1.0 where none matches)."""
    if not multipliers:
        return lambda variable: 1.0
    if not isinstance(multipliers, dict) or not all(
        isinstance(k, str) and isinstance(v, (int, float)) and v > 0 for k, v in multipliers.items()
    ):
        raise ValueError(
            "learning_rate_multipliers must map regular expressions (matched against "
            f"Variable.path) to positive factors. Received: {multipliers!r}"
        )
    rules = [(re.compile(pattern), float(factor)) for pattern, factor in multipliers.items()]

    def factor(variable):
        return next((f for pattern, f in rules if pattern.search(variable.path)), 1.0)

    return factor


def _check_rate(learning_rate):
    """Refuses a constant learning rate that is negative or not finite (schedules pass)."""
    if isinstance(learning_rate, numbers.Real) and not 0 <= learning_rate < math.inf:
        raise ValueError(
            f"learning_rate must be >= 0 and finite. Received: learning_rate={learning_rate}"
        )


class _RateMultipliers:
    """Per-variable learning-rate factors (`learning_rate_multipliers`) of LARS and AdamW."""

    def _set_multipliers(self, multipliers):
        self.learning_rate_multipliers = dict(multipliers or {})
        self._rate_factor = _multiplier_rule(self.learning_rate_multipliers)

    def _build_factors(self, variables):
        """Decides each variable's factor once, where the Keras variables are known."""
        self._rate_factors = [self._rate_factor(v) for v in variables]

    def _scaled_rate(self, learning_rate, variable):
        """`learning_rate` times the variable's factor (unchanged for a factor of 1)."""
        factor = self._rate_factors[self._get_variable_index(variable)]
        if factor == 1.0:
            return learning_rate
        dtype = variable.dtype
        return ops.cast(learning_rate, dtype) * ops.cast(factor, dtype)


def predictor_multiplier(factor) -> dict[str, float]:
    """`learning_rate_multipliers` giving BYOL's predictor `factor` times the learning rate.

    The predictor's variables are those under `predictor/` in their path (`BYOL` builds its
    heads under their names). A faster predictor speeds up short runs (docs/recipes.md; Tian et
    al. 2021 study the predictor's learning rate in "Understanding self-supervised learning
    dynamics without contrastive pairs").
    """
    return {} if factor == 1 else {"(^|/)predictor/": float(factor)}


@keras.saving.register_keras_serializable(package="byol_tf")
class LARS(_RateMultipliers, keras.optimizers.Optimizer):
    """LARS with momentum, in the order of the official BYOL code (docs/algorithm.md §4).

    For each variable w with gradient g:
        u = g + weight_decay·w                      (unless excluded from weight decay)
        u = u · eta·‖w‖/‖u‖  (1 if a norm is 0)     (unless excluded from adaptation)
        μ = momentum·μ + u
        w = w − lr·μ
    The learning rate multiplies the momentum buffer, so a schedule acts at once.

    Args:
        learning_rate: float (>= 0, finite) or `LearningRateSchedule`.
        momentum: momentum coefficient.
        weight_decay: l2 coefficient added to the gradient (coupled, as in the paper).
        eta: trust coefficient η.
        exclude_from_weight_decay: `"vectors"` (default) excludes every variable of rank ≤ 1,
            i.e. biases and BatchNorm γ/β; a list of regular expressions excludes the
            variables whose `Variable.path` matches one; `None` excludes nothing.
        exclude_from_layer_adaptation: the same, for the trust-ratio adaptation.
        learning_rate_multipliers: `{regular expression: factor}`: a variable whose
            `Variable.path` matches a pattern (the first that does) is updated with
            `factor × learning_rate`; see `predictor_multiplier`.
        name: optimiser name.
        **kwargs: other `keras.optimizers.Optimizer` arguments (clipnorm, ...). Keras'
            own decoupled `weight_decay` is not used.
    """

    def __init__(
        self,
        learning_rate=0.2,
        momentum=0.9,
        weight_decay=1.5e-6,
        eta=1e-3,
        exclude_from_weight_decay=VECTORS,
        exclude_from_layer_adaptation=VECTORS,
        learning_rate_multipliers=None,
        name="LARS",
        **kwargs,
    ) -> None:
        _check_rate(learning_rate)
        # Keras' decoupled weight decay stays off: LARS adds it to the gradient itself.
        super().__init__(learning_rate=learning_rate, name=name, weight_decay=None, **kwargs)
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must lie in [0, 1). Received: momentum={momentum}")
        if weight_decay < 0 or eta <= 0:
            raise ValueError(
                "weight_decay must be >= 0 and eta > 0. "
                f"Received: weight_decay={weight_decay}, eta={eta}"
            )
        self.momentum = momentum
        self.lars_weight_decay = weight_decay
        self.eta = eta
        self.weight_decay_exclusions = exclude_from_weight_decay
        self.adaptation_exclusions = exclude_from_layer_adaptation
        self._skip_decay = _compile_rule(exclude_from_weight_decay, "exclude_from_weight_decay")
        self._skip_adapt = _compile_rule(
            exclude_from_layer_adaptation, "exclude_from_layer_adaptation"
        )
        self._set_multipliers(learning_rate_multipliers)

    def build(self, variables) -> None:
        """Creates one momentum buffer per variable."""
        if self.built:
            return
        super().build(variables)
        self.momentums = [
            self.add_variable_from_reference(variable, "momentum") for variable in variables
        ]
        # Decided once per variable here, where the Keras variables (with their paths) are
        # known; update_step may receive the backend's variable objects.
        self._decay_flags = [not self._skip_decay(v) for v in variables]
        self._adapt_flags = [not self._skip_adapt(v) for v in variables]
        self._build_factors(variables)

    def update_step(self, gradient, variable, learning_rate) -> None:
        """Applies one LARS step to `variable`."""
        dtype = variable.dtype
        learning_rate = ops.cast(learning_rate, dtype)
        update = ops.cast(gradient, dtype)
        index = self._get_variable_index(variable)
        learning_rate = self._scaled_rate(learning_rate, variable)
        if self.lars_weight_decay > 0 and self._decay_flags[index]:
            update = update + ops.cast(self.lars_weight_decay, dtype) * variable
        if self._adapt_flags[index]:
            w_norm = ops.sqrt(ops.sum(ops.square(variable)))
            u_norm = ops.sqrt(ops.sum(ops.square(update)))
            ratio = ops.cast(self.eta, dtype) * w_norm / ops.where(u_norm > 0, u_norm, 1.0)
            trust = ops.where(ops.logical_and(w_norm > 0, u_norm > 0), ratio, 1.0)
            update = update * trust
        momentum = self.momentums[index]
        self.assign(momentum, ops.cast(self.momentum, dtype) * momentum + update)
        self.assign_sub(variable, learning_rate * momentum)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            {
                "momentum": self.momentum,
                "weight_decay": self.lars_weight_decay,
                "eta": self.eta,
                "exclude_from_weight_decay": self.weight_decay_exclusions,
                "exclude_from_layer_adaptation": self.adaptation_exclusions,
                "learning_rate_multipliers": self.learning_rate_multipliers,
            }
        )
        return config


@keras.saving.register_keras_serializable(package="byol_tf")
class AdamW(_RateMultipliers, keras.optimizers.AdamW):
    """Keras's AdamW with LARS's weight-decay exclusions and learning-rate multipliers.

    Decoupled weight decay (`w -= lr·weight_decay·w`) skips the variables that
    `exclude_from_weight_decay` selects; by default those of rank <= 1 (biases, BatchNorm γ/β),
    the paper's exclusion. Both settings serialise with the optimiser, so a checkpoint restores
    them.

    Args:
        learning_rate: float (>= 0, finite) or `LearningRateSchedule`.
        weight_decay: decoupled weight-decay coefficient.
        exclude_from_weight_decay: `"vectors"` (default), a list of regular expressions matched
            against `Variable.path`, or `None`, as in `LARS`.
        learning_rate_multipliers: `{regular expression: factor}`, as in `LARS`.
        **kwargs: other `keras.optimizers.AdamW` arguments (beta_1, epsilon, ...).
    """

    def __init__(
        self,
        learning_rate=0.001,
        weight_decay=0.004,
        exclude_from_weight_decay=VECTORS,
        learning_rate_multipliers=None,
        **kwargs,
    ) -> None:
        _check_rate(learning_rate)
        super().__init__(learning_rate=learning_rate, weight_decay=weight_decay, **kwargs)
        self.weight_decay_exclusions = exclude_from_weight_decay
        self._skip_decay = _compile_rule(exclude_from_weight_decay, "exclude_from_weight_decay")
        self._set_multipliers(learning_rate_multipliers)

    def build(self, variables) -> None:
        """Creates Adam's moments; decides each variable's decay and rate factor once."""
        if self.built:
            return
        super().build(variables)
        self._decay_flags = [not self._skip_decay(v) for v in variables]
        self._build_factors(variables)

    def _use_weight_decay(self, variable):
        return self._decay_flags[self._get_variable_index(variable)] and super()._use_weight_decay(
            variable
        )

    def update_step(self, gradient, variable, learning_rate) -> None:
        """Adam's step, with the variable's learning-rate factor."""
        learning_rate = self._scaled_rate(learning_rate, variable)
        return super().update_step(gradient, variable, learning_rate)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            {
                "exclude_from_weight_decay": self.weight_decay_exclusions,
                "learning_rate_multipliers": self.learning_rate_multipliers,
            }
        )
        return config
