"""`--recipe=paper` builds the paper's network: Haiku's default initialisation for every
convolution and dense layer (heads and probe included) and γ = 1 in every BatchNorm;
`official_code` keeps the official code's zero-initialised last γ of each block.

The references are NumPy and the closed form of the truncated normal: Haiku's
`TruncatedNormal(stddev)` is `stddev` times a standard normal truncated to [-2, 2], so a
kernel divided by 1/sqrt(fan_in) must follow that distribution (std 0.8796, never beyond 2).
"""

import math

import keras
import numpy as np
import pytest

import byol_tf
from byol_tf.core import networks
from byol_tf.training import recipes

# sqrt(1 - 2·2·φ(2) / (Φ(2) - Φ(-2))): the std of a standard normal truncated to [-2, 2].
_PHI2 = math.exp(-2.0) / math.sqrt(2 * math.pi)
_MASS = math.erf(2 / math.sqrt(2))
TRUNCATED_STD = math.sqrt(1 - 4 * _PHI2 / _MASS)


def truncated_cdf(x):
    """CDF of the standard normal truncated to [-2, 2] (NumPy, from erf)."""
    erf = np.vectorize(math.erf)
    x = np.clip(x, -2, 2)
    return (0.5 * (1 + erf(x / math.sqrt(2))) - 0.5 * (1 - _MASS)) / _MASS


def ks_distance(draws):
    """Kolmogorov-Smirnov distance between `draws` and the truncated standard normal."""
    x = np.sort(np.asarray(draws, np.float64).reshape(-1))
    cdf = truncated_cdf(x)
    n = len(x)
    return max(np.max(np.arange(1, n + 1) / n - cdf), np.max(cdf - np.arange(n) / n))


def _fan_in(kernel):
    return int(np.prod(kernel.shape[:-1]))


def test_the_reference_constant_is_the_one_the_library_uses():
    assert abs(TRUNCATED_STD - 0.8796256610342398) < 1e-12
    assert abs(networks.TRUNCATED_STD - TRUNCATED_STD) < 1e-12


@pytest.mark.parametrize("shape", [(3, 3, 64, 64), (7, 7, 3, 32), (512, 128)])
def test_haiku_initializer_draws_one_over_sqrt_fan_in_times_the_truncated_normal(shape):
    kernel = np.asarray(networks.HaikuTruncatedNormal(seed=3)(shape))
    unit = kernel * math.sqrt(np.prod(shape[:-1]))  # the standard truncated normal, if right
    assert np.abs(unit).max() <= 2.0 + 1e-5
    assert abs(unit.std() / TRUNCATED_STD - 1) < 0.03
    # KS distance to the closed-form CDF below its 0.1 % critical value 1.95/√n (0.008 to
    # 0.028 here; measured 0.004 to 0.010). Keras's VarianceScaling(1, fan_in,
    # truncated_normal), whose std is corrected by 1/0.88, sits at 0.036 to 0.043.
    assert ks_distance(unit) < 1.95 / math.sqrt(unit.size)


def test_keras_variance_scaling_would_fail_the_distribution_check():
    shape = (3, 3, 64, 64)
    corrected = keras.initializers.VarianceScaling(1.0, "fan_in", "truncated_normal", seed=3)
    unit = np.asarray(corrected(shape)) * math.sqrt(np.prod(shape[:-1]))
    assert ks_distance(unit) > 3 * 1.95 / math.sqrt(unit.size) and np.abs(unit).max() > 2.1


def test_haiku_initializer_is_seeded_and_serialisable():
    initializer = networks.HaikuTruncatedNormal(seed=7)
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(initializer))
    assert isinstance(again, networks.HaikuTruncatedNormal)
    np.testing.assert_array_equal(initializer((4, 5)), again((4, 5)))
    assert again.get_config() == {"seed": 7}
    assert networks.make_initializer("haiku") is not networks.make_initializer("haiku")


