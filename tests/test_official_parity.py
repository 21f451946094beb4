"""Imported official checkpoints against the official network itself, built in Haiku.

The Haiku network follows the official code (deepmind-research byol/utils/networks.py and
byol_experiment.py `_forward`): ImageNet normalisation, Haiku's ResNet v1 torso with 'SAME'
padding and projection shortcuts in every block group, BatchNorm decay 0.9 and ε 1e-5, MLP heads
Linear → BatchNorm → ReLU → Linear without bias, and a linear classifier on the embedding. It
gets random weights and random BatchNorm statistics, is written in the official checkpoint
format by dill (`tests/official_format.py`: dill 0.3.2 in this leg, as in August 2020, with
Haiku's `frozendict` or `FlatMapping` mappings), imported, and both networks run in inference
mode on the same images. Besides the network of today's official code, a network as the
official code built it before 2020-08-17 (a 64-channel stem at every width, here a stem
narrower than the blocks) with the stem re-created (`initial_conv_1`, `initial_batchnorm_1`).

Runs in the `parity` leg (scripts/test.sh --parity), where dm-haiku and jax are installed.
"""

import numpy as np
import official_format
import pytest
import tensorflow as tf

from byol_tf.official import importer
from byol_tf.runs import checkpoints

pytestmark = pytest.mark.parity
hk = pytest.importorskip("haiku")
jax = pytest.importorskip("jax")
jnp = jax.numpy

_BLOCKS = {50: (3, 4, 6, 3), 200: (3, 24, 36, 3)}
_BN = dict(decay_rate=0.9, eps=1e-5, create_scale=True, create_offset=True)
# The largest difference allowed, relative to the largest official output (float32).
_TOLERANCE = 1e-4


def _torso_class(stem_padding, stem=None, recreated_stem=False):
    class Torso(hk.Module):
        """The official ResNet v1 torso; `stem_padding` only for the mutation check. `stem`:
        its channels when not 64 × width; `recreated_stem`: the stem modules made twice, so
        that Haiku names the ones in use `initial_conv_1` and `initial_batchnorm_1`."""

        def __init__(self, depth, width):
            super().__init__(name=f"res_net{depth}")  # the official module name
            for _ in range(2 if recreated_stem else 1):
                self.initial_conv = hk.Conv2D(
                    stem or int(64 * width), 7, stride=2, with_bias=False, padding=stem_padding,
                    name="initial_conv",
                )  # fmt: skip
                self.initial_batchnorm = hk.BatchNorm(name="initial_batchnorm", **_BN)
            self.groups = [
                hk.nets.ResNet.BlockGroup(
                    channels=int(256 * width) * 2**g,
                    num_blocks=n,
                    stride=(1, 2, 2, 2)[g],
                    bn_config=_BN,
                    resnet_v2=False,
                    bottleneck=True,
                    use_projection=True,
                    name=f"block_group_{g}",
                )  # fmt: skip
                for g, n in enumerate(_BLOCKS[depth])
            ]

        def __call__(self, x, is_training):
            x = jax.nn.relu(self.initial_batchnorm(self.initial_conv(x), is_training))
            x = hk.max_pool(x, window_shape=(1, 3, 3, 1), strides=(1, 2, 2, 1), padding="SAME")
            for group in self.groups:
                x = group(x, is_training, False)
            return jnp.mean(x, axis=(1, 2))

    return Torso


def _mlp(name, hidden, output, x, is_training):
    with hk.experimental.name_scope(name):
        x = hk.Linear(hidden, with_bias=True)(x)
        x = jax.nn.relu(hk.BatchNorm(**_BN)(x, is_training))
        return hk.Linear(output, with_bias=False)(x)


def _official_network(
    depth, width, hidden, projection, classes, stem_padding="SAME", stem=None, recreated=False
):  # fmt: skip
    def forward(images, is_training):
        mean = jnp.array(importer.OFFICIAL_MEAN).reshape(1, 1, 1, 3)
        std = jnp.array(importer.OFFICIAL_STD).reshape(1, 1, 1, 3)
        torso = _torso_class(stem_padding, stem, recreated)(depth, width)
        embedding = torso((images - mean) / std, is_training)
        proj = _mlp("projector", hidden, projection, embedding, is_training)
        pred = _mlp("predictor", hidden, projection, proj, is_training)
        logits = hk.Linear(classes, name="classifier")(jax.lax.stop_gradient(embedding))
        return {"embedding": embedding, "projection": proj, "prediction": pred, "logits": logits}

    return hk.without_apply_rng(hk.transform_with_state(forward))


