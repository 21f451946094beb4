"""Encoders (ResNet v1, optionally with the CIFAR stem) and the MLP heads of BYOL."""

import contextlib
import math
import threading
from collections.abc import Iterator

import keras
import tensorflow as tf
from keras import layers, ops

from byol_tf.settings.choices import KERNEL_INITIALIZERS

# BatchNorm settings of the official code (decay 0.9, epsilon 1e-5).
_BN_MOMENTUM = 0.9
_BN_EPSILON = 1e-5
# Blocks per stage; depths 50 and above use bottleneck blocks (He et al., 2016; the official
# code's ResNet50 ... ResNet200).
STAGES = {
    18: (2, 2, 2, 2),
    34: (3, 4, 6, 3),
    50: (3, 4, 6, 3),
    101: (3, 4, 23, 3),
    152: (3, 8, 36, 3),
    200: (3, 24, 36, 3),
}

TRUNCATED_STD = 0.87962566103423978  # the std of a standard normal truncated to [-2, 2]


@keras.saving.register_keras_serializable(package="byol_tf")
class HaikuTruncatedNormal(keras.initializers.TruncatedNormal):
    """Haiku's default weight initialisation, that of the official BYOL network.

    `hk.Conv2D` and `hk.Linear` without `w_init` draw `TruncatedNormal(stddev=1/sqrt(fan_in))`:
    `stddev` times a standard normal truncated to [-2, 2], so the weights' std is
    `TRUNCATED_STD / sqrt(fan_in)` ≈ 0.88 / sqrt(fan_in) and none exceeds `2 / sqrt(fan_in)`
    (Keras's `VarianceScaling(1, "fan_in", "truncated_normal")` corrects the std for the
    truncation; Haiku does not). `fan_in` is the product of the kernel's dimensions but the
    last (height × width × input channels; a dense layer's input size), as Haiku's.

    Args:
        seed: an int or `keras.random.SeedGenerator` (as Keras's initializers); None: random.
    """

    def __init__(self, seed=None) -> None:
        super().__init__(mean=0.0, stddev=1.0, seed=seed)

    def __call__(self, shape, dtype=None) -> tf.Tensor:
        fan_in = math.prod(shape[:-1]) if len(shape) > 1 else 1
        return keras.random.truncated_normal(
            shape, mean=0.0, stddev=1.0 / math.sqrt(fan_in), dtype=dtype, seed=self.seed
        )

    def get_config(self) -> dict:
        return {"seed": super().get_config()["seed"]}


def make_initializer(name) -> keras.initializers.Initializer | str:
    """The Keras kernel initializer for one of `KERNEL_INITIALIZERS` (a new one per call).

    "haiku": `HaikuTruncatedNormal`; "he_normal": Keras's He normal.
    """
    if name == "haiku":
        return HaikuTruncatedNormal()
    if name == "he_normal":
        return "he_normal"
    raise ValueError(f"kernel_initializer must be one of {KERNEL_INITIALIZERS}. Received: {name!r}")


def make_dense_initializer(name) -> keras.initializers.Initializer | str:
    """The heads' and probe's dense kernel initializer for a run whose encoder takes `name`:
    Haiku's (`hk.Linear`'s) for "haiku", else (or None) Keras's Dense default, Glorot uniform."""
    if name is None or name == "he_normal":
        return "glorot_uniform"
    return make_initializer(name)


_GROUPS = threading.local()


@contextlib.contextmanager
def batch_groups(groups) -> Iterator[None]:
    """Inside this context, `GroupedBatchNormalization` layers normalise `groups` blocks.

    A batch of `groups · B` examples is read as `groups` consecutive blocks of B (e.g. two
    views concatenated along the batch axis); in training mode each block is normalised with
    its own statistics and the moving statistics are updated block after block, exactly as
    if each block had been passed through the network on its own. The setting is
    per thread (each replica of a distribution strategy enters it itself).

    Args:
        groups: a positive int; 1 is ordinary BatchNorm.
    """
    if not isinstance(groups, int) or groups < 1:
        raise ValueError(f"groups must be a positive int. Received: groups={groups!r}")
    previous = getattr(_GROUPS, "value", 1)
    _GROUPS.value = groups
    try:
        yield
    finally:
        _GROUPS.value = previous


