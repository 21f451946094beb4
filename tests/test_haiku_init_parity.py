"""byol_tf's Haiku initialisation against Haiku's own initial draws.

`hk.Conv2D` and `hk.Linear` are initialised with their defaults, as the official network is, and
compared with `networks.HaikuTruncatedNormal` draws of the same shapes: the scale (std ×
sqrt(fan_in)), the bound (|w| ≤ 2/sqrt(fan_in)) and the whole distribution (two-sample KS). Then
the official network itself (Haiku, as tests/test_official_parity.py builds it) against the
networks of `--recipe=paper` and `--recipe=official_code`, layer by layer through the importer's
name mapping: the same shapes (so the same fan-in), the same statistics, zero biases and the
BatchNorm γ the README of the official code describes.

Runs in the `parity` leg (scripts/test.sh --parity), where dm-haiku and jax are installed.
"""

import math

import numpy as np
import pytest

from byol_tf.core import networks
from byol_tf.official import importer
from byol_tf.training import recipes

pytestmark = pytest.mark.parity
hk = pytest.importorskip("haiku")
jax = pytest.importorskip("jax")
jnp = jax.numpy


def _ks_two_sample(a, b):
    """The two-sample Kolmogorov-Smirnov distance."""
    a, b = np.sort(np.ravel(a)), np.sort(np.ravel(b))
    grid = np.concatenate([a, b])
    return float(
        np.max(np.abs(np.searchsorted(a, grid, "right") / len(a)
                      - np.searchsorted(b, grid, "right") / len(b)))
    )  # fmt: skip


def _haiku_kernel(module, input_shape, seed):
    def forward(x):
        return module()(x)

    params = hk.transform(forward).init(jax.random.PRNGKey(seed), jnp.zeros(input_shape))
    (values,) = params.values()
    return {name: np.asarray(v) for name, v in values.items()}


CASES = [
    # (Haiku module, input shape, kernel shape)
    (lambda: hk.Conv2D(64, 7, stride=2, with_bias=False), (1, 8, 8, 3), (7, 7, 3, 64)),
    (lambda: hk.Conv2D(64, 3, with_bias=False), (1, 4, 4, 64), (3, 3, 64, 64)),
    (lambda: hk.Conv2D(256, 1, with_bias=False), (1, 2, 2, 64), (1, 1, 64, 256)),
    (lambda: hk.Linear(1024), (1, 512), (512, 1024)),
    (lambda: hk.Linear(256, with_bias=False), (1, 1024), (1024, 256)),
]


@pytest.mark.parametrize("module, input_shape, shape", CASES, ids=lambda c: str(c))
def test_haiku_initializer_matches_haiku_default_draws(module, input_shape, shape):
    fan_in = math.prod(shape[:-1])
    theirs = _haiku_kernel(module, input_shape, seed=0)
    ours = np.asarray(networks.HaikuTruncatedNormal(seed=1)(shape))
    assert theirs["w"].shape == ours.shape == shape
    if "b" in theirs:
        assert not theirs["b"].any()  # Haiku's biases start at 0, as Keras's
    bound = 2 / math.sqrt(fan_in)
    assert np.abs(theirs["w"]).max() <= bound * (1 + 1e-6)
    assert np.abs(ours).max() <= bound * (1 + 1e-6)
    ratio = ours.std() / theirs["w"].std()
    scale, distance = theirs["w"].std() * math.sqrt(fan_in), _ks_two_sample(ours, theirs["w"])
    print(f"{shape}: std·√fan_in Haiku {scale:.4f}, ours {scale * ratio:.4f}, KS {distance:.4f}")
    assert abs(ratio - 1) < 0.04
    # Two-sample KS at the 0.1 % level: 1.95 · sqrt(2/n).
    assert _ks_two_sample(ours, theirs["w"]) < 1.95 * math.sqrt(2 / ours.size)


