"""Import of official BYOL checkpoints: names, weights, refusals (no Haiku needed).

The outputs of an imported network against the official Haiku network itself are compared in
tests/test_official_parity.py (the `parity` leg, with dm-haiku and jax installed).
"""

import collections
import json
import os
import pickle
import pickletools
import subprocess
import sys

import dill
import numpy as np
import official_format
import pytest
import tensorflow as tf

from byol_tf.core import networks
from byol_tf.official import importer, reader, structure
from byol_tf.runs import checkpoints, run_folder
from byol_tf.serving import export

SMALL = dict(depth=50, width=1 / 16, hidden=64, projection=32, classes=10)


def _canonical(tree):
    return {reader._canonical(k): v for k, v in tree.items()}


def test_importer_maps_every_name_of_the_official_network_to_a_layer_of_its_shape():
    params, state = official_format.official_names()  # recorded from the official code
    params, state = _canonical(params), _canonical(state)
    arch = importer.architecture(
        {k: {n: np.zeros(s) for n, s in v.items()} for k, v in params.items()}
    )
    assert arch == ("res_net50", 50, 1.0, 256, 4096, 1000, None)
    names = importer.expected_names(arch)
    assert set(names) == set(params)
    norms = {m for m, v in params.items() if "scale" in v}
    assert {f"{m}/{e}" for m in norms for e in ("mean_ema", "var_ema")} == set(state)
    encoder = networks.resnet(50, 1.0, kernel_initializer="haiku")
    heads = {
        "projector": networks.mlp_head(2048, 4096, 256, output_bias=False),
        "predictor": networks.mlp_head(256, 4096, 256, output_bias=False),
    }
    for module, (network, layer) in names.items():
        if network == "probe":
            expected = [(2048, 1000), (1000,)]
        else:
            net = encoder if network == "encoder" else heads[network]
            expected = [tuple(w.shape) for w in net.get_layer(layer).weights]
        shapes = params[module]
        if "scale" in shapes:  # [γ, β, mean, variance] from [1, ..., C] parameters
            got = [(int(np.prod(shapes["scale"])),)] * 4
        else:
            got = [tuple(shapes["w"])] + ([tuple(shapes["b"])] if "b" in shapes else [])
        assert got == expected, module


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    """A narrow official-format checkpoint with random weights, imported."""
    folder = tmp_path_factory.mktemp("official")
    params_shapes, state_shapes = official_format.official_shapes(**SMALL)
    online = official_format.random_trees(params_shapes, state_shapes, seed=1)
    target = official_format.random_trees(params_shapes, state_shapes, seed=2)
    path = str(folder / "pretrain_small.pkl")
    official_format.write(path, online[0], target[0], online[1], target[1], step=1234)
    lines = []
    result = importer.import_checkpoint(
        path, str(folder / "run"), str(folder / "export"), image_size=32, log=lines.append
    )
    return dict(result=result, online=online, target=target, path=path, lines=lines)


def _assert_every_array_landed(result, online, target):
    """Each array of the trees is the weight of the layer `expected_names` maps its module to."""
    model = checkpoints.load_checkpoint(result["checkpoint"], compile=False)
    arch = importer.Architecture(**result["architecture"])
    for is_target, (params, state) in ((False, online), (True, target)):
        params = {structure._base_name(k): v for k, v in _canonical(params).items()}
        state = {structure._base_name(k): v for k, v in _canonical(state).items()}
        for module, (network, layer) in importer.expected_names(arch).items():
            if is_target and network not in ("encoder", "projector"):
                continue
            net = model.probe if network == "probe" else getattr(
                model, f"target_{network}" if is_target else network
            )  # fmt: skip
            weights = [w.numpy() for w in (net if layer is None else net.get_layer(layer)).weights]
            source = params[module]
            if "scale" in source:
                expected = [source["scale"], source["offset"]] + [
                    state[f"{module}/{e}"]["average"] for e in ("mean_ema", "var_ema")
                ]
            else:
                expected = [source["w"]] + ([source["b"]] if "b" in source else [])
            assert len(weights) == len(expected), module
            for got, want in zip(weights, expected, strict=True):
                np.testing.assert_array_equal(got, np.reshape(want, got.shape), err_msg=module)


def test_import_writes_every_official_array_into_its_layer(imported):
    result = imported["result"]
    assert result["step"] == 1234
    assert result["checkpoint"].endswith("ckpt-00001234.keras")
    assert "ResNet-50 ×0.0625 at step 1234" in imported["lines"][0]
    _assert_every_array_landed(result, imported["online"], imported["target"])


