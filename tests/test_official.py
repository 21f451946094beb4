"""Import of official BYOL checkpoints: names, weights, refusals (no Haiku needed).

The outputs of an imported network against the official Haiku network itself are compared in
tests/test_official_parity.py (the `parity` leg, with dm-haiku and jax installed).
"""

import json
import os
import pickle
import subprocess
import sys

import numpy as np
import official_format
import pytest
import tensorflow as tf

from byol_tf import checkpoints, export, networks, official, official_pickle, run_dir

SMALL = dict(depth=50, width=1 / 16, hidden=64, projection=32, classes=10)


def _canonical(tree):
    return {official_pickle._canonical(k): v for k, v in tree.items()}


def test_importer_maps_every_name_of_the_official_network_to_a_layer_of_its_shape():
    params, state = official_format.official_names()  # recorded from the official code
    params, state = _canonical(params), _canonical(state)
    arch = official.architecture(
        {k: {n: np.zeros(s) for n, s in v.items()} for k, v in params.items()}
    )
    assert arch == ("res_net50", 50, 1.0, 256, 4096, 1000)
    names = official.expected_names(arch)
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
    result = official.import_checkpoint(
        path, str(folder / "run"), str(folder / "export"), image_size=32, log=lines.append
    )
    return dict(result=result, online=online, target=target, path=path, lines=lines)


def test_import_writes_every_official_array_into_its_layer(imported):
    result = imported["result"]
    assert result["step"] == 1234
    assert result["checkpoint"].endswith("ckpt-00001234.keras")
    assert "ResNet-50 ×0.0625 at step 1234" in imported["lines"][0]
    model = checkpoints.load_checkpoint(result["checkpoint"], compile=False)
    arch = official.Architecture(**result["architecture"])
    for target, (params, state) in ((False, imported["online"]), (True, imported["target"])):
        params, state = _canonical(params), _canonical(state)
        for module, (network, layer) in official.expected_names(arch).items():
            if target and network not in ("encoder", "projector"):
                continue
            net = model.probe if network == "probe" else getattr(
                model, f"target_{network}" if target else network
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


def test_imported_run_config_records_the_official_normalisation_and_architecture(imported):
    run = os.path.dirname(os.path.dirname(imported["result"]["checkpoint"]))
    config = run_dir.read_run_config(run)
    assert config["mean"] == list(official.OFFICIAL_MEAN)
    assert config["std"] == list(official.OFFICIAL_STD)
    assert (config["encoder"], config["width_multiplier"]) == ("resnet50", 1 / 16)
    assert (config["hidden_dim"], config["projection_dim"], config["num_classes"]) == (64, 32, 10)
    assert config["head_output_bias"] is False and config["dataset"] == "imagenet2012"


def test_imported_export_serves_embedding_and_classifier_logits(imported):
    model = checkpoints.load_checkpoint(imported["result"]["checkpoint"], compile=False)
    loaded = tf.saved_model.load(imported["result"]["export"])
    assert {"serving_default", "classify", "encode_normalized"} <= set(loaded.signatures)
    images = np.random.default_rng(3).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    normalized = (images / 255.0 - official.OFFICIAL_MEAN) / official.OFFICIAL_STD
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
    assert metadata["num_classes"] == 10 and metadata["mean"] == list(official.OFFICIAL_MEAN)


def test_import_refuses_a_folder_that_holds_a_run(imported, tmp_path):
    run = os.path.dirname(os.path.dirname(imported["result"]["checkpoint"]))
    with pytest.raises(ValueError, match="already holds a run's checkpoints"):
        official.import_checkpoint(imported["path"], run)


def test_batchnorm_statistics_without_average_are_debiased_from_the_hidden_ema():
    hidden = np.array([[0.5, -1.0]], np.float32)
    state = {"bn/mean_ema": {"hidden": hidden, "counter": np.array(3, np.int32)}}
    np.testing.assert_allclose(
        official._ema_average(state, "bn/mean_ema", "x"), hidden[0] / (1 - 0.9**3), rtol=1e-6
    )


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("touch should-not-exist",))


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
    return files


@pytest.mark.parametrize("kind", ["missing", "code", "truncated", "text", "foreign", "no_resnet"])
def test_bad_checkpoint_files_get_one_line_naming_the_file(kind, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path, message = _bad_files(tmp_path)[kind]
    with pytest.raises(official.CheckpointFormatError) as error:
        official.import_checkpoint(path, str(tmp_path / "run"))
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
    arch = official.Architecture(**imported["result"]["architecture"])
    fresh = official.build_model(arch._replace(num_classes=3), image_size=32)
    lines = []
    official.initialize_from(fresh, imported["path"], lines.append)
    assert lines == [f"Initialised the online and target networks from {imported['path']}."]
    for name in ("encoder", "projector", "predictor", "target_encoder", "target_projector"):
        for got, want in zip(
            getattr(fresh, name).weights, getattr(source, name).weights, strict=True
        ):
            np.testing.assert_array_equal(got.numpy(), want.numpy(), err_msg=name)
    assert tuple(fresh.probe.kernel.shape) == (128, 3)  # the new data's classes, untouched


def test_init_from_a_run_folder_and_a_mismatch_is_one_line(imported):
    run = os.path.dirname(os.path.dirname(imported["result"]["checkpoint"]))
    arch = official.Architecture(**imported["result"]["architecture"])
    fresh = official.build_model(arch, image_size=32)
    official.initialize_from(fresh, run, lambda line: None)
    source = checkpoints.load_checkpoint(imported["result"]["checkpoint"], compile=False)
    np.testing.assert_array_equal(
        fresh.target_encoder.weights[0].numpy(), source.target_encoder.weights[0].numpy()
    )
    wider = official.build_model(arch._replace(hidden_dim=128), image_size=32)
    for source_path in (imported["path"], run):
        with pytest.raises(ValueError, match="do not fit") as error:
            official.initialize_from(wider, source_path, lambda line: None)
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
    config = run_dir.read_run_config(run)
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
