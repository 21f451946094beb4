"""Encoders and heads: output sizes, parameter counts of the reference ResNets, options."""

import keras
import numpy as np
import pytest

from byol_tf.core import networks


def _trainable_count(model):
    return sum(int(np.prod(v.shape)) for v in model.trainable_weights)


@pytest.mark.parametrize(
    "depth, expected_params, features",
    # torchvision's resnet18 / resnet50 minus their 1000-way classifier.
    [
        (18, 11_689_512 - 513_000, 512),
        (50, 25_557_032 - 2_049_000, 2048),
        (101, 44_549_160 - 2_049_000, 2048),
        (152, 60_192_808 - 2_049_000, 2048),
    ],
)
def test_resnet_matches_reference_parameter_counts(depth, expected_params, features):
    model = networks.resnet(depth)
    assert _trainable_count(model) == expected_params
    assert model.output_shape == (None, features)


def test_cifar_stem_keeps_resolution_and_has_no_max_pool():
    model = networks.resnet(18, cifar_stem=True, input_shape=(32, 32, 3))
    names = [layer.name for layer in model.layers]
    assert "stem_pool" not in names
    assert model.get_layer("stem_conv").kernel.shape[:2] == (3, 3)
    assert model.get_layer("stage1_block1_out").output.shape[1:3] == (32, 32)
    assert model.get_layer("stage4_block2_out").output.shape[1:3] == (4, 4)


def test_width_multiplier_scales_channels_and_resnet34_has_more_blocks():
    narrow = networks.resnet(18, width_multiplier=0.25, cifar_stem=True)
    assert narrow.output_shape == (None, 128)
    deep = networks.resnet(34, width_multiplier=0.25, cifar_stem=True)
    assert len(deep.layers) > len(narrow.layers)
    x = np.zeros((2, 16, 16, 3), "float32")
    assert deep(x).shape == (2, 128)


def test_synchronized_bn_flag_reaches_every_batchnorm():
    model = networks.resnet(18, width_multiplier=0.125, synchronized_bn=True)
    bns = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert bns and all(layer.synchronized for layer in bns)


def test_mlp_head_is_dense_bn_relu_dense():
    head = networks.mlp_head(32, 64, 16)
    kinds = [type(layer).__name__ for layer in head.layers[1:]]
    # GroupedBatchNormalization is Keras's BatchNormalization that can also normalise per view.
    assert kinds == ["Dense", "GroupedBatchNormalization", "ReLU", "Dense"]
    assert isinstance(head.layers[2], keras.layers.BatchNormalization)
    assert head.output_shape == (None, 16)


@pytest.mark.parametrize(
    "kwargs, match",
    [({"depth": 20}, "depth"), ({"depth": 18, "width_multiplier": 0}, "width_multiplier")],
)
def test_resnet_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        networks.resnet(**kwargs)


def test_mlp_head_rejects_bad_sizes():
    with pytest.raises(ValueError, match="hidden_dim"):
        networks.mlp_head(8, 0, 4)


@pytest.mark.parametrize("depth, last_bn", [(18, "bn2"), (50, "bn3")])
def test_zero_init_residual_zeroes_the_last_batchnorm_gamma_of_each_block(depth, last_bn):
    model = networks.resnet(depth, 0.125, input_shape=(32, 32, 3), zero_init_residual=True)
    default = networks.resnet(depth, 0.125, input_shape=(32, 32, 3))
    bns = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    last = [layer for layer in bns if layer.name.endswith(f"_{last_bn}")]
    assert len(last) == (8 if depth == 18 else 16)
    for layer in bns:
        expected = 0.0 if layer in last else 1.0
        np.testing.assert_array_equal(layer.gamma.numpy(), expected)
    for layer in default.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            np.testing.assert_array_equal(layer.gamma.numpy(), 1.0)
    # Each residual branch starts at 0, so a block outputs relu(shortcut): the first block of a
    # stage without projection passes its (non-negative) input through.
    block_in = model.get_layer("stem_pool").output
    block_out = model.get_layer("stage1_block1_out").output
    if depth == 18:
        probe = keras.Model(model.input, [block_in, block_out])
        x_in, x_out = probe(np.random.default_rng(0).normal(size=(2, 32, 32, 3)), training=False)
        np.testing.assert_allclose(x_out.numpy(), x_in.numpy(), atol=1e-6)


def test_head_output_bias_can_be_left_out_as_the_official_heads_do():
    with_bias = networks.mlp_head(8, 16, 4)
    without = networks.mlp_head(8, 16, 4, output_bias=False)
    assert with_bias.get_layer("output").bias is not None
    assert without.get_layer("output").use_bias is False
    assert _trainable_count(with_bias) - _trainable_count(without) == 4
    assert without(np.zeros((2, 8), "float32")).shape == (2, 4)


def test_haiku_initialisation_is_a_truncated_normal_of_std_one_over_sqrt_fan_in():
    keras.utils.set_random_seed(0)
    model = networks.resnet(50, 0.25, kernel_initializer="haiku")
    kernel = model.get_layer("stage3_block1_conv2").kernel.numpy()  # [3, 3, 64, 64]
    fan_in = 3 * 3 * 64
    # Haiku's TruncatedNormal(1/sqrt(fan_in)): 1/sqrt(fan_in) times a standard normal
    # truncated to [-2, 2], whose std is 0.87962566 (tests/test_paper_init.py has the details).
    assert abs(kernel.std() / (0.87962566 / np.sqrt(fan_in)) - 1) < 0.05  # 36,864 draws
    assert np.abs(kernel).max() <= 2 / np.sqrt(fan_in) + 1e-6
    he = networks.resnet(50, 0.25).get_layer("stage3_block1_conv2").kernel.numpy()
    assert abs(he.std() / np.sqrt(2 / fan_in) - 1) < 0.05  # He normal: sqrt(2) larger
    with pytest.raises(ValueError, match="kernel_initializer must be one of"):
        networks.resnet(18, kernel_initializer="glorot")


@pytest.mark.parametrize("cifar_stem", [False, True], ids=["standard_stem", "cifar_stem"])
def test_every_positive_image_size_suits_the_encoder(cifar_stem):
    # "same" padding: each stride-2 layer maps 1x1 to 1x1, so --image_size needs no minimum
    # beyond 1 (training and export at 1 px run too; the views just carry little information).
    encoder = networks.resnet(18, 0.125, cifar_stem, input_shape=(1, 1, 3))
    assert encoder(np.zeros((2, 1, 1, 3), np.float32), training=True).shape == (2, 64)
