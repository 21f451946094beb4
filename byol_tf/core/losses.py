"""The BYOL regression loss, the online probe's loss and the records a training step returns."""

import typing

import keras
import tensorflow as tf


class ProbeLoss(typing.NamedTuple):
    """The online linear probe's loss on one batch and what its accuracy metric needs."""

    loss: tf.Tensor  # mean cross-entropy over the labelled examples
    labels: tf.Tensor  # int32 [B], unlabelled examples (-1) mapped to 0
    logits: tf.Tensor  # float32 [B, num_classes]
    weights: tf.Tensor  # float32 [B], 0 for unlabelled examples


class StepLosses(typing.NamedTuple):
    """The losses of one training batch."""

    total: tf.Tensor  # what the optimiser minimises: byol (+ probe.loss)
    byol: tf.Tensor  # the symmetrised BYOL loss, mean over the batch
    embedding_std: tf.Tensor  # std of the l2-normalised online projections of view 1
    probe: ProbeLoss | None  # None without labels or without a probe


def probe_loss(logits, labels) -> ProbeLoss:
    """Mean cross-entropy of a linear probe over the labelled examples of a batch.

    Args:
        logits: float32 (or float64) `[batch, num_classes]`.
        labels: int `[batch]`; -1 marks an unlabelled example (e.g. stl10's unlabelled
            split), which is masked out.

    Returns:
        A `ProbeLoss`; its loss is 0 when no example is labelled.
    """
    labels = tf.cast(labels, tf.int32)
    weights = tf.cast(labels >= 0, logits.dtype)
    labels = tf.maximum(labels, 0)
    cross_entropy = keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
    loss = tf.reduce_sum(cross_entropy * weights) / tf.maximum(tf.reduce_sum(weights), 1.0)
    return ProbeLoss(loss, labels, logits, weights)


def l2_normalize(x, axis=-1, epsilon=1e-12) -> tf.Tensor:
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


def loss_dtype(dtype) -> tf.DType:
    """The dtype losses are computed in: float64 for float64 inputs, float32 otherwise."""
    return tf.float64 if tf.as_dtype(dtype) == tf.float64 else tf.float32


def regression_loss(prediction, target) -> tf.Tensor:
    """Per-example BYOL loss `2 - 2 cos(prediction, target)` (docs/algorithm.md §2).

    Equals `||p/||p|| - z/||z|| ||^2`. Computed in float32 for float32, float16 and
    bfloat16 inputs, so mixed-precision training keeps an exact loss, and in float64 for
    float64 inputs.

    Args:
        prediction: `[batch, dim]` online predictions q(g(f(v))).
        target: `[batch, dim]` target projections g'(f'(v')); the caller stops their gradient.

    Returns:
        A `[batch]` float32 (float64 for float64 inputs) tensor with values in [0, 4].
    """
    dtype = loss_dtype(prediction.dtype)
    p = l2_normalize(tf.cast(prediction, dtype))
    z = l2_normalize(tf.cast(target, dtype))
    return 2.0 - 2.0 * tf.reduce_sum(p * z, axis=-1)


def symmetric_loss(p1, p2, z1, z2) -> tf.Tensor:
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


def embedding_std(z) -> tf.Tensor:
    """Mean over dimensions of the batch std of l2-normalised vectors (collapse signal).

    A healthy `d`-dimensional embedding has a value near `1/sqrt(d)`; a collapsed one, 0.

    Args:
        z: `[batch, dim]` embeddings.

    Returns:
        A float32 scalar.
    """
    z = l2_normalize(tf.cast(z, tf.float32))
    return tf.reduce_mean(tf.math.reduce_std(z, axis=0))
