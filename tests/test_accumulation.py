"""Gradient accumulation: N micro-batches per optimiser step equal one N-times-larger batch."""

import keras
import numpy as np
import pytest

import byol_tf


def _bn_free_encoder():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inputs)
    return keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x))


def _model(optimizer, weights=None):
    model = byol_tf.BYOL(_bn_free_encoder(), projection_dim=8, hidden_dim=16, head_batch_norm=False)
    if weights is not None:
        model.set_weights(weights)
    model.compile(optimizer=optimizer)
    return model


@pytest.mark.parametrize("accumulation", [2, 4])
def test_accumulated_micro_batches_equal_one_big_batch(accumulation):
    rng = np.random.default_rng(0)
    batch = 8
    x1 = rng.normal(size=(3, batch, 8, 8, 3)).astype("float32")
    x2 = (x1 + 0.2 * rng.normal(size=x1.shape)).astype("float32")
    schedule = byol_tf.WarmupCosine(0.5, total_steps=3, warmup_steps=1)
    big = _model(byol_tf.LARS(schedule, weight_decay=1e-4, eta=0.02))
    small = _model(
        byol_tf.LARS(
            byol_tf.core.schedules.PerUpdate(schedule, accumulation),
            weight_decay=1e-4,
            eta=0.02,
            gradient_accumulation_steps=accumulation,
        ),
        weights=big.get_weights(),
    )
    micro = batch // accumulation
    for step in range(3):
        big.train_on_batch({"view1": x1[step], "view2": x2[step]})
        big.update_target(0.9)
        for i in range(accumulation):
            part = slice(i * micro, (i + 1) * micro)
            small.train_on_batch({"view1": x1[step, part], "view2": x2[step, part]})
        small.update_target(0.9)
        assert int(small.optimizer.iterations.numpy()) == step + 1
    for a, b in zip(big.weights, small.weights, strict=True):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-5)
    assert not np.allclose(big.encoder.weights[0].numpy(), _bn_free_encoder().weights[0].numpy())


def test_per_update_schedule_counts_optimizer_steps_and_round_trips():
    schedule = byol_tf.core.schedules.PerUpdate(byol_tf.WarmupCosine(1.0, 10, 4), 4)
    assert [float(schedule(s)) for s in (0, 3, 4, 8, 15)] == pytest.approx(
        [0.0, 0.0, 0.25, 0.5, 0.75]
    )
    clone = keras.optimizers.schedules.deserialize(keras.optimizers.schedules.serialize(schedule))
    assert float(clone(8)) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="accumulation_steps"):
        byol_tf.core.schedules.PerUpdate(schedule, 0)