def test_imported_run_config_records_the_official_normalisation_and_architecture(imported):
    run = os.path.dirname(os.path.dirname(imported["result"]["checkpoint"]))
    config = run_folder.read_run_config(run)
    assert config["mean"] == list(importer.OFFICIAL_MEAN)
    assert config["std"] == list(importer.OFFICIAL_STD)
    assert (config["encoder"], config["width_multiplier"]) == ("resnet50", 1 / 16)
    assert (config["hidden_dim"], config["projection_dim"], config["num_classes"]) == (64, 32, 10)
    assert config["head_output_bias"] is False and config["dataset"] == "imagenet2012"


def test_imported_export_serves_embedding_and_classifier_logits(imported):
    model = checkpoints.load_checkpoint(imported["result"]["checkpoint"], compile=False)
    loaded = tf.saved_model.load(imported["result"]["export"])
    assert {"serving_default", "classify", "encode_normalized"} <= set(loaded.signatures)
    images = np.random.default_rng(3).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    normalized = (images / 255.0 - importer.OFFICIAL_MEAN) / importer.OFFICIAL_STD
    embedding = model.encoder(normalized.astype(np.float32), training=False).numpy()
    logits = model.probe(embedding).numpy()
    served = loaded.signatures["serving_default"](images=tf.constant(images))
    classified = loaded.signatures["classify"](images=tf.constant(images))
    scale = np.abs(embedding).max()
    np.testing.assert_allclose(served["representation"], embedding, atol=1e-5 * scale)
    np.testing.assert_allclose(classified["representation"], embedding, atol=1e-5 * scale)
    np.testing.assert_allclose(classified["logits"], logits, atol=1e-5 * np.abs(logits).max())
    np.testing.assert_array_equal(classified["classes"], np.argmax(classified["logits"], -1))
    _, metadata = export.load_exported(imported["result"]["export"])
    assert metadata["num_classes"] == 10 and metadata["mean"] == list(importer.OFFICIAL_MEAN)


def test_import_refuses_a_folder_that_holds_a_run(imported, tmp_path):
    run = os.path.dirname(os.path.dirname(imported["result"]["checkpoint"]))
    with pytest.raises(ValueError, match="already holds a run's checkpoints"):
        importer.import_checkpoint(imported["path"], run)


def test_batchnorm_statistics_without_average_are_debiased_from_the_hidden_ema():
    hidden = np.array([[0.5, -1.0]], np.float32)
    state = {"bn/mean_ema": {"hidden": hidden, "counter": np.array(3, np.int32)}}
    np.testing.assert_allclose(
        importer._ema_average(state, "bn/mean_ema", "x"), hidden[0] / (1 - 0.9**3), rtol=1e-6
    )


# Files that dill releases wrote with `official_format.write` (`python tests/official_format.py
# OUT.pkl MAPPING` with that release first on PYTHONPATH), under NumPy 1.26 or 2.4, and the dill
# helpers each names: every form of the official files, read in every leg.
_NUMPY1, _NUMPY2 = "numpy.core.multiarray", "numpy._core.multiarray"
DILL_WRITTEN = {
    "dill0.2.7.1-numpy1-frozendict.pkl": {"dill.dill _get_attr", "dill.dill _import_module"},
    "dill0.3.2-numpy1-frozendict.pkl": {"dill._dill _get_attr", "dill._dill _import_module"},
    "dill0.3.2-numpy1-FlatMapping.pkl": {"dill._dill _get_attr", "dill._dill _import_module"},
    "dill0.3.5.1-numpy1-FlatMapping.pkl": {"numpy.core.multiarray _reconstruct", "_codecs encode"},
    "dill0.4.1-numpy1-dict.pkl": {"dill._dill _create_array", "numpy.core.multiarray _reconstruct"},
    "dill0.4.1-numpy2-dict.pkl": {
        "dill._dill _create_array",
        "numpy._core.multiarray _reconstruct",
    },
    "dill0.4.1-numpy2-FlatMapping.pkl": {"dill._dill _create_array"},
}


def _globals(path):
    with open(path, "rb") as handle:
        return {arg for op, arg, _ in pickletools.genops(handle.read()) if op.name == "GLOBAL"}


def _assert_reads_tiny_trees(path):
    trees = importer.load_official(path)
    assert trees["step"] == 1234
    fields = ("online_params", "target_params", "online_state", "target_state")
    for field, expected in zip(fields, official_format.tiny_trees(), strict=True):
        expected = _canonical(expected)
        assert set(trees[field]) == set(expected), field
        for module, values in expected.items():
            assert set(trees[field][module]) == set(values), module
            for name, value in values.items():
                got = trees[field][module][name]
                assert got.dtype == value.dtype, (module, name)
                np.testing.assert_array_equal(got, value, err_msg=f"{field} {module} {name}")


