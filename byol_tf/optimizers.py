"""LARS: layer-wise adaptive rate scaling, the optimiser of the BYOL paper."""

import re

import keras
from keras import ops

VECTORS = "vectors"


def _compile_rule(rule, argument):
    """Turns an exclusion rule into a predicate on variables."""
    if rule is None:
        return lambda variable: False
    if rule == VECTORS:
        # Biases and normalisation γ/β are exactly the rank ≤ 1 variables (STYLE habit 7).
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


@keras.saving.register_keras_serializable(package="byol_tf")
class LARS(keras.optimizers.Optimizer):
    """LARS with momentum, in the order of the official BYOL code (docs/algorithm.md §4).

    For each variable w with gradient g:
        u = g + weight_decay·w                      (unless excluded from weight decay)
        u = u · eta·‖w‖/‖u‖  (1 if a norm is 0)     (unless excluded from adaptation)
        μ = momentum·μ + u
        w = w − lr·μ
    The learning rate multiplies the momentum buffer, so a schedule acts at once.

    Args:
        learning_rate: float or `LearningRateSchedule`.
        momentum: momentum coefficient.
        weight_decay: l2 coefficient added to the gradient (coupled, as in the paper).
        eta: trust coefficient η.
        exclude_from_weight_decay: `"vectors"` (default) excludes every variable of rank ≤ 1,
            i.e. biases and BatchNorm γ/β; a list of regular expressions excludes the
            variables whose `Variable.path` matches one; `None` excludes nothing.
        exclude_from_layer_adaptation: the same, for the trust-ratio adaptation.
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
        name="LARS",
        **kwargs,
    ):
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

    def build(self, variables):
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

    def update_step(self, gradient, variable, learning_rate):
        """Applies one LARS step to `variable`."""
        dtype = variable.dtype
        learning_rate = ops.cast(learning_rate, dtype)
        update = ops.cast(gradient, dtype)
        index = self._get_variable_index(variable)
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

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "momentum": self.momentum,
                "weight_decay": self.lars_weight_decay,
                "eta": self.eta,
                "exclude_from_weight_decay": self.weight_decay_exclusions,
                "exclude_from_layer_adaptation": self.adaptation_exclusions,
            }
        )
        return config
