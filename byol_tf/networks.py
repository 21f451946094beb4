"""Encoders (ResNet v1, optionally with the CIFAR stem) and the MLP heads of BYOL."""

import keras
from keras import layers

# BatchNorm settings of the official code (decay 0.9, epsilon 1e-5).
_BN_MOMENTUM = 0.9
_BN_EPSILON = 1e-5
_STAGES = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3)}


def _batch_norm(synchronized, name, zero_init=False):
    return layers.BatchNormalization(
        momentum=_BN_MOMENTUM,
        epsilon=_BN_EPSILON,
        synchronized=synchronized,
        gamma_initializer="zeros" if zero_init else "ones",
        name=name,
    )


def _conv(filters, kernel_size, strides, name):
    return layers.Conv2D(
        filters,
        kernel_size,
        strides=strides,
        padding="same",
        use_bias=False,
        kernel_initializer="he_normal",
        name=name,
    )


def _basic_block(x, filters, strides, sync, name, zero_init=False):
    """Two 3×3 convolutions with an identity (or projection) shortcut.

    `zero_init` starts the last BatchNorm's γ at 0, so the block starts as its shortcut.
    """
    shortcut = x
    if strides != 1 or x.shape[-1] != filters:
        shortcut = _conv(filters, 1, strides, f"{name}_proj")(x)
        shortcut = _batch_norm(sync, f"{name}_proj_bn")(shortcut)
    y = _conv(filters, 3, strides, f"{name}_conv1")(x)
    y = layers.ReLU(name=f"{name}_relu1")(_batch_norm(sync, f"{name}_bn1")(y))
    y = _conv(filters, 3, 1, f"{name}_conv2")(y)
    y = _batch_norm(sync, f"{name}_bn2", zero_init)(y)
    return layers.ReLU(name=f"{name}_out")(layers.Add(name=f"{name}_add")([shortcut, y]))


def _bottleneck_block(x, filters, strides, sync, name, zero_init=False):
    """1×1 → 3×3 (strided, as in v1.5 and the official code) → 1×1 with 4× expansion.

    `zero_init` starts the last BatchNorm's γ at 0, so the block starts as its shortcut.
    """
    out_filters = 4 * filters
    shortcut = x
    if strides != 1 or x.shape[-1] != out_filters:
        shortcut = _conv(out_filters, 1, strides, f"{name}_proj")(x)
        shortcut = _batch_norm(sync, f"{name}_proj_bn")(shortcut)
    y = _conv(filters, 1, 1, f"{name}_conv1")(x)
    y = layers.ReLU(name=f"{name}_relu1")(_batch_norm(sync, f"{name}_bn1")(y))
    y = _conv(filters, 3, strides, f"{name}_conv2")(y)
    y = layers.ReLU(name=f"{name}_relu2")(_batch_norm(sync, f"{name}_bn2")(y))
    y = _conv(out_filters, 1, 1, f"{name}_conv3")(y)
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
):
    """A ResNet v1 encoder mapping images to the globally average-pooled representation.

    Args:
        depth: 18 or 34 (basic blocks) or 50 (bottleneck blocks).
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

    Returns:
        A functional `keras.Model` from `[batch, H, W, C]` images to `[batch, features]`, with
        features 512·w for depths 18/34 and 2048·w for 50.

    Raises:
        ValueError: for an unsupported depth or a non-positive width multiplier.
    """
    if depth not in _STAGES:
        raise ValueError(f"depth must be one of {sorted(_STAGES)}. Received: depth={depth}")
    if not width_multiplier > 0:
        raise ValueError(
            f"width_multiplier must be positive. Received: width_multiplier={width_multiplier}"
        )
    block = _bottleneck_block if depth >= 50 else _basic_block
    inputs = keras.Input(shape=input_shape, name="images")
    width = max(int(round(64 * width_multiplier)), 1)
    if cifar_stem:
        x = _conv(width, 3, 1, "stem_conv")(inputs)
    else:
        x = _conv(width, 7, 2, "stem_conv")(inputs)
    x = layers.ReLU(name="stem_relu")(_batch_norm(synchronized_bn, "stem_bn")(x))
    if not cifar_stem:
        x = layers.MaxPooling2D(3, strides=2, padding="same", name="stem_pool")(x)
    for stage, blocks in enumerate(_STAGES[depth]):
        filters = max(int(round(64 * width_multiplier * 2**stage)), 1)
        for index in range(blocks):
            strides = 2 if stage > 0 and index == 0 else 1
            block_name = f"stage{stage + 1}_block{index + 1}"
            x = block(x, filters, strides, synchronized_bn, block_name, zero_init_residual)
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
):
    """The projector / predictor MLP: Dense(hidden) → BatchNorm → ReLU → Dense(output).

    Args:
        input_dim: size of the input vectors.
        hidden_dim: width of the hidden layer (4096 in the paper).
        output_dim: size of the output vectors (256 in the paper).
        synchronized_bn: synchronise BatchNorm statistics across replicas.
        name: model name.
        batch_norm: include the BatchNorm (the paper's heads do; an ablation may not).
        output_bias: give the output Dense a bias (the official heads have none: False).

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
    inputs = keras.Input(shape=(input_dim,), name="features")
    x = layers.Dense(hidden_dim, name="hidden")(inputs)
    if batch_norm:
        x = _batch_norm(synchronized_bn, "hidden_bn")(x)
    x = layers.ReLU(name="hidden_relu")(x)
    outputs = layers.Dense(output_dim, use_bias=output_bias, name="output")(x)
    return keras.Model(inputs, outputs, name=name)