def _random_like(tree_params, tree_state, seed):
    shapes = {m: {n: list(v.shape) for n, v in d.items()} for m, d in tree_params.items()}
    states = {m: {n: list(v.shape) for n, v in d.items()} for m, d in tree_state.items()}
    return official_format.random_trees(shapes, states, seed=seed)


def _worst(ours, reference):
    """Largest |difference| of each output over the largest |official output|."""
    return {
        name: float(np.max(np.abs(np.asarray(ours[name]) - np.asarray(reference[name]))))
        / float(np.max(np.abs(np.asarray(reference[name]))))
        for name in reference
    }


# (depth, width, image size, hidden, projection, classes, stem, re-created stem, Haiku mapping)
CASES = [
    pytest.param((50, 1 / 8, 64, 128, 32, 10, None, False, "frozendict"), id="res50"),
    pytest.param((200, 1 / 16, 64, 128, 32, 10, None, False, "FlatMapping"), id="res200"),
    # before the official fix of 2020-08-17: a stem that does not follow the multiplier
    pytest.param((50, 1 / 8, 64, 128, 32, 10, 4, True, "frozendict"), id="res50_stem_1"),
    # the published ResNet-50 ×1 at its size (about 1 min)
    pytest.param(
        (50, 1, 224, 4096, 256, 1000, None, False, "FlatMapping"),
        id="res50x1",
        marks=pytest.mark.slow,
    ),  # fmt: skip
]


@pytest.fixture(scope="module", params=CASES)
def case(request, tmp_path_factory):
    depth, width, size, hidden, projection, classes, stem, recreated, mapping = request.param
    network = _official_network(
        depth, width, hidden, projection, classes, stem=stem, recreated=recreated
    )
    count = 4 if size < 224 else 2
    images = np.random.default_rng(0).integers(0, 256, (count, size, size, 3), dtype=np.uint8)
    unit = (images / 255.0).astype(np.float32)
    params, state = network.init(jax.random.PRNGKey(0), unit, True)
    params, state = _random_like(params, state, seed=depth)
    target_params, target_state = _random_like(params, state, seed=depth + 1)
    official_out, _ = network.apply(params, state, unit, False)
    folder = tmp_path_factory.mktemp(f"res{depth}")
    path = str(folder / f"pretrain_res{depth}.pkl")
    official_format.write(path, params, target_params, state, target_state, mapping=mapping)
    result = importer.import_checkpoint(
        path, str(folder / "run"), str(folder / "export"), image_size=size, log=lambda line: None
    )
    return dict(
        depth=depth, width=width, params=params, state=state, target=(target_params, target_state),
        images=images, unit=unit, official=official_out, result=result, folder=folder,
        sizes=(hidden, projection, classes), network=network, stem=stem, recreated=recreated,
        mapping=mapping,
    )  # fmt: skip


def test_the_file_holds_the_names_and_mappings_of_the_case(case):
    names = set(case["params"])
    stem = f"res_net{case['depth']}/~/initial_conv"
    assert (f"{stem}_1" in names, stem in names) == (case["recreated"], not case["recreated"])
    arch = importer.Architecture(**case["result"]["architecture"])
    assert arch.stem_width == case["stem"]
    with open(case["folder"] / f"pretrain_res{case['depth']}.pkl", "rb") as handle:
        content = handle.read()
    assert f"haiku._src.data_structures\n{case['mapping']}".encode() in content
    assert b"_create_namedtuple" in content  # written by dill


def _keras_outputs(model, unit):
    normalized = (unit - np.array(importer.OFFICIAL_MEAN)) / np.array(importer.OFFICIAL_STD)
    embedding = model.encoder(normalized.astype(np.float32), training=False)
    projection = model.projector(embedding, training=False)
    return {
        "embedding": embedding,
        "projection": projection,
        "prediction": model.predictor(projection, training=False),
        "logits": model.probe(embedding),
    }


def test_imported_network_equals_the_official_one(case):
    model = checkpoints.load_checkpoint(case["result"]["checkpoint"], compile=False)
    worst = _worst(_keras_outputs(model, case["unit"]), case["official"])
    print(f"ResNet-{case['depth']} x{case['width']:g} import vs official:", worst)
    assert max(worst.values()) <= _TOLERANCE, worst


