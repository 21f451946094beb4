"""Known-answer tests of the BYOL regression loss against NumPy."""

import numpy as np

from byol_tf.core import losses


def _np_loss(p, z):
    p = p / np.linalg.norm(p, axis=-1, keepdims=True)
    z = z / np.linalg.norm(z, axis=-1, keepdims=True)
    return np.sum((p - z) ** 2, axis=-1)


def test_regression_loss_matches_numpy_on_fixed_vectors():
    p = np.array([[1.0, 0.0, 0.0], [1.0, 2.0, 2.0], [3.0, -4.0, 0.0]], "float32")
    z = np.array([[0.0, 5.0, 0.0], [2.0, 4.0, 4.0], [-3.0, 4.0, 0.0]], "float32")
    got = losses.regression_loss(p, z).numpy()
    np.testing.assert_allclose(got, [2.0, 0.0, 4.0], atol=1e-6)
    np.testing.assert_allclose(got, _np_loss(p, z), atol=1e-6)


def test_regression_loss_is_two_minus_two_cosine_on_random_vectors():
    rng = np.random.default_rng(1)
    p, z = rng.normal(size=(2, 16, 32))
    cos = np.sum(p * z, -1) / np.linalg.norm(p, axis=-1) / np.linalg.norm(z, axis=-1)
    np.testing.assert_allclose(losses.regression_loss(p, z).numpy(), 2 - 2 * cos, rtol=1e-5)


def test_symmetric_loss_sums_both_orderings_and_is_symmetric_in_views():
    rng = np.random.default_rng(2)
    p1, p2, z1, z2 = rng.normal(size=(4, 8, 16)).astype("float32")
    expected = _np_loss(p1, z2) + _np_loss(p2, z1)
    got = losses.symmetric_loss(p1, p2, z1, z2).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    swapped = losses.symmetric_loss(p2, p1, z2, z1).numpy()
    np.testing.assert_allclose(swapped, got, rtol=1e-6)


def test_loss_keeps_float64_for_float64_inputs():
    rng = np.random.default_rng(3)
    p, z = rng.normal(size=(2, 16, 32))
    out = losses.regression_loss(p, z)
    assert out.dtype.name == "float64"
    # float64 rounding over 32-term sums: a float32 computation would miss this by ~1e-7.
    np.testing.assert_allclose(out.numpy(), _np_loss(p, z), rtol=0, atol=1e-12)
    logits = rng.normal(size=(4, 3))
    probe = losses.probe_loss(logits, np.array([0, 2, -1, 1]))
    shifted = logits - logits.max(-1, keepdims=True)
    log_softmax = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
    expected = -np.mean([log_softmax[0, 0], log_softmax[1, 2], log_softmax[3, 1]])
    assert probe.loss.dtype.name == "float64"
    np.testing.assert_allclose(probe.loss.numpy(), expected, rtol=0, atol=1e-12)


def test_loss_is_float32_for_half_precision_inputs_and_finite_for_zero_vectors():
    p = np.zeros((2, 4), "float16")
    z = np.ones((2, 4), "float16")
    out = losses.regression_loss(p, z)
    assert out.dtype.name == "float32"
    np.testing.assert_allclose(out.numpy(), [2.0, 2.0])


def test_embedding_std_is_zero_for_collapsed_and_near_inverse_sqrt_dim_for_spread():
    collapsed = np.tile(np.arange(1.0, 9.0, dtype="float32"), (64, 1))
    assert abs(float(losses.embedding_std(collapsed))) < 1e-6
    spread = np.random.default_rng(3).normal(size=(4096, 64)).astype("float32")
    np.testing.assert_allclose(float(losses.embedding_std(spread)), 1 / np.sqrt(64), rtol=0.05)
