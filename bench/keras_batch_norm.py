"""A/B switch: byol_tf's BatchNorm with Keras's op-by-op training path instead of the fused kernel.

byol_tf.networks.GroupedBatchNormalization trains through TF's `FusedBatchNormV3` where it can
(one group, float32/bfloat16/float16, rank 2 or 4, not synchronised). Inside
`keras_batch_norm()` it takes Keras's own code path (statistics, normalisation and their
gradients op by op, in float32), which is what byol_tf ran before the fused path; the
benchmarks use it to measure what the fused kernel is worth, side by side.
"""

import contextlib
from unittest import mock


@contextlib.contextmanager
def keras_batch_norm():
    """Within the block, every byol_tf BatchNorm layer trains through Keras's code path."""
    from byol_tf import networks

    with mock.patch.object(networks.GroupedBatchNormalization, "_fusable", lambda *_: False):
        yield