def test_imported_target_network_equals_the_official_target(case):
    model = checkpoints.load_checkpoint(case["result"]["checkpoint"], compile=False)
    target_params, target_state = case["target"]
    official_target, _ = case["network"].apply(target_params, target_state, case["unit"], False)
    normalized = (case["unit"] - np.array(importer.OFFICIAL_MEAN)) / np.array(importer.OFFICIAL_STD)
    embedding = model.target_encoder(normalized.astype(np.float32), training=False)
    ours = {"embedding": embedding, "projection": model.target_projector(embedding, training=False)}
    reference = {k: official_target[k] for k in ours}
    assert max(_worst(ours, reference).values()) <= _TOLERANCE


def _official_eval_images(images, size, crop_fraction):
    """The official evaluation's preprocessing of decoded uint8 images (byol/utils/dataset.py
    `_decode_and_center_crop`, then `_preprocess_image`): the centre square of `crop_fraction`
    of the short side at offsets ((side difference) + 1) // 2, resized bicubic by
    `tf.image.resize` (no antialiasing), / 255 and clipped to [0, 1]."""
    height, width = images.shape[1:3]
    side = int(np.float32(crop_fraction) * np.float32(min(height, width)))
    top, left = ((height - side) + 1) // 2, ((width - side) + 1) // 2
    window = tf.constant(images[:, top : top + side, left : left + side])
    resized = tf.image.resize(window, [size, size], tf.image.ResizeMethod.BICUBIC)
    return np.clip(resized.numpy() / 255.0, 0.0, 1.0).astype(np.float32)


def test_exported_signatures_equal_the_official_network(case):
    from byol_tf.serving import export

    loaded = tf.saved_model.load(case["result"]["export"])
    _, metadata = export.load_exported(case["result"]["export"])
    size = case["unit"].shape[1]
    if size == 224:  # the official evaluation's crop: 224 of 256
        assert metadata["crop_fraction"] == 224 / 256
    rng = np.random.default_rng(1)
    for height, width in ((size, size), (size * 5 // 4, size), (size, size * 4 // 3 + 1)):
        images = rng.integers(0, 256, (2, height, width, 3), dtype=np.uint8)
        served = loaded.signatures["serving_default"](images=tf.constant(images))
        classified = loaded.signatures["classify"](images=tf.constant(images))
        ours = {"embedding": served["representation"], "logits": classified["logits"]}
        unit = _official_eval_images(images, size, metadata["crop_fraction"])
        official_out, _ = case["network"].apply(case["params"], case["state"], unit, False)
        worst = _worst(ours, {k: official_out[k] for k in ours})
        print(f"ResNet-{case['depth']} x{case['width']:g} SavedModel vs official on {height}x"
              f"{width} images:", worst)  # fmt: skip
        assert max(worst.values()) <= _TOLERANCE, (height, width, worst)


def test_a_symmetric_stem_padding_would_fail_the_comparison(case):
    # PyTorch-style padding (3 on every side of the 7×7 stride-2 stem) instead of 'SAME'
    # (2 before, 3 after at even sizes): the error of the public PyTorch conversion.
    hidden, projection, classes = case["sizes"]
    symmetric = _official_network(
        case["depth"], case["width"], hidden, projection, classes, [(3, 3), (3, 3)],
        case["stem"], case["recreated"],
    )  # fmt: skip
    mutated, _ = symmetric.apply(case["params"], case["state"], case["unit"], False)
    model = checkpoints.load_checkpoint(case["result"]["checkpoint"], compile=False)
    worst = _worst(_keras_outputs(model, case["unit"]), mutated)
    print(f"ResNet-{case['depth']} symmetric stem padding:", worst)
    assert worst["embedding"] > 100 * _TOLERANCE


def test_a_transposed_kernel_would_fail_the_comparison(case):
    # The 3×3 and 7×7 kernels with height and width swapped, as a careless conversion would.
    params = {
        module: {
            name: (np.swapaxes(value, 0, 1) if value.ndim == 4 and value.shape[0] > 1 else value)
            for name, value in values.items()
        }
        for module, values in case["params"].items()
    }
    path = str(case["folder"] / "transposed.pkl")
    target_params, target_state = case["target"]
    official_format.write(path, params, target_params, case["state"], target_state)
    trees, arch = importer.read_checkpoint(path)
    channels = importer.encoder_channels(trees["online_params"], arch)
    model = importer.build_official_model(arch, image_size=case["unit"].shape[1], channels=channels)
    importer.assign(model, trees, arch, path)
    worst = _worst(_keras_outputs(model, case["unit"]), case["official"])
    print(f"ResNet-{case['depth']} transposed kernels:", worst)
    assert worst["embedding"] > 100 * _TOLERANCE