def _paper_byol(zero_init_residual=False, num_classes=10):
    recipe = recipes.paper(300, zero_init_residual=zero_init_residual)
    keras.utils.set_random_seed(0)
    encoder = networks.resnet(
        50, 0.25, input_shape=(32, 32, 3), zero_init_residual=recipe.zero_init_residual,
        kernel_initializer=recipe.kernel_initializer,
    )  # fmt: skip
    return byol_tf.BYOL(
        encoder, 64, 256, num_classes=num_classes, head_output_bias=recipe.head_output_bias,
        head_kernel_initializer=recipe.kernel_initializer,
    )  # fmt: skip


def _dense_and_conv_layers(model):
    networks_ = [model.encoder, model.projector, model.predictor, model.target_projector]
    layers = [layer for net in networks_ for layer in net.layers]
    kinds = (keras.layers.Conv2D, keras.layers.Dense)
    return [layer for layer in layers if isinstance(layer, kinds)] + [model.probe]


def test_paper_network_initialises_every_kernel_as_haiku_and_biases_at_zero():
    model = _paper_byol()
    layers = _dense_and_conv_layers(model)
    assert len(layers) == 53 + 3 * 2 + 1  # ResNet-50's convolutions, 3 heads, the probe
    pooled = []
    for layer in layers:
        kernel = layer.kernel.numpy()
        unit = kernel * math.sqrt(_fan_in(kernel))
        assert np.abs(unit).max() <= 2.0 + 1e-5, layer.name
        if kernel.size >= 20_000:  # std within 3 % per layer (noise ~ 1 % at 20k draws)
            assert abs(unit.std() / TRUNCATED_STD - 1) < 0.03, (layer.name, unit.std())
        pooled.append(unit.reshape(-1))
        if layer.bias is not None:
            assert not layer.bias.numpy().any(), layer.name
    assert ks_distance(np.concatenate(pooled)) < 0.01


@pytest.mark.parametrize("zero_init_residual", [False, True], ids=["paper", "official_code"])
def test_paper_network_has_gamma_one_and_official_code_zero_last_gamma(zero_init_residual):
    model = _paper_byol(zero_init_residual)
    for net in (model.encoder, model.projector, model.predictor):
        for layer in net.layers:
            if not isinstance(layer, keras.layers.BatchNormalization):
                continue
            last = net is model.encoder and layer.name.endswith("_bn3")
            expected = 0.0 if (last and zero_init_residual) else 1.0
            np.testing.assert_array_equal(layer.gamma.numpy(), expected, err_msg=layer.name)
            assert not layer.beta.numpy().any()


def test_other_recipes_keep_he_normal_convolutions_and_glorot_heads():
    keras.utils.set_random_seed(0)
    model = byol_tf.BYOL(networks.resnet(18, 0.25, input_shape=(32, 32, 3)), 32, 64)
    hidden = model.projector.get_layer("hidden")
    assert isinstance(hidden.kernel_initializer, keras.initializers.GlorotUniform)
    assert ks_distance(hidden.kernel.numpy() * math.sqrt(128)) > 0.03  # uniform, not Haiku's
    conv = model.encoder.get_layer("stage1_block1_conv1")
    assert isinstance(conv.kernel_initializer, keras.initializers.HeNormal)
    assert model.get_config()["head_kernel_initializer"] is None
    with pytest.raises(ValueError, match="kernel_initializer must be one of"):
        byol_tf.BYOL(networks.resnet(18, 0.25, input_shape=(32, 32, 3)), 32, 64,
                     head_kernel_initializer="glorot")  # fmt: skip


def test_paper_byol_round_trips_its_head_initializer_through_keras_saving(tmp_path):
    model = _paper_byol(num_classes=None)
    path = str(tmp_path / "paper.keras")
    model.save(path)
    loaded = keras.saving.load_model(path, compile=False)
    assert loaded.head_kernel_initializer == "haiku"
    initializer = loaded.projector.get_layer("output").kernel_initializer
    assert isinstance(initializer, networks.HaikuTruncatedNormal)
    np.testing.assert_array_equal(
        loaded.projector.get_layer("output").kernel.numpy(),
        model.projector.get_layer("output").kernel.numpy(),
    )