@pytest.mark.parametrize("name", sorted(DILL_WRITTEN))
def test_files_written_by_dill_0_2_to_0_4_read_exactly(name):
    path = os.path.join(os.path.dirname(official_format.NAMES_FILE), "dill_written", name)
    names = _globals(path)
    module = "dill.dill" if name.startswith("dill0.2.7") else "dill._dill"
    # the experiment state is a named tuple dill re-creates from its name and fields
    assert {f"{module} _create_namedtuple"} | DILL_WRITTEN[name] <= names, names
    mapping = name.rsplit("-", 1)[1][: -len(".pkl")]
    haiku = {n for n in names if n.startswith("haiku.")}
    assert haiku == (set() if mapping == "dict" else {f"haiku._src.data_structures {mapping}"})
    _assert_reads_tiny_trees(path)


def test_the_recorded_dill_files_are_every_one_there():
    folder = os.path.join(os.path.dirname(official_format.NAMES_FILE), "dill_written")
    assert sorted(os.listdir(folder)) == sorted(DILL_WRITTEN)


@pytest.mark.parametrize("mapping", ["frozendict", "FlatMapping", "dict"])
def test_a_file_the_installed_dill_writes_reads_exactly(mapping, tmp_path):
    path = str(tmp_path / "importer.pkl")
    official_format.write(path, *official_format.tiny_trees(), step=1234, mapping=mapping)
    names = _globals(path)
    print(f"dill {dill.__version__}, NumPy {np.__version__}: {sorted(names)}")
    assert "dill._dill _create_namedtuple" in names  # written by dill, not by pickle
    _assert_reads_tiny_trees(path)


def test_the_experiment_state_is_recognised_by_its_field_names_alone(tmp_path):
    online, target, online_state, target_state = official_format.tiny_trees()
    for cls_name, fields, readable in (
        ("AnyName", official_format.STATE_FIELDS, True),
        ("_ByolExperimentState", "online_params target_params online_state other opt_state", False),
    ):
        state = collections.namedtuple(cls_name, fields)(
            online, target, online_state, target_state, ()
        )
        path = str(tmp_path / f"{cls_name}.pkl")
        with open(path, "wb") as handle:
            dill.dump(dict(experiment_state=state, step=1234, rng=np.zeros(2, np.uint32)), handle,
                      protocol=2)  # fmt: skip
        if readable:
            _assert_reads_tiny_trees(path)
        else:
            with pytest.raises(importer.CheckpointFormatError, match="without a BYOL experiment"):
                importer.load_official(path)


def _import_small(folder, log=print, **shapes):
    params_shapes, state_shapes = official_format.official_shapes(**{**SMALL, **shapes})
    online = official_format.random_trees(params_shapes, state_shapes, seed=1)
    target = official_format.random_trees(params_shapes, state_shapes, seed=2)
    path = str(folder / "importer.pkl")
    official_format.write(path, online[0], target[0], online[1], target[1], step=1234)
    result = importer.import_checkpoint(path, str(folder / "run"), image_size=32, log=log)
    return result, online, target


def test_a_stem_recreated_by_haiku_as_initial_conv_1_imports(tmp_path):
    result, online, target = _import_small(tmp_path, stem_suffix="_1")
    assert "res_net50/~/initial_conv_1" in online[0] and "res_net50/~/initial_conv" not in online[0]
    assert "res_net50/~/initial_batchnorm_1/~/mean_ema" in online[1]
    _assert_every_array_landed(result, online, target)


def test_a_stem_narrower_than_the_blocks_builds_as_the_file_has_it(tmp_path):
    # The official code before 2020-08-17 kept 64 stem channels at every width multiplier.
    lines = []
    result, online, target = _import_small(tmp_path, lines.append, width=1 / 8, stem=4)
    arch = importer.Architecture(**result["architecture"])
    assert (arch.width_multiplier, arch.stem_width) == (1 / 8, 4)
    assert "ResNet-50 ×0.125 (a stem of 4 channels) at step 1234" in lines[0]
    model = checkpoints.load_checkpoint(result["checkpoint"], compile=False)
    assert model.encoder.get_layer("stem_conv").kernel.shape == (7, 7, 3, 4)
    assert model.encoder.get_layer("stage1_block1_conv1").kernel.shape == (1, 1, 4, 8)
    _assert_every_array_landed(result, online, target)