def test_keras_variance_scaling_would_fail_the_comparison():
    shape = (3, 3, 64, 64)
    theirs = _haiku_kernel(CASES[1][0], CASES[1][1], seed=0)["w"]
    import keras

    corrected = keras.initializers.VarianceScaling(1.0, "fan_in", "truncated_normal", seed=1)
    ours = np.asarray(corrected(shape))
    assert _ks_two_sample(ours, theirs) > 1.95 * math.sqrt(2 / ours.size)
    assert ours.std() / theirs.std() > 1.1


@pytest.fixture(scope="module")
def official_init():
    """The official network's initial parameters (ResNet-50 at 1/4 width, Haiku defaults)."""
    import test_official_parity as parity

    hidden, projection, classes = 512, 64, 10
    network = parity._official_network(50, 1 / 4, hidden, projection, classes)
    params, state = network.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)), True)
    # Module names as `importer.load_official` gives them: without Haiku's `~` scope markers.
    trees = {
        field: {
            "/".join(p for p in module.split("/") if p != "~"): {
                name: np.asarray(value) for name, value in values.items()
            }
            for module, values in tree.items()
        }
        for field, tree in (("online_params", params), ("online_state", state))
    }
    arch = importer.architecture(trees["online_params"])
    return importer.network_weights(trees, arch), arch


def _ours(arch, zero_init_residual):
    import keras

    import byol_tf

    recipe = recipes.paper(300, zero_init_residual=zero_init_residual)
    keras.utils.set_random_seed(0)
    encoder = networks.resnet(
        arch.depth, arch.width_multiplier, input_shape=(32, 32, 3),
        zero_init_residual=recipe.zero_init_residual, kernel_initializer=recipe.kernel_initializer,
    )  # fmt: skip
    return byol_tf.BYOL(
        encoder, arch.projection_dim, arch.hidden_dim, num_classes=arch.num_classes,
        head_output_bias=recipe.head_output_bias, head_kernel_initializer=recipe.kernel_initializer,
    )  # fmt: skip


def _layer(model, network, layer):
    net = {"encoder": model.encoder, "projector": model.projector,
           "predictor": model.predictor, "probe": model.probe}[network]  # fmt: skip
    return net if layer is None else net.get_layer(layer)


@pytest.mark.parametrize("zero_init_residual", [True, False], ids=["official_code", "paper"])
def test_recipe_networks_start_as_the_official_network(official_init, zero_init_residual):
    weights, arch = official_init
    model = _ours(arch, zero_init_residual)
    kernels = 0
    for (network, name), values in weights.items():
        layer = _layer(model, network, name)
        ours = [w.numpy() for w in layer.weights]
        assert [w.shape for w in ours] == [v.shape for v in values], (network, name)
        if hasattr(layer, "kernel"):
            kernel, theirs = ours[0], values[0]
            fan_in = math.prod(kernel.shape[:-1])
            assert np.abs(kernel).max() <= 2 / math.sqrt(fan_in) * (1 + 1e-6), name
            if kernel.size >= 20_000:
                assert abs(kernel.std() / theirs.std() - 1) < 0.05, (network, name)
            for extra in ours[1:]:
                assert not extra.any()  # biases at 0, as Haiku's
            kernels += 1
        elif network == "encoder" or network in ("projector", "predictor"):
            gamma, beta = ours[0], ours[1]
            if zero_init_residual:
                np.testing.assert_array_equal(gamma, values[0], err_msg=name)  # Haiku BlockV1
            else:
                np.testing.assert_array_equal(gamma, 1.0, err_msg=name)  # the paper
            np.testing.assert_array_equal(beta, values[1], err_msg=name)
    assert kernels == 53 + 2 * 2 + 1  # ResNet-50's convolutions, projector, predictor, probe
    # The official code's last γ of each block is Haiku BlockV1's zero, which official_code copies.
    zeros = [n for (net, n), v in weights.items() if net == "encoder" and len(v) >= 2
             and v[0].ndim == 1 and not v[0].any()]  # fmt: skip
    assert len(zeros) == 16