@keras.saving.register_keras_serializable(package="byol_tf")
class GroupedBatchNormalization(layers.BatchNormalization):
    """Keras's `BatchNormalization`, which can also normalise blocks of a batch separately.

    Outside `batch_groups(n)` (and in inference mode) it is the Keras layer. Inside, for
    channels-last inputs, a training-mode call on `n · B` examples gives the same outputs,
    gradients and moving statistics as `n` calls on the consecutive blocks of B: BYOL
    forwards both views as one batch (twice the batch per convolution) while keeping the
    per-view BatchNorm statistics of the paper's separate passes.

    A training-mode call on one group (the usual case) runs TensorFlow's fused BatchNorm
    kernel where it can: float32, bfloat16 or float16 channels-last inputs of rank 2 or 4,
    not synchronised, without renormalisation. Statistics, normalisation and (through the
    op's gradient) the backward pass are then one kernel each, where Keras's layer computes
    them op by op in float32; the outputs, gradients and moving statistics are Keras's
    (the moving variance is the biased batch variance, as Keras keeps it), and bfloat16
    inputs reach the kernel as they are on CPUs (the whole step 1.23× faster on a CPU with
    native bfloat16; bench/RESULTS.md). Anything else is Keras's code.
    """

    def call(self, inputs, training=None, mask=None) -> tf.Tensor:
        groups = getattr(_GROUPS, "value", 1)
        if not training or not self.trainable or mask is not None:
            return super().call(inputs, training=training, mask=mask)
        if groups == 1:
            if self._fusable(inputs):
                return self._fused_training_call(inputs)
            return super().call(inputs, training=training, mask=mask)
        if self.renorm or self.axis not in (-1, len(inputs.shape) - 1):
            raise ValueError(
                "Grouped batch statistics need channels-last BatchNorm without renorm. "
                f"Received: axis={self.axis}, renorm={self.renorm} in layer {self.name!r}"
            )
        compute_dtype = keras.backend.result_type(inputs.dtype, "float32")
        x = ops.cast(inputs, compute_dtype)
        shape = ops.shape(x)
        blocks = ops.reshape(x, (groups, -1, *shape[1:]))  # [groups, B, ..., C]
        axes = list(range(1, len(blocks.shape) - 1))
        if self.synchronized:
            moments = [ops.moments(blocks[g], axes=[a - 1 for a in axes], synchronized=True)
                       for g in range(groups)]  # fmt: skip
            mean = ops.stack([m for m, _ in moments])
            variance = ops.stack([v for _, v in moments])
        else:
            mean, variance = ops.moments(blocks, axes=axes)  # [groups, C] each
        moving_mean = ops.cast(self.moving_mean, compute_dtype)
        moving_variance = ops.cast(self.moving_variance, compute_dtype)
        for g in range(groups):  # one update per block, in order, as separate calls make
            moving_mean = moving_mean * self.momentum + mean[g] * (1.0 - self.momentum)
            moving_variance = moving_variance * self.momentum + variance[g] * (1.0 - self.momentum)
        self.moving_mean.assign(ops.cast(moving_mean, self.moving_mean.dtype))
        self.moving_variance.assign(ops.cast(moving_variance, self.moving_variance.dtype))
        broadcast = (groups,) + (1,) * (len(axes)) + (-1,)
        outputs = ops.batch_normalization(
            blocks,
            ops.reshape(mean, broadcast),
            ops.reshape(variance, broadcast),
            axis=-1,
            offset=None if self.beta is None else ops.cast(self.beta, compute_dtype),
            scale=None if self.gamma is None else ops.cast(self.gamma, compute_dtype),
            epsilon=self.epsilon,
        )
        return ops.cast(ops.reshape(outputs, shape), self.compute_dtype)

    def _fusable(self, inputs):
        return (
            not self.synchronized
            and not self.renorm
            and len(inputs.shape) in (2, 4)
            and self.axis in (-1, len(inputs.shape) - 1)
            and inputs.dtype in (tf.float32, tf.bfloat16, tf.float16)
        )

    def _fused_training_call(self, inputs):
        x = inputs
        if x.dtype == tf.float16 or (x.dtype == tf.bfloat16 and _gpu_visible()):
            x = tf.cast(x, tf.float32)  # the kernels every device has
        channels = x.shape[-1]
        images = tf.reshape(x, [-1, 1, 1, channels]) if len(x.shape) == 2 else x
        outputs, mean, variance = tf.raw_ops.FusedBatchNormV3(
            x=images,
            scale=tf.ones([channels]) if self.gamma is None else tf.cast(self.gamma, tf.float32),
            offset=tf.zeros([channels]) if self.beta is None else tf.cast(self.beta, tf.float32),
            mean=tf.zeros([0]),
            variance=tf.zeros([0]),
            epsilon=self.epsilon,
            data_format="NHWC",
            is_training=True,
        )[:3]
        # The kernel returns the batch variance times n / (n - 1); Keras averages the biased one.
        count = tf.cast(tf.size(images) // channels, tf.float32)
        variance = variance * tf.maximum(count - 1.0, 1.0) / count
        for moving, batch in ((self.moving_mean, mean), (self.moving_variance, variance)):
            batch = tf.cast(batch, moving.dtype)
            moving.assign(moving * self.momentum + batch * (1.0 - self.momentum))
        return tf.cast(tf.reshape(outputs, tf.shape(inputs)), self.compute_dtype)


def _gpu_visible():
    return bool(tf.config.list_logical_devices("GPU"))


def supports_batch_groups(model) -> bool:
    """Whether every BatchNorm layer inside `model` is a `GroupedBatchNormalization`."""
    return all(
        isinstance(layer, GroupedBatchNormalization)
        for layer in _all_layers(model)
        if isinstance(layer, layers.BatchNormalization)
    )


def _all_layers(model):
    for layer in model.layers if hasattr(model, "layers") else ():
        yield layer
        yield from _all_layers(layer)


def _batch_norm(synchronized, name, zero_init=False):
    return GroupedBatchNormalization(
        momentum=_BN_MOMENTUM,
        epsilon=_BN_EPSILON,
        synchronized=synchronized,
        gamma_initializer="zeros" if zero_init else "ones",
        name=name,
    )


def _conv(filters, kernel_size, strides, name, init="he_normal"):
    # padding="same" is TensorFlow's 'SAME' rule (extra row/column at the bottom/right when
    # the padding is odd), which Haiku's 'SAME' follows too: imported official weights need it.
    return layers.Conv2D(
        filters,
        kernel_size,
        strides=strides,
        padding="same",
        use_bias=False,
        kernel_initializer=make_initializer(init),
        name=name,
    )


def _basic_block(x, filters, strides, sync, name, zero_init=False, first=False, init="he_normal"):
    """Two 3×3 convolutions with an identity (or projection) shortcut.

    `zero_init` starts the last BatchNorm's γ at 0, so the block starts as its shortcut.
    """
    del first  # basic blocks project only when the shape changes (ResNet-18/34)
    shortcut = x
    if strides != 1 or x.shape[-1] != filters:
        shortcut = _conv(filters, 1, strides, f"{name}_proj", init)(x)
        shortcut = _batch_norm(sync, f"{name}_proj_bn")(shortcut)
    y = _conv(filters, 3, strides, f"{name}_conv1", init)(x)
    y = layers.ReLU(name=f"{name}_relu1")(_batch_norm(sync, f"{name}_bn1")(y))
    y = _conv(filters, 3, 1, f"{name}_conv2", init)(y)
    y = _batch_norm(sync, f"{name}_bn2", zero_init)(y)
    return layers.ReLU(name=f"{name}_out")(layers.Add(name=f"{name}_add")([shortcut, y]))


def _bottleneck_block(
    x, filters, strides, sync, name, zero_init=False, first=False, init="he_normal"
):
    """1×1 → 3×3 (strided, as in v1.5 and the official code) → 1×1 with 4× expansion.

    The first block of every stage has a projection shortcut (the official code's
    `use_projection`), as does any block whose shape changes. `zero_init` starts the last
    BatchNorm's γ at 0, so the block starts as its shortcut.
    """
    out_filters = 4 * filters
    shortcut = x
    if first or strides != 1 or x.shape[-1] != out_filters:
        shortcut = _conv(out_filters, 1, strides, f"{name}_proj", init)(x)
        shortcut = _batch_norm(sync, f"{name}_proj_bn")(shortcut)
    y = _conv(filters, 1, 1, f"{name}_conv1", init)(x)
    y = layers.ReLU(name=f"{name}_relu1")(_batch_norm(sync, f"{name}_bn1")(y))
    y = _conv(filters, 3, strides, f"{name}_conv2", init)(y)
    y = layers.ReLU(name=f"{name}_relu2")(_batch_norm(sync, f"{name}_bn2")(y))
    y = _conv(out_filters, 1, 1, f"{name}_conv3", init)(y)
    y = _batch_norm(sync, f"{name}_bn3", zero_init)(y)
    return layers.ReLU(name=f"{name}_out")(layers.Add(name=f"{name}_add")([shortcut, y]))


def resnet(
    depth,
    width_multiplier=1,
    cifar_stem=False,
    input_shape=(None, None, 3),
    synchronized_bn=False,
    name=None,
    zero_init_residual=False,
    kernel_initializer="he_normal",
) -> keras.Model:
    """A ResNet v1 encoder mapping images to the globally average-pooled representation.

    Args:
        depth: 18 or 34 (basic blocks), or 50, 101, 152 or 200 (bottleneck blocks).
        width_multiplier: multiplies every layer's channel count (the paper's 2× etc.);
            a float below 1 gives narrow networks for small budgets.
        cifar_stem: use a 3×3 stride-1 stem without max-pool (for 32 px images) instead of
            the 7×7 stride-2 convolution and 3×3 stride-2 max-pool.
        input_shape: `(height, width, channels)`; `None` sizes accept any image size.
        synchronized_bn: synchronise BatchNorm statistics across replicas of a
            distribution strategy (the paper's setting for multi-device runs).
        name: model name; defaults to `resnet{depth}`.
        zero_init_residual: start the γ of the last BatchNorm of every residual block at 0,
            so that each block starts as its shortcut (the official Haiku ResNet's choice;
            docs/algorithm.md §1). False: γ = 1 everywhere.
        kernel_initializer: "he_normal" or "haiku" (`HaikuTruncatedNormal`: the official
            network's 1/sqrt(fan_in) times a standard normal truncated to [-2, 2]).

    Returns:
        A functional `keras.Model` from `[batch, H, W, C]` images to `[batch, features]`, with
        features 512·w for depths 18/34 and 2048·w from 50 on.

    Raises:
        ValueError: for an unsupported depth or a non-positive width multiplier.
    """
    if depth not in STAGES:
        raise ValueError(f"depth must be one of {sorted(STAGES)}. Received: depth={depth}")
    if not width_multiplier > 0:
        raise ValueError(
            f"width_multiplier must be positive. Received: width_multiplier={width_multiplier}"
        )
    init = kernel_initializer
    make_initializer(init)  # checks the name before anything is built
    block = _bottleneck_block if depth >= 50 else _basic_block
    inputs = keras.Input(shape=input_shape, name="images")
    width = max(int(round(64 * width_multiplier)), 1)
    if cifar_stem:
        x = _conv(width, 3, 1, "stem_conv", init)(inputs)
    else:
        x = _conv(width, 7, 2, "stem_conv", init)(inputs)
    x = layers.ReLU(name="stem_relu")(_batch_norm(synchronized_bn, "stem_bn")(x))
    if not cifar_stem:
        x = layers.MaxPooling2D(3, strides=2, padding="same", name="stem_pool")(x)
    for stage, blocks in enumerate(STAGES[depth]):
        filters = max(int(round(64 * width_multiplier * 2**stage)), 1)
        for index in range(blocks):
            strides = 2 if stage > 0 and index == 0 else 1
            block_name = f"stage{stage + 1}_block{index + 1}"
            x = block(
                x, filters, strides, synchronized_bn, block_name, zero_init_residual,
                first=index == 0, init=init,
            )  # fmt: skip
    outputs = layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inputs, outputs, name=name or f"resnet{depth}")