def _write_altered(folder, alter):
    params, state = official_format.official_shapes(**SMALL)
    params, state = official_format.random_trees(params, state)
    alter(params, state)
    path = str(folder / "altered.pkl")
    official_format.write(path, params, params, state, state)
    return path


def _block(name):
    return f"res_net50/~/block_group_2/~/block_5/~/{name}"


def _drop_block(params, state):
    for tree in (params, state):
        for module in [m for m in tree if m.startswith(_block(""))]:
            del tree[module]


def _extra_module(params, state):
    params["res_net50/~/logits"] = {"w": np.zeros((128, 10), np.float32)}


def _wrong_shape(params, state):
    params[_block("conv_1")]["w"] = np.zeros((3, 3, 5, 16), np.float32)


def _stem_twice(params, state):
    params["res_net50/~/initial_conv_1"] = params["res_net50/~/initial_conv"]


@pytest.mark.parametrize(
    "alter, message",
    [
        (_drop_block, "res_net50/block_group_2 has 5 blocks"),
        (_extra_module, "res_net50/logits is no module of the official ResNet-50"),
        (_wrong_shape, "res_net50/block_group_2/block_5/conv_1 has shapes [(3, 3, 5, 16)]"),
        (_stem_twice, "both res_net50/initial_conv and res_net50/initial_conv_1"),
    ],
    ids=["blocks", "extra", "shape", "twice"],
)
def test_a_file_that_fits_no_official_network_is_refused_naming_the_module(
    alter, message, tmp_path
):
    path = _write_altered(tmp_path, alter)
    with pytest.raises(importer.CheckpointFormatError) as error:
        importer.import_checkpoint(path, str(tmp_path / "run"), image_size=32, log=print)
    text = str(error.value)
    assert message in text and path in text and "\n" not in text, text


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("touch should-not-exist",))


class _Calls:
    """Pickles as `function(*args)`: how a hostile file would reach code through dill's
    helpers (loaded by dill itself, these files would run it)."""

    def __init__(self, function, *args):
        self.function, self.args = function, args

    def __call__(self):
        raise AssertionError("never called here")

    def __reduce__(self):
        return self.function, self.args


def _dill_attribute(module, name):
    return _Calls(dill._dill._get_attr, _Calls(dill._dill._import_module, module), name)


def _hostile(folder, name, payload):
    path = folder / f"{name}.pkl"
    path.write_bytes(pickle.dumps({"experiment_state": payload, "step": 1}, protocol=2))
    return str(path)


def _bad_files(folder):
    files = {}
    files["missing"] = (str(folder / "missing.pkl"), "no such file")
    path = folder / "code.pkl"
    path.write_bytes(pickle.dumps({"experiment_state": _RunsCode()}, protocol=2))
    files["code"] = (str(path), "refused to load posix.system")
    path = folder / "truncated.pkl"
    params, state = official_format.official_shapes(**SMALL)
    trees = official_format.random_trees(params, state)
    official_format.write(str(path), trees[0], trees[0], trees[1], trees[1])
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    files["truncated"] = (str(path), "truncated")
    path = folder / "text.pkl"
    path.write_text('{"not": "a pickle"}')
    files["text"] = (str(path), "not a pickle")
    path = folder / "foreign.pkl"
    path.write_bytes(pickle.dumps({"weights": [1, 2, 3]}, protocol=2))
    files["foreign"] = (str(path), "without a BYOL experiment_state")
    path = folder / "no_resnet.pkl"
    official_format.write(str(path), {"mlp/linear": {"w": np.zeros((2, 2))}}, {}, {}, {})
    files["no_resnet"] = (str(path), "no official ResNet encoder")
    system = _Calls(_dill_attribute("os", "system"), "touch should-not-exist")
    files["dill_module"] = (_hostile(folder, "dill_module", system), "refused to load module os")
    system = _Calls(_dill_attribute("numpy", "load"), "should-not-exist")
    files["dill_attribute"] = (_hostile(folder, "dill_attribute", system), "numpy.load")
    encode = _dill_attribute("_codecs", "encode")
    array = _Calls(dill._dill._create_array, encode, ("x",), None)
    files["dill_array"] = (_hostile(folder, "dill_array", array), "not built by numpy")
    path = folder / "dill_function.pkl"
    path.write_bytes(dill.dumps({"experiment_state": lambda: os.system("touch x")}, protocol=2))
    files["dill_function"] = (str(path), "refused to load dill._dill._create_function")
    return files


BAD_FILES = ["missing", "code", "truncated", "text", "foreign", "no_resnet", "dill_module",
             "dill_attribute", "dill_array", "dill_function"]  # fmt: skip


