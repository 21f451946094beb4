"""Internal: BYOL's target network: a copy of the online network, moved towards it by an EMA."""

from collections.abc import Callable

import keras
import tensorflow as tf


def clone(model, input_shape) -> keras.Model:
    """A structural copy of `model` with new variables, built for `input_shape`."""
    try:
        copy = keras.models.clone_model(model)
    except (ValueError, TypeError, NotImplementedError):
        copy = model.__class__.from_config(model.get_config())
    if not copy.built:
        copy.build(input_shape)
    return copy


def pair_variables(networks) -> list[tuple[keras.Variable, keras.Variable]]:
    """(target, online) variable pairs, matched by structure, not by name.

    Args:
        networks: `(target network, online network)` pairs of built Keras models.

    Returns:
        A list of `(target variable, online variable)`, network after network.

    Raises:
        ValueError: when a target network's variables differ in number or shape from its
            online network's.
    """
    pairs = []
    for target_net, online_net in networks:
        if len(target_net.weights) != len(online_net.weights):
            raise ValueError(f"Target copy of {online_net.name} has a different structure.")
        for target, online in zip(target_net.weights, online_net.weights, strict=True):
            if tuple(target.shape) != tuple(online.shape):
                raise ValueError(
                    f"Target copy of {online.path} has shape {target.shape}, "
                    f"expected {online.shape}."
                )
            pairs.append((target, online))
    return pairs


def initialize(pairs) -> None:
    """Freezes the target variables of `pairs` and sets each to its online variable's value."""
    for target, _ in pairs:
        # The target never receives gradients (docs/algorithm.md §1); its BatchNorm still
        # runs in training mode because the layers stay trainable, only the variables are not.
        target.trainable = False
    with tf.init_scope():
        for target, online in pairs:
            target.assign(online)


def moves_target(callbacks) -> bool:
    """Whether `callbacks` (a list or CallbackList) hold one that moves the target: a
    `TargetEMA`, or any callback with a true `moves_target` attribute (read by attribute, so
    that this module need not import the callbacks)."""
    callbacks = getattr(callbacks, "callbacks", callbacks) or ()
    return any(getattr(c, "moves_target", False) for c in callbacks)


def _local_components(target, online):
    """Pairs of per-device (target, online) variables behind two Keras variables."""
    target, online = target.value, online.value
    if isinstance(target, tf.distribute.DistributedValues):
        return list(zip(target.values, online.values, strict=True))
    return [(target, online)]


def ema_function(pairs, jit_compile) -> Callable[[tf.Tensor], None]:
    """The compiled update ξ ← τ·ξ + (1 − τ)·θ of every `(target, online)` variable pair.

    Each replica's copy is updated on its own device from its own online copy (all copies are
    equal, so they stay equal), as `strategy.extended.update` would; this is valid from
    cross-replica context, where callbacks run.

    Args:
        pairs: `(target variable, online variable)` pairs.
        jit_compile: compile with XLA, which fuses the updates when everything lives on one
            device.

    Returns:
        A function of τ, a float32 scalar tensor.
    """
    components = [pair for t, o in pairs for pair in _local_components(t, o)]

    @tf.function(jit_compile=jit_compile, autograph=False)
    def ema(tau):
        for target, online in components:
            with tf.device(target.device):
                t = tf.cast(tau, target.dtype)
                target.assign(t * target + (1.0 - t) * online)

    return ema