def mlp_head(
    input_dim,
    hidden_dim=4096,
    output_dim=256,
    synchronized_bn=False,
    name="mlp",
    batch_norm=True,
    output_bias=True,
    kernel_initializer=None,
) -> keras.Model:
    """The projector / predictor MLP: Dense(hidden) → BatchNorm → ReLU → Dense(output).

    Args:
        input_dim: size of the input vectors.
        hidden_dim: width of the hidden layer (4096 in the paper).
        output_dim: size of the output vectors (256 in the paper).
        synchronized_bn: synchronise BatchNorm statistics across replicas.
        name: model name.
        batch_norm: include the BatchNorm (the paper's heads do; an ablation may not).
        output_bias: give the output Dense a bias (the official heads have none: False).
        kernel_initializer: of both Dense layers, one of `KERNEL_INITIALIZERS` or None:
            "haiku" is `hk.Linear`'s default (the official heads'), None and "he_normal"
            Keras's Glorot uniform (`make_dense_initializer`). Biases start at 0.

    Returns:
        A functional `keras.Model` from `[batch, input_dim]` to `[batch, output_dim]`.
    """
    for arg, value in (
        ("input_dim", input_dim),
        ("hidden_dim", hidden_dim),
        ("output_dim", output_dim),
    ):
        if not isinstance(value, int) or value <= 0:
            raise ValueError(f"{arg} must be a positive int. Received: {arg}={value!r}")
    make_dense_initializer(kernel_initializer)  # checks the name before anything is built
    inputs = keras.Input(shape=(input_dim,), name="features")
    x = layers.Dense(
        hidden_dim, kernel_initializer=make_dense_initializer(kernel_initializer), name="hidden"
    )(inputs)
    if batch_norm:
        x = _batch_norm(synchronized_bn, "hidden_bn")(x)
    x = layers.ReLU(name="hidden_relu")(x)
    outputs = layers.Dense(
        output_dim,
        use_bias=output_bias,
        kernel_initializer=make_dense_initializer(kernel_initializer),
        name="output",
    )(x)
    return keras.Model(inputs, outputs, name=name)
