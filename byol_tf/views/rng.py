"""Internal: stateless counter-based random numbers that are bit-identical with and without XLA."""

import tensorflow as tf


def as_seed(seed) -> tf.Tensor:
    """Converts a seed into the stateless seed form, an int64 tensor of shape [2].

    Args:
        seed: a Python int, or an int32/int64 tensor of shape [] or [2].

    Returns:
        int64 tensor of shape [2].

    Raises:
        ValueError: for a tensor that is not of an integer dtype.
    """
    if isinstance(seed, int):
        return tf.constant([seed, 0], tf.int64)
    seed = tf.convert_to_tensor(seed)
    if seed.dtype not in (tf.int32, tf.int64):
        raise ValueError(f"seed must be an int32/int64 tensor. Received: dtype={seed.dtype}")
    seed = tf.cast(seed, tf.int64)
    return tf.stack([seed, tf.zeros_like(seed)]) if seed.shape.rank == 0 else seed


def seed_pair(seed, counter) -> tf.Tensor:
    """The stateless seed `(seed, counter)`.

    Args:
        seed: a Python int.
        counter: an int, or an integer scalar tensor (a step, an epoch...).

    Returns:
        int64 tensor of shape [2].
    """
    return tf.stack([tf.constant(seed, tf.int64), tf.cast(counter, tf.int64)])


def _mix(h):
    """murmur3's 32-bit finaliser: a bijective avalanche of uint32 values."""
    h = tf.bitwise.bitwise_xor(h, tf.bitwise.right_shift(h, 16)) * tf.constant(
        0x85EBCA6B, tf.uint32
    )
    h = tf.bitwise.bitwise_xor(h, tf.bitwise.right_shift(h, 13)) * tf.constant(
        0xC2B2AE35, tf.uint32
    )
    return tf.bitwise.bitwise_xor(h, tf.bitwise.right_shift(h, 16))


def _words(seed):
    """The two 32-bit words of an int seed [..., 2] (low bits of each entry), each [...]."""
    low = tf.bitwise.bitwise_and(tf.cast(seed, tf.int64), tf.constant(0xFFFFFFFF, tf.int64))
    words = tf.cast(low, tf.uint32)
    return words[..., 0], words[..., 1]


def _unit(count, k0, k1):
    """U[0, 1) float32 numbers hashed from uint32 counters and key words (broadcast)."""
    bits = _mix(tf.bitwise.bitwise_xor(_mix(count * tf.constant(0x9E3779B9, tf.uint32) + k0), k1))
    return tf.cast(tf.bitwise.right_shift(bits, 8), tf.float32) * (1.0 / (1 << 24))


def uniform(shape, seed, low=0.0, high=1.0) -> tf.Tensor:
    """Stateless U[low, high) float32 numbers from a counter hash (24 random bits each).

    TF's stateless RNG ops give different numbers under XLA than without it; this hash gives
    bit-identical numbers in both, so the compiled and the plain augmentation agree.

    Args:
        shape: output shape.
        seed: int tensor of shape [2].
        low: lower bound.
        high: upper bound (excluded).

    Returns:
        float32 tensor of `shape`.
    """
    k0, k1 = _words(seed)
    count = tf.cast(tf.range(tf.reduce_prod(shape)), tf.uint32)
    return low + (high - low) * tf.reshape(_unit(count, k0, k1), shape)


def uniform_per_seed(seeds, shape, low=0.0, high=1.0) -> tf.Tensor:
    """One `uniform(shape, seed)` draw per seed, stacked: row i depends on `seeds[i]` only.

    Per-image seeds make an image's random parameters independent of the other images of its
    batch and of its position there, so a shard of the batch (one replica's) draws what the
    whole batch would.

    Args:
        seeds: int tensor of shape [B, 2].
        shape: shape of each row's draw (a list of Python ints).
        low: lower bound.
        high: upper bound (excluded).

    Returns:
        float32 tensor of shape [B, *shape]; row i equals `uniform(shape, seeds[i])`.
    """
    k0, k1 = _words(seeds)
    count = tf.cast(tf.range(tf.reduce_prod(shape)), tf.uint32)
    unit = _unit(count[None, :], k0[:, None], k1[:, None])
    return low + (high - low) * tf.reshape(unit, [-1, *shape])


def fold_in(seed, data) -> tf.Tensor:
    """A new seed derived from a seed and an int; vectorised over seeds and ints.

    Args:
        seed: int tensor of shape [2], or [..., 2] for several seeds.
        data: a Python int or an integer tensor that broadcasts against `seed[..., 0]`
            (`fold_in(seed, tf.range(n))` gives n seeds of shape [n, 2]).

    Returns:
        int64 tensor of shape [..., 2] (the broadcast shape of `seed[..., 0]` and `data`).
    """
    k0, k1 = _words(seed)
    d = tf.cast(data, tf.uint32)
    a = _mix(tf.bitwise.bitwise_xor(k0, _mix(d + tf.constant(0x68E31DA4, tf.uint32))))
    b = _mix(tf.bitwise.bitwise_xor(k1 + a, _mix(d + tf.constant(0xB5297A4D, tf.uint32))))
    return tf.cast(tf.stack([a, b], axis=-1), tf.int64)


def split(seed, num) -> tf.Tensor:
    """`num` independent seeds derived from one: `fold_in(seed, i)` for i < num.

    Args:
        seed: int tensor of shape [2].
        num: how many seeds, a Python int.

    Returns:
        int64 tensor of shape [num, 2].
    """
    return tf.stack([fold_in(seed, i) for i in range(num)])
