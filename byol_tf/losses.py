"""The BYOL regression loss and its helpers."""

import tensorflow as tf


def l2_normalize(x, axis=-1, epsilon=1e-12):
    """Scales `x` to unit l2 norm along `axis`.

    Args:
        x: float tensor, e.g. `[batch, dim]`.
        axis: axis along which to normalise.
        epsilon: lower bound on the squared norm, so a zero vector stays finite.

    Returns:
        A tensor of the shape and dtype of `x`.
    """
    squared_norm = tf.reduce_sum(tf.square(x), axis=axis, keepdims=True)
    return x * tf.math.rsqrt(tf.maximum(squared_norm, epsilon))


def regression_loss(prediction, target):
    """Per-example BYOL loss `2 - 2 cos(prediction, target)` (docs/algorithm.md §2).

    Equals `||p/||p|| - z/||z|| ||^2`. Computed in float32 whatever the inputs'
    dtype, so mixed-precision training keeps an exact loss.

    Args:
        prediction: `[batch, dim]` online predictions q(g(f(v))).
        target: `[batch, dim]` target projections g'(f'(v')); the caller stops their gradient.

    Returns:
        A `[batch]` float32 tensor with values in [0, 4].
    """
    p = l2_normalize(tf.cast(prediction, tf.float32))
    z = l2_normalize(tf.cast(target, tf.float32))
    return 2.0 - 2.0 * tf.reduce_sum(p * z, axis=-1)


def symmetric_loss(p1, p2, z1, z2):
    """Sum of both view orderings, per example: l(p1, z2) + l(p2, z1).

    Args:
        p1: `[batch, dim]` online prediction of view 1.
        p2: `[batch, dim]` online prediction of view 2.
        z1: `[batch, dim]` target projection of view 1.
        z2: `[batch, dim]` target projection of view 2.

    Returns:
        A `[batch]` float32 tensor with values in [0, 8]. Summing (not averaging) the two
        orderings is the paper's choice; averaging halves the gradient (docs/algorithm.md §2).
    """
    return regression_loss(p1, z2) + regression_loss(p2, z1)


def embedding_std(z):
    """Mean over dimensions of the batch std of l2-normalised vectors (collapse signal).

    A healthy `d`-dimensional embedding has a value near `1/sqrt(d)`; a collapsed one, 0.

    Args:
        z: `[batch, dim]` embeddings.

    Returns:
        A float32 scalar.
    """
    z = l2_normalize(tf.cast(z, tf.float32))
    return tf.reduce_mean(tf.math.reduce_std(z, axis=0))
