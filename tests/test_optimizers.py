"""LARS steps against an independent NumPy reference (trust ratio, exclusions, momentum)."""

import keras
import numpy as np
import pytest

from byol_tf.core.optimizers import LARS, AdamW


def _np_lars(w, grads, lr, momentum, wd, eta, decay, adapt):
    """Reference LARS (official BYOL order) over a sequence of gradients."""
    w = w.astype(np.float64).copy()
    mu = np.zeros_like(w)
    for g in grads:
        u = g.astype(np.float64) + (wd * w if decay else 0.0)
        if adapt:
            wn, un = np.linalg.norm(w), np.linalg.norm(u)
            u = u * (eta * wn / un if wn > 0 and un > 0 else 1.0)
        mu = momentum * mu + u
        w = w - lr * mu
    return w


def _run_lars(optimizer, w0, grads):
    var = keras.Variable(w0, name="w")
    for g in grads:
        optimizer.apply([keras.ops.convert_to_tensor(g)], [var])
    return var.numpy()


@pytest.mark.parametrize("steps", [1, 2])
def test_lars_step_on_kernel_uses_weight_decay_and_trust_ratio(steps):
    rng = np.random.default_rng(0)
    w0 = rng.normal(size=(3, 4)).astype("float32")
    grads = [rng.normal(size=(3, 4)).astype("float32") for _ in range(steps)]
    opt = LARS(0.5, momentum=0.9, weight_decay=0.1, eta=0.01)
    expected = _np_lars(w0, grads, 0.5, 0.9, 0.1, 0.01, decay=True, adapt=True)
    np.testing.assert_allclose(_run_lars(opt, w0, grads), expected, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("steps", [1, 2])
def test_lars_excludes_bias_from_weight_decay_and_adaptation(steps):
    rng = np.random.default_rng(1)
    b0 = rng.normal(size=(5,)).astype("float32")
    grads = [rng.normal(size=(5,)).astype("float32") for _ in range(steps)]
    opt = LARS(0.5, momentum=0.9, weight_decay=0.1, eta=0.01)
    expected = _np_lars(b0, grads, 0.5, 0.9, 0.1, 0.01, decay=False, adapt=False)
    np.testing.assert_allclose(_run_lars(opt, b0, grads), expected, rtol=1e-6)
    # Plain momentum SGD on the bias: the first step is exactly w - lr·g.
    if steps == 1:
        np.testing.assert_allclose(_run_lars(LARS(0.5), b0, grads), b0 - 0.5 * grads[0], rtol=1e-6)


def test_lars_with_no_exclusions_adapts_bias_too():
    rng = np.random.default_rng(2)
    b0 = rng.normal(size=(5,)).astype("float32")
    grads = [rng.normal(size=(5,)).astype("float32")]
    opt = LARS(
        0.5,
        weight_decay=0.1,
        eta=0.01,
        exclude_from_weight_decay=None,
        exclude_from_layer_adaptation=None,
    )
    expected = _np_lars(b0, grads, 0.5, 0.9, 0.1, 0.01, decay=True, adapt=True)
    np.testing.assert_allclose(_run_lars(opt, b0, grads), expected, rtol=1e-5)


def test_lars_regex_exclusion_matches_variable_path():
    rng = np.random.default_rng(3)
    w0 = rng.normal(size=(3, 4)).astype("float32")
    grads = [rng.normal(size=(3, 4)).astype("float32")]
    opt = LARS(0.5, weight_decay=0.1, eta=0.01, exclude_from_weight_decay=["^w$"])
    expected = _np_lars(w0, grads, 0.5, 0.9, 0.1, 0.01, decay=False, adapt=True)
    np.testing.assert_allclose(_run_lars(opt, w0, grads), expected, rtol=1e-5)


def test_lars_trust_ratio_is_one_for_zero_weights():
    grads = [np.full((2, 2), 0.5, "float32")]
    out = _run_lars(LARS(1.0, weight_decay=0.0, eta=1e-3), np.zeros((2, 2), "float32"), grads)
    np.testing.assert_allclose(out, -0.5 * np.ones((2, 2)))


def test_lars_learning_rate_multiplies_momentum_buffer():
    # With a schedule, the second step uses lr_2·μ_2 (not an accumulated lr·g sum).
    w0, g = np.ones((3,), "float32"), np.ones((3,), "float32")
    lrs = iter([1.0, 0.0])
    opt = LARS(lambda: next(lrs), momentum=0.9)
    out = _run_lars(opt, w0, [g, g])
    np.testing.assert_allclose(out, w0 - 1.0)  # second step has lr 0: no movement


def test_lars_config_round_trip():
    opt = LARS(
        0.3,
        momentum=0.8,
        weight_decay=1e-5,
        eta=0.02,
        exclude_from_weight_decay=["bias"],
        exclude_from_layer_adaptation=None,
    )
    clone = LARS.from_config(opt.get_config())
    for key in (
        "momentum",
        "weight_decay",
        "eta",
        "exclude_from_weight_decay",
        "exclude_from_layer_adaptation",
    ):
        assert clone.get_config()[key] == opt.get_config()[key]
    assert keras.optimizers.deserialize(keras.optimizers.serialize(opt)).eta == 0.02


def test_lars_rejects_bad_exclusion_rule():
    with pytest.raises(ValueError, match="exclude_from_weight_decay"):
        LARS(0.1, exclude_from_weight_decay=3)


def _step(optimizer, value=(1.0, -2.0, 0.5), gradient=(0.3, 0.1, -0.2), name="w"):
    variable = keras.Variable(np.array([value, value], np.float32), name=name)
    optimizer.apply_gradients([(np.array([gradient, gradient], np.float32), variable)])
    return variable.numpy()


@pytest.mark.parametrize(
    "make",
    [
        lambda rate, **kw: LARS(rate, weight_decay=0.0, exclude_from_layer_adaptation=None, **kw),
        lambda rate, **kw: AdamW(rate, weight_decay=0.0, **kw),
    ],
)
def test_learning_rate_multiplier_equals_a_larger_rate_for_the_matching_variables(make):
    faster = _step(make(0.01, learning_rate_multipliers={"w$": 10.0}))
    reference = _step(make(0.1))
    np.testing.assert_allclose(faster, reference, rtol=1e-6)
    # A variable the pattern does not match keeps the base rate.
    np.testing.assert_allclose(
        _step(make(0.01, learning_rate_multipliers={"w$": 10.0}), name="v"),
        _step(make(0.01), name="v"),
        rtol=1e-6,
    )


def test_adamw_excludes_vectors_from_decay_and_serialises_its_rules():
    optimizer = AdamW(0.5, weight_decay=0.1, learning_rate_multipliers={"predictor/": 3.0})
    kernel = keras.Variable(np.ones((2, 2), np.float32), name="kernel")
    bias = keras.Variable(np.ones(2, np.float32), name="bias")
    # A zero gradient leaves Adam's moments at 0: the only change is the decoupled decay.
    optimizer.apply_gradients(
        [(np.zeros((2, 2), np.float32), kernel), (np.zeros(2, np.float32), bias)]
    )
    np.testing.assert_allclose(kernel.numpy(), np.full((2, 2), 1 - 0.5 * 0.1), rtol=1e-6)
    np.testing.assert_array_equal(bias.numpy(), np.ones(2))
    config = keras.optimizers.serialize(optimizer)
    restored = keras.optimizers.deserialize(config)
    assert isinstance(restored, AdamW)
    assert restored.learning_rate_multipliers == {"predictor/": 3.0}
    assert restored.weight_decay_exclusions == "vectors"


def test_multipliers_must_be_positive_factors_of_patterns():
    with pytest.raises(ValueError, match="learning_rate_multipliers must map"):
        LARS(0.1, learning_rate_multipliers={"predictor/": 0.0})


@pytest.mark.parametrize("rate", [-1.0, float("inf")], ids=["negative", "infinite"])
@pytest.mark.parametrize("name", ["LARS", "AdamW"])
def test_optimisers_refuse_a_negative_or_infinite_learning_rate(name, rate):
    optimizer = {"LARS": LARS, "AdamW": AdamW}[name]
    with pytest.raises(ValueError) as info:
        optimizer(rate)
    assert (
        str(info.value) == f"learning_rate must be >= 0 and finite. Received: learning_rate={rate}"
    )
    assert optimizer(0.0).learning_rate == 0.0
