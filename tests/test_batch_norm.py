"""BatchNorm in training mode (networks.GroupedBatchNormalization, one group): the fused kernel
against a NumPy float64 reference of BatchNorm (outputs, gradients, moving statistics), and
which inputs take it."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from byol_tf.core import networks

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EPSILON = 1e-5
MOMENTUM = 0.9


def _reference(x, gamma, beta, upstream):
    """BatchNorm over every axis but the last, in float64: outputs, input/γ/β gradients, stats."""
    x, upstream = x.astype(np.float64), upstream.astype(np.float64)
    axes = tuple(range(x.ndim - 1))
    mean, variance = x.mean(axes), x.var(axes)  # the biased variance, as Keras keeps it
    inv_std = 1.0 / np.sqrt(variance + EPSILON)
    normalised = (x - mean) * inv_std
    outputs = gamma * normalised + beta
    # d loss / d x of sum(upstream * outputs), the closed form of BatchNorm's backward pass.
    mean_g = upstream.mean(axes)
    mean_gx = (upstream * normalised).mean(axes)
    grad_x = gamma * inv_std * (upstream - mean_g - normalised * mean_gx)
    grad_gamma = (upstream * normalised).sum(axes)
    grad_beta = upstream.sum(axes)
    return outputs, (grad_x, grad_gamma, grad_beta), (mean, variance)


def _layer(channels, rank, dtype_policy="float32"):
    layer = networks.GroupedBatchNormalization(
        momentum=MOMENTUM, epsilon=EPSILON, dtype=dtype_policy
    )
    layer.build((None,) * (rank - 1) + (channels,))
    rng = np.random.default_rng(1)
    layer.gamma.assign(rng.uniform(0.5, 2.0, channels).astype(np.float32))
    layer.beta.assign(rng.normal(size=channels).astype(np.float32))
    layer.moving_mean.assign(rng.normal(size=channels).astype(np.float32))
    layer.moving_variance.assign(rng.uniform(0.5, 2.0, channels).astype(np.float32))
    return layer


def _train_call(layer, x, upstream):
    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        outputs = layer(x, training=True)
        loss = tf.reduce_sum(tf.cast(outputs, tf.float32) * upstream)
    grads = tape.gradient(loss, [x, layer.gamma, layer.beta])
    return outputs, grads


def _ops(layer, x):
    graph = (
        tf.function(lambda t: layer(t, training=True))
        .get_concrete_function(tf.TensorSpec(x.shape, x.dtype))
        .graph
    )
    return {(op.type, op.get_attr("T").name) for op in graph.get_operations()
            if op.type.startswith("FusedBatchNorm")}  # fmt: skip


# Shapes where a biased/unbiased mix-up moves the variance by n/(n-1) ≥ 1/63 (rank 4) or 1/7.
@pytest.mark.parametrize("shape", [(4, 4, 4, 6), (8, 5)])
def test_fused_batch_norm_matches_the_float64_reference(shape):
    rng = np.random.default_rng(0)
    x = (rng.normal(size=shape) * 3.0 + 1.5).astype(np.float32)
    upstream = rng.normal(size=shape).astype(np.float32)
    layer = _layer(shape[-1], len(shape))
    gamma, beta = layer.gamma.numpy().astype(np.float64), layer.beta.numpy().astype(np.float64)
    moving_before = (layer.moving_mean.numpy(), layer.moving_variance.numpy())
    assert _ops(layer, x) == {("FusedBatchNormV3", "float32")}

    outputs, grads = _train_call(layer, x, upstream)
    expected, expected_grads, (mean, variance) = _reference(x, gamma, beta, upstream)
    # float32 arithmetic over at most 64 values per channel, outputs and gradients of order 1–10:
    # rounding stays below 64 · 2^-24 · 10 ≈ 4e-5.
    np.testing.assert_allclose(outputs.numpy(), expected, atol=4e-5, rtol=0)
    for grad, want in zip(grads, expected_grads, strict=True):
        np.testing.assert_allclose(grad.numpy(), want, atol=4e-5 * max(1.0, np.abs(want).max()))
    np.testing.assert_allclose(
        layer.moving_mean.numpy(), MOMENTUM * moving_before[0] + (1 - MOMENTUM) * mean, atol=1e-6
    )
    np.testing.assert_allclose(
        layer.moving_variance.numpy(),
        MOMENTUM * moving_before[1] + (1 - MOMENTUM) * variance,
        rtol=1e-5,
    )


def test_bfloat16_inputs_reach_the_fused_kernel_as_they_are_on_a_cpu():
    rng = np.random.default_rng(2)
    x = (rng.normal(size=(8, 4, 4, 8)) * 2.0).astype(np.float32)
    upstream = rng.normal(size=x.shape).astype(np.float32)
    layer = _layer(8, 4, dtype_policy="mixed_bfloat16")
    gamma, beta = layer.gamma.numpy().astype(np.float64), layer.beta.numpy().astype(np.float64)
    x_bf16 = tf.cast(x, tf.bfloat16)
    assert _ops(layer, x_bf16) == {("FusedBatchNormV3", "bfloat16")}

    outputs, grads = _train_call(layer, x_bf16, upstream)
    assert outputs.dtype == tf.bfloat16
    assert layer.moving_variance.dtype == "float32"
    expected, expected_grads, _ = _reference(tf.cast(x_bf16, tf.float32).numpy(), gamma, beta,
                                             upstream)  # fmt: skip
    # bfloat16 keeps 8 significant bits: one rounding of outputs and gradients of order 1-10.
    np.testing.assert_allclose(tf.cast(outputs, tf.float32).numpy(), expected, atol=2**-8 * 10)
    for grad, want in zip(grads, expected_grads, strict=True):
        scale = max(1.0, np.abs(want).max())
        np.testing.assert_allclose(tf.cast(grad, tf.float32).numpy(), want, atol=2**-7 * scale)


@pytest.mark.parametrize("case", ["float64", "synchronized", "rank3", "inference", "two_groups"])
def test_other_calls_keep_the_keras_code_path(case):
    shape = (4, 3, 6) if case == "rank3" else (4, 4, 4, 6)
    layer = networks.GroupedBatchNormalization(
        synchronized=case == "synchronized", dtype="float64" if case == "float64" else None
    )
    layer.build(shape)
    x = tf.zeros((8,) + shape[1:] if case == "two_groups" else shape, layer.compute_dtype)
    training = case != "inference"
    graph = tf.function(lambda t: _call(layer, t, training, case)).get_concrete_function(x).graph
    assert not [op.type for op in graph.get_operations() if op.type.startswith("FusedBatchNorm")]


def _call(layer, x, training, case):
    if case == "two_groups":
        with networks.batch_groups(2):
            return layer(x, training=training)
    return layer(x, training=training)


def test_a_network_in_training_mode_runs_every_batch_norm_through_the_fused_kernel():
    encoder = networks.resnet(18, width_multiplier=0.125, cifar_stem=True)
    bn_layers = [layer for layer in networks._all_layers(encoder)
                 if isinstance(layer, keras.layers.BatchNormalization)]  # fmt: skip
    x = tf.zeros((2, 8, 8, 3))
    graph = tf.function(lambda t: encoder(t, training=True)).get_concrete_function(x).graph
    fused = [op for op in graph.get_operations() if op.type == "FusedBatchNormV3"]
    assert len(fused) == len(bn_layers) == 20


def test_the_benchmarks_switch_back_to_keras_batch_norm_takes_keras_path(monkeypatch):
    # bench/keras_batch_norm.py is the A/B of the fused kernel: after it, no fused op is left.
    monkeypatch.syspath_prepend(os.path.join(ROOT, "bench"))
    monkeypatch.setattr(  # restored after the test
        networks.GroupedBatchNormalization, "_fusable", networks.GroupedBatchNormalization._fusable
    )
    import keras_batch_norm

    layer = _layer(6, 4)
    x = tf.zeros((4, 4, 4, 6))
    assert _ops(layer, x) == {("FusedBatchNormV3", "float32")}
    keras_batch_norm.use_keras_batch_norm()
    assert _ops(networks.GroupedBatchNormalization(), x) == set()
