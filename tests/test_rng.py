"""Tests for byol_tf.views.rng: seeds, and the counter hash against a NumPy reference, with and
without XLA."""

import numpy as np
import pytest
import tensorflow as tf

from byol_tf.views import rng

M32 = 0xFFFFFFFF


def _np_mix(h):
    """murmur3's 32-bit finaliser on Python ints (wrapping at 2**32)."""
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & M32
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & M32
    return h ^ (h >> 16)


def _np_words(seed):
    return int(seed[0]) & M32, int(seed[1]) & M32


def _np_uniform(count, seed, low=0.0, high=1.0):
    """`count` U[low, high) numbers: the 24 high bits of the hash of each counter, over 2**24."""
    k0, k1 = _np_words(seed)
    out = []
    for i in range(count):
        bits = _np_mix(_np_mix(((i * 0x9E3779B9) + k0) & M32) ^ k1)
        out.append(np.float32(bits >> 8) * np.float32(1.0 / (1 << 24)))
    unit = np.array(out, np.float32)
    return np.float32(low) + np.float32(high - low) * unit


def _np_fold_in(seed, data):
    k0, k1 = _np_words(seed)
    d = int(data) & M32
    a = _np_mix(k0 ^ _np_mix((d + 0x68E31DA4) & M32))
    b = _np_mix(((k1 + a) & M32) ^ _np_mix((d + 0xB5297A4D) & M32))
    return np.array([a, b], np.int64)


SEEDS = [(0, 0), (7, 3), (-1, 2**40 + 5), (2**31 - 1, -(2**31))]


def test_as_seed_takes_ints_scalars_and_pairs():
    np.testing.assert_array_equal(rng.as_seed(5).numpy(), [5, 0])
    for seed in (tf.constant(5, tf.int32), tf.constant(5, tf.int64)):
        out = rng.as_seed(seed)
        assert out.dtype == tf.int64
        np.testing.assert_array_equal(out.numpy(), [5, 0])
    out = rng.as_seed(tf.constant([3, 4], tf.int32))
    assert out.dtype == tf.int64 and out.numpy().tolist() == [3, 4]


def test_as_seed_refuses_a_float_tensor():
    with pytest.raises(ValueError) as info:
        rng.as_seed(tf.constant(1.5))
    expected = "seed must be an int32/int64 tensor. Received: dtype=<dtype: 'float32'>"
    assert str(info.value) == expected


def test_seed_pair_is_the_seed_then_the_counter():
    np.testing.assert_array_equal(rng.seed_pair(11, 4).numpy(), [11, 4])
    pair = rng.seed_pair(11, tf.constant(9, tf.int32))
    assert pair.dtype == tf.int64 and pair.numpy().tolist() == [11, 9]


@pytest.mark.parametrize("seed", SEEDS)
def test_uniform_matches_the_numpy_reference_bit_for_bit(seed):
    got = rng.uniform([3, 5], tf.constant(seed, tf.int64)).numpy()
    assert got.shape == (3, 5) and got.dtype == np.float32
    np.testing.assert_array_equal(got.reshape(-1), _np_uniform(15, seed))
    scaled = rng.uniform([15], tf.constant(seed, tf.int64), -2.0, 6.0).numpy()
    np.testing.assert_array_equal(scaled, _np_uniform(15, seed, -2.0, 6.0))


def test_uniform_is_bit_identical_under_xla():
    seed = tf.constant([123, 456], tf.int64)
    compiled = tf.function(lambda s: rng.uniform([64, 3], s, 0.5, 2.0), jit_compile=True)
    np.testing.assert_array_equal(compiled(seed).numpy(), rng.uniform([64, 3], seed, 0.5, 2.0))
    folded = tf.function(lambda s: rng.fold_in(s, tf.range(16)), jit_compile=True)
    np.testing.assert_array_equal(folded(seed).numpy(), rng.fold_in(seed, tf.range(16)).numpy())


def test_uniform_draws_24_bit_values_spread_over_the_unit_interval():
    values = rng.uniform([100_000], rng.as_seed(0)).numpy()
    assert values.min() >= 0.0 and values.max() < 1.0
    np.testing.assert_array_equal(values * 2**24, np.round(values * 2**24))  # 24 random bits
    # Mean and variance of U[0, 1): 1/2 and 1/12, to ~5 standard errors of 100,000 draws.
    assert abs(values.mean() - 0.5) < 5 * np.sqrt(1 / 12 / 1e5)
    assert abs(values.var() - 1 / 12) < 5e-3
    counts, _ = np.histogram(values, bins=10, range=(0, 1))
    assert np.all(np.abs(counts - 10_000) < 5 * np.sqrt(10_000))


def test_uniform_per_seed_row_is_the_draw_of_its_seed_alone():
    seeds = tf.constant(SEEDS, tf.int64)
    rows = rng.uniform_per_seed(seeds, [2, 3], 1.0, 3.0).numpy()
    assert rows.shape == (len(SEEDS), 2, 3)
    for row, seed in zip(rows, SEEDS, strict=True):
        np.testing.assert_array_equal(row.reshape(-1), _np_uniform(6, seed, 1.0, 3.0))
    # A shard of the seeds draws what the whole batch draws for them.
    np.testing.assert_array_equal(rng.uniform_per_seed(seeds[2:], [2, 3], 1.0, 3.0), rows[2:])


@pytest.mark.parametrize("seed", SEEDS)
def test_fold_in_matches_the_numpy_reference(seed):
    for data in (0, 1, 17, 2**32 - 1):
        got = rng.fold_in(tf.constant(seed, tf.int64), data).numpy()
        np.testing.assert_array_equal(got, _np_fold_in(seed, data))


def test_fold_in_vectorises_over_data_and_seeds():
    seed = tf.constant([5, 9], tf.int64)
    many = rng.fold_in(seed, tf.range(6)).numpy()
    assert many.shape == (6, 2) and many.dtype == np.int64
    np.testing.assert_array_equal(many, [_np_fold_in((5, 9), i) for i in range(6)])
    assert len({tuple(s) for s in many}) == 6
    per_seed = rng.fold_in(tf.constant(SEEDS, tf.int64), 3).numpy()
    np.testing.assert_array_equal(per_seed, [_np_fold_in(s, 3) for s in SEEDS])
    assert ((many >= 0) & (many <= M32)).all()  # the words of a seed, non-negative


def test_split_is_fold_in_with_each_index():
    seed = tf.constant([1, 2], tf.int64)
    seeds = rng.split(seed, 4).numpy()
    assert seeds.shape == (4, 2)
    np.testing.assert_array_equal(seeds, [_np_fold_in((1, 2), i) for i in range(4)])
    draws = [tuple(rng.uniform([4], s).numpy()) for s in seeds]
    assert len(set(draws)) == 4  # independent streams, not copies


def test_only_the_low_32_bits_of_each_seed_entry_count():
    a = rng.uniform([8], tf.constant([2**32 + 5, 3], tf.int64)).numpy()
    np.testing.assert_array_equal(a, rng.uniform([8], tf.constant([5, 3], tf.int64)).numpy())
    assert not np.array_equal(a, rng.uniform([8], tf.constant([5, 4], tf.int64)).numpy())