@pytest.mark.parametrize("kind", BAD_FILES)
def test_bad_checkpoint_files_get_one_line_naming_the_file(kind, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path, message = _bad_files(tmp_path)[kind]
    with pytest.raises(importer.CheckpointFormatError) as error:
        importer.import_checkpoint(path, str(tmp_path / "run"))
    text = str(error.value)
    assert message in text and path in text and "\n" not in text
    assert not os.path.exists(tmp_path / "should-not-exist")  # the pickle's code never ran


def test_import_program_prints_one_line_for_a_bad_file(tmp_path):
    bad = tmp_path / "bad.pkl"
    bad.write_bytes(b"\x80\x02}q\x00")  # a pickle cut short
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=repo)
    result = subprocess.run(
        [sys.executable, "-m", "byol_tf.cli.import_official", f"--checkpoint={bad}",
         f"--model_dir={tmp_path / 'run'}"],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and str(bad) in lines[0] and "truncated" in lines[0], result.stderr


def test_init_from_copies_the_official_networks_but_not_the_probe(imported):
    source = checkpoints.load_checkpoint(imported["result"]["checkpoint"], compile=False)
    arch = importer.Architecture(**imported["result"]["architecture"])
    fresh = importer.build_official_model(arch._replace(num_classes=3), image_size=32)
    lines = []
    importer.initialize_from(fresh, imported["path"], lines.append)
    assert lines == [f"Initialised the online and target networks from {imported['path']}."]
    for name in ("encoder", "projector", "predictor", "target_encoder", "target_projector"):
        for got, want in zip(
            getattr(fresh, name).weights, getattr(source, name).weights, strict=True
        ):
            np.testing.assert_array_equal(got.numpy(), want.numpy(), err_msg=name)
    assert tuple(fresh.probe.kernel.shape) == (128, 3)  # the new data's classes, untouched


def test_init_from_a_run_folder_and_a_mismatch_is_one_line(imported):
    run = os.path.dirname(os.path.dirname(imported["result"]["checkpoint"]))
    arch = importer.Architecture(**imported["result"]["architecture"])
    fresh = importer.build_official_model(arch, image_size=32)
    importer.initialize_from(fresh, run, lambda line: None)
    source = checkpoints.load_checkpoint(imported["result"]["checkpoint"], compile=False)
    np.testing.assert_array_equal(
        fresh.target_encoder.weights[0].numpy(), source.target_encoder.weights[0].numpy()
    )
    wider = importer.build_official_model(arch._replace(hidden_dim=128), image_size=32)
    for source_path in (imported["path"], run):
        with pytest.raises(ValueError, match="do not fit") as error:
            importer.initialize_from(wider, source_path, lambda line: None)
        assert "\n" not in str(error.value) and "--hidden_dim" in str(error.value)


@pytest.mark.slow  # train.py --init_from and three evaluate.py protocols: about 75 s
def test_train_and_evaluate_programs_take_an_imported_checkpoint(imported, tmp_path):
    from absl import flags
    from absl.testing import flagsaver

    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import evaluate
    import train

    flags.FLAGS.mark_as_parsed()
    arch = dict(encoder="resnet50", width_multiplier=1 / 16, hidden_dim=64, projection_dim=32)
    run = str(tmp_path / "adapted")
    with flagsaver.flagsaver(
        dataset="demo", image_size=32, batch_size=16, epochs=1, steps_per_epoch=2,
        knn_every_epochs=0, head_output_bias=False, init_from=imported["path"], model_dir=run,
        **arch,
    ):  # fmt: skip
        assert train.main(["train.py"]) == 0
    config = run_folder.read_run_config(run)
    assert config["init_from"] == imported["path"]
    imported_run = os.path.dirname(os.path.dirname(imported["result"]["checkpoint"]))
    with flagsaver.flagsaver(
        model_dir=imported_run, dataset="demo", protocol="knn", knn_k=5, batch_size=64,
    ):  # fmt: skip
        assert evaluate.main(["evaluate.py"]) == 0
    with open(os.path.join(imported_run, "eval_knn.json")) as handle:
        assert 0.0 <= json.load(handle)["top1"] <= 1.0
    for protocol in ("linear_official", "finetune"):
        with flagsaver.flagsaver(
            model_dir=imported_run, dataset="demo", protocol=protocol, epochs=1, batch_size=64,
            label_fraction=0.1,
        ):  # fmt: skip
            assert evaluate.main(["evaluate.py"]) == 0
        with open(os.path.join(imported_run, f"eval_{protocol}.json")) as handle:
            assert 0.0 <= json.load(handle)["top1"] <= 1.0
