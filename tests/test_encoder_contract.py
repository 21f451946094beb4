"""The encoder contract (tests/contracts.py) on every encoder byol_tf builds, and on fakes
that break one check each, so that each check is seen to fail."""

import functools

import keras
import numpy as np
import pytest
from contracts import (
    check_encoder_in_byol,
    check_encoder_lars_exclusions,
    check_encoder_output,
    check_encoder_round_trip,
    check_encoder_seeds,
    encoder_contract,
)
from helpers import tiny_encoder

import byol_tf
from byol_tf.core import networks

W = 1 / 16  # 512·w = 32 features at depth 18, 2048·w = 128 at depth 50


def _resnet(depth, cifar_stem, init):
    return functools.partial(
        networks.resnet, depth, W, cifar_stem, (32, 32, 3), kernel_initializer=init
    )


# (builder, the output width its docstring gives)
ENCODERS = {
    "resnet18": (_resnet(18, False, "he_normal"), 32),
    "resnet18_cifar_haiku": (_resnet(18, True, "haiku"), 32),
    "resnet50_haiku": pytest.param(_resnet(50, False, "haiku"), 128, marks=pytest.mark.slow),
    "resnet50_cifar": pytest.param(_resnet(50, True, "he_normal"), 128, marks=pytest.mark.slow),
    "tiny": (functools.partial(tiny_encoder, 32), 4),
}


@pytest.mark.parametrize("build, features", list(ENCODERS.values()), ids=list(ENCODERS))
def test_encoder_contract(build, features, tmp_path):
    encoder_contract(build, features, tmp_path)


# --- each check can fail ----------------------------------------------------------------------


def _constant_encoder():
    """Ignores the seed: every kernel starts at the same constants."""
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(4, 3, kernel_initializer="ones", name="conv")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    return keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x))


def _unseeded_encoder():
    """Draws its kernel from NumPy's unseeded generator, not from Keras's seed."""
    model = tiny_encoder(32)
    conv = model.get_layer("conv")
    conv.kernel.assign(np.random.default_rng().normal(size=conv.kernel.shape))
    return model


def _float64_encoder():
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(4, 3, dtype="float64", name="conv")(inputs)
    return keras.Model(inputs, keras.layers.GlobalAveragePooling2D(dtype="float64")(x))


@keras.saving.register_keras_serializable(package="contract_tests")
class _Scale(keras.layers.Layer):
    """Multiplies by `factor`, which its config forgets (the loaded copy multiplies by 1)."""

    def __init__(self, factor=1.0, **kwargs):
        super().__init__(**kwargs)
        self.factor = factor

    def call(self, x):
        return x * self.factor

    def get_config(self):
        config = super().get_config()
        config.pop("factor", None)
        return config


def _forgetful_encoder():
    inputs = keras.Input((32, 32, 3))
    x = _Scale(2.0)(tiny_encoder(32)(inputs))
    return keras.Model(inputs, x)


def _frozen_encoder():
    model = tiny_encoder(32)
    model.get_layer("conv").trainable = False
    model.get_layer("bn").trainable = False
    return model


class _RowBias(keras.layers.Layer):
    """A bias of shape [1, C]: a bias LARS's rank rule takes for a kernel."""

    def build(self, input_shape):
        self.bias = self.add_weight(shape=(1, input_shape[-1]), initializer="zeros", name="bias")

    def call(self, x):
        return x + self.bias


def _row_bias_encoder():
    inputs = keras.Input((32, 32, 3))
    return keras.Model(inputs, _RowBias()(tiny_encoder(32)(inputs)))


def test_output_check_fails_on_a_wrong_width_and_on_float64():
    with pytest.raises(AssertionError, match="output: shape"):
        check_encoder_output(functools.partial(tiny_encoder, 32), 5)
    with pytest.raises(AssertionError, match="output: dtype"):
        check_encoder_output(_float64_encoder, 4)


def test_seed_check_fails_on_an_encoder_ignoring_or_escaping_the_seed():
    with pytest.raises(AssertionError, match="another seed built the same kernels"):
        check_encoder_seeds(_constant_encoder)
    with pytest.raises(AssertionError, match="the same seed built different weights"):
        check_encoder_seeds(_unseeded_encoder)


def test_round_trip_check_fails_when_the_config_loses_a_setting(tmp_path):
    with pytest.raises(AssertionError, match="round trip"):
        check_encoder_round_trip(_forgetful_encoder, tmp_path)


def test_byol_check_fails_on_a_frozen_encoder_and_on_a_target_that_does_not_copy(monkeypatch):
    with pytest.raises(AssertionError, match="no trainable parameters"):
        check_encoder_in_byol(_frozen_encoder)
    monkeypatch.setattr(byol_tf.BYOL, "update_target", lambda self, tau: None)
    with pytest.raises(AssertionError, match=r"update_target\(0.0\) left"):
        check_encoder_in_byol(functools.partial(tiny_encoder, 32))


def test_byol_check_fails_on_a_train_step_that_moves_the_target(monkeypatch):
    step = byol_tf.BYOL.train_step

    def moving(self, data):
        logs = step(self, data)
        self.update_target(0.5)
        return logs

    monkeypatch.setattr(byol_tf.BYOL, "train_step", moving)
    with pytest.raises(AssertionError, match="changed the target encoder before any EMA"):
        check_encoder_in_byol(functools.partial(tiny_encoder, 32))


def test_lars_check_fails_on_a_bias_lars_would_decay():
    with pytest.raises(AssertionError, match="lars: .*bias.* is decayed, expected excluded"):
        check_encoder_lars_exclusions(_row_bias_encoder)
