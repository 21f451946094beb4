"""A/B switch: byol_tf's BatchNorm with Keras's op-by-op training path instead of the fused kernel.

byol_tf.core.networks.GroupedBatchNormalization trains through TF's `FusedBatchNormV3` where it can
(one group, float32/bfloat16/float16, rank 2 or 4, not synchronised). After
`use_keras_batch_norm()` it takes Keras's own code path for the rest of the process
(statistics, normalisation and their gradients op by op, in float32), which is what byol_tf ran
before the fused path; the benchmarks call it in a contender's own process to measure what the
fused kernel is worth, side by side.
"""


def use_keras_batch_norm():
    """From now on in this process, every byol_tf BatchNorm layer trains through Keras's path."""
    from byol_tf.core import networks

    networks.GroupedBatchNormalization._fusable = lambda *_: False
