"""Experiment: Keras's BatchNormalization trained through TF's fused kernel (not in byol_tf).

Measured with `bench/profile_step.py --variants graph graph-fused-bn ...`: the step did not
get measurably faster (see bench/RESULTS.md), so byol_tf keeps Keras's own layer.
"""

import contextlib
from unittest import mock

import keras
import tensorflow as tf


class FusedBatchNormalization(keras.layers.BatchNormalization):
    """Keras's `BatchNormalization` that trains with `FusedBatchNormV3` where it can.

    In training mode, for float32 channels-last inputs of rank 2 or 4 without a mask, not
    synchronised and without renormalisation, the statistics, the normalisation and (through
    the op's registered gradient) the backward pass each run as one kernel; rank 2 is reshaped
    to `[N, 1, 1, C]`. Everything else is Keras's code path. The moving variance is updated
    with the biased batch variance, as Keras does, not the Bessel-corrected one the kernel
    returns. Outputs, gradients and moving statistics matched Keras's layer within 4e-6.
    """

    def _fusable(self, inputs, training, mask):
        return (
            training
            and self.trainable
            and mask is None
            and not self.synchronized
            and not self.renorm
            and len(inputs.shape) in (2, 4)
            and self.axis in (-1, len(inputs.shape) - 1)
            and keras.backend.result_type(inputs.dtype, "float32") == "float32"
        )

    def call(self, inputs, training=None, mask=None):
        if not self._fusable(inputs, training, mask):
            return super().call(inputs, training=training, mask=mask)
        # float32 and bfloat16 inputs go to the kernel as they are (its statistics and scale
        # are float32 either way); other types are computed in float32.
        x = inputs if inputs.dtype in (tf.float32, tf.bfloat16) else tf.cast(inputs, tf.float32)
        channels = x.shape[-1]
        images = tf.reshape(x, [-1, 1, 1, channels]) if len(x.shape) == 2 else x
        gamma = tf.cast(self.gamma, tf.float32) if self.scale else tf.ones([channels])
        beta = tf.cast(self.beta, tf.float32) if self.center else tf.zeros([channels])
        outputs, mean, variance = tf.compat.v1.nn.fused_batch_norm(
            images, gamma, beta, epsilon=self.epsilon, data_format="NHWC", is_training=True
        )[:3]
        # The kernel returns the unbiased variance n/(n-1)·σ²; Keras averages the biased σ².
        count = tf.cast(tf.size(images) // channels, tf.float32)
        variance = variance * tf.maximum(count - 1.0, 1.0) / count
        momentum = self.momentum
        self.moving_mean.assign(self.moving_mean * momentum + mean * (1.0 - momentum))
        self.moving_variance.assign(self.moving_variance * momentum + variance * (1.0 - momentum))
        return tf.cast(tf.reshape(outputs, tf.shape(x)), self.compute_dtype)


@contextlib.contextmanager
def fused_batch_norm():
    """Within the block, `keras.layers.BatchNormalization(...)` builds the fused layer.

    byol_tf.networks looks the class up through `keras.layers` when it builds a network, so
    models built inside the block (and clones of them) use `FusedBatchNormalization`.
    """
    with mock.patch.object(keras.layers, "BatchNormalization", FusedBatchNormalization):
        yield
