"""Tests of the evaluate.py binary: protocols on a tiny checkpoint and one-line user errors."""

import json
import os
import re

import numpy as np
import pytest
from absl import flags
from absl.testing import flagsaver
from helpers import class_folder, tiny_checkpoint_run

import evaluate
from byol_tf import evaluation
from byol_tf.evaluation import evaluate_run
from byol_tf.runs import checkpoints
from byol_tf.serving import export

FLAGS = flags.FLAGS
DEMO_STATS = {"mean": [0.286] * 3, "std": [0.353] * 3}


@pytest.fixture
def run_dir(tmp_path):
    """A training run folder: one checkpoint of a tiny BYOL on 8×8 images and run_config.json."""
    tiny_checkpoint_run(tmp_path, dataset="demo", image_size=8, eval_split="test", **DEMO_STATS)
    return tmp_path


def test_knn_on_checkpoint_writes_results_json(run_dir, capsys):
    with flagsaver.flagsaver(model_dir=str(run_dir), protocol="knn"):
        assert evaluate.main(["evaluate.py"]) == 0
    results = json.loads((run_dir / "eval_knn.json").read_text())
    assert results["protocol"] == "knn" and results["dataset"] == "demo"
    assert (results["num_train"], results["num_test"], results["feature_dim"]) == (6000, 1000, 4)
    assert 0.1 < results["top1"] <= results["top5"] <= 1.0
    assert "kNN (k=200, T=0.1) on demo/test: top-1" in capsys.readouterr().out


def test_linear_on_saved_model_with_label_fraction(run_dir, tmp_path):
    model = checkpoints.load_checkpoint(checkpoints.latest_checkpoint(str(run_dir)))
    saved = export.export_encoder(model.encoder, str(tmp_path / "export"), 8, **DEMO_STATS)
    output = tmp_path / "out" / "linear.json"
    with flagsaver.flagsaver(
        saved_model=saved, protocol="linear", dataset="demo", label_fraction=0.1,
        epochs=2, output=str(output),
    ):  # fmt: skip
        evaluate.main(["evaluate.py"])
    results = json.loads(output.read_text())
    assert results["num_train"] == 600 and results["encoder"] == saved
    assert results["learning_rate"] > 0 and 0.0 <= results["top1"] <= 1.0


def test_saved_model_without_model_dir_writes_its_results_beside_the_export(
    run_dir, tmp_path, monkeypatch
):
    model = checkpoints.load_checkpoint(checkpoints.latest_checkpoint(str(run_dir)))
    root = tmp_path / "export"
    export.export_encoder(model.encoder, str(root), 8, **DEMO_STATS)
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    with flagsaver.flagsaver(saved_model=str(root), protocol="knn", dataset="demo"):
        assert evaluate.main(["evaluate.py"]) == 0
    assert (root / "eval_knn.json").exists()
    assert not (tmp_path / "elsewhere" / "eval_knn.json").exists()


def test_finetune_on_one_percent_of_labels(run_dir):
    with flagsaver.flagsaver(
        model_dir=str(run_dir), protocol="finetune", label_fraction=0.01, epochs=1, batch_size=512
    ):
        evaluate.main(["evaluate.py"])
    results = json.loads((run_dir / "eval_finetune.json").read_text())
    assert results["num_labelled"] == 60 and results["label_fraction"] == 0.01


def test_linear_official_on_checkpoint(run_dir, capsys):
    with flagsaver.flagsaver(
        model_dir=str(run_dir), protocol="linear_official", label_fraction=0.05, epochs=1,
        batch_size=64,
    ):  # fmt: skip
        assert evaluate.main(["evaluate.py"]) == 0
    results = json.loads((run_dir / "eval_linear_official.json").read_text())
    assert results["protocol"] == "linear_official" and results["epochs"] == 1
    assert (results["num_train"], results["num_validation"], results["num_test"]) == (300, 30, 1000)
    assert results["learning_rate"] in evaluation.LINEAR_OFFICIAL_LEARNING_RATES
    assert (results["image_size"], results["crop_fraction"], results["feature_dim"]) == (8, 1.0, 4)
    assert 0.0 <= results["val_top1"] <= 1.0 and 0.0 <= results["top1"] <= results["top5"] <= 1.0
    assert (results["selection"], results["linear_preset"], results["num_fit"]) == (
        "paper",
        "small",
        270,
    )
    out = capsys.readouterr().out
    assert "linear (paper protocol) on demo/test: top-1" in out and "eval_linear_official" in out


@pytest.mark.parametrize(
    "flags, expected",
    [
        ({}, {"epochs": 10, "batch_size": 64, "selection": "paper"}),
        # The paper's batch of 1024 (appendix C.1); the official code's 4096 under "official".
        ({"linear_preset": "imagenet"}, {"epochs": 80, "batch_size": 1024, "selection": "paper"}),
        (
            {"linear_preset": "imagenet", "linear_selection": "official"},
            {"epochs": 80, "batch_size": 4096, "selection": "official"},
        ),
        (
            {"linear_preset": "imagenet", "batch_size": 512, "linear_selection": "official"},
            {"epochs": 80, "batch_size": 512, "selection": "official"},
        ),
        ({"linear_preset": "imagenet", "epochs": 3}, {"epochs": 3, "batch_size": 1024}),
    ],
)
def test_linear_official_preset_selection_and_whole_training_images(
    run_dir, monkeypatch, flags, expected
):
    from byol_tf.evaluation import linear_official

    captured = {}

    def fake(encoder, train, test, info, **kwargs):
        captured.update(kwargs, train_shape=train.element_spec[0].shape, mean=info.info.mean)
        return {"top1": 0.5, "top5": 1.0}

    monkeypatch.setattr(linear_official, "linear_eval_official", fake)
    with flagsaver.flagsaver(model_dir=str(run_dir), protocol="linear_official", **flags):
        assert evaluate.main(["evaluate.py"]) == 0
    assert {k: captured[k] for k in expected} == expected
    # Whole decoded images one by one (the demo's 28 px, not a centre square), normalised by
    # the protocol with the run's statistics.
    assert captured["train_shape"] == (28, 28, 3)
    assert captured["mean"] == pytest.approx([0.286] * 3)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"protocol": "svm"}, "--protocol must be one of linear, linear_official, knn, finetune"),
        ({"label_fraction": 0.0}, r"--label_fraction must be in \(0, 1\]"),
        ({"model_dir": "EMPTY"}, "No checkpoint found in"),
        ({"model_dir": "NO_CONFIG"}, "No run_config.json in .* pass --dataset"),
        ({"saved_model": "x", "protocol": "finetune"}, "finetune needs a checkpoint"),
        ({"model_dir": None}, "pass --model_dir"),
    ],
)
def test_user_mistakes_exit_with_one_line(run_dir, tmp_path, overrides, message):
    if overrides.get("model_dir") == "EMPTY":
        overrides["model_dir"] = str(tmp_path / "empty")
    if overrides.get("model_dir") == "NO_CONFIG":
        os.remove(run_dir / "run_config.json")
        overrides["model_dir"] = str(run_dir)
    settings = {"model_dir": str(run_dir), "protocol": "knn", **overrides}
    with flagsaver.flagsaver(**settings), pytest.raises(SystemExit) as raised:
        evaluate.main(["evaluate.py"])
    text = str(raised.value.code)
    assert text.startswith("evaluate.py: error: ") and "\n" not in text
    assert re.search(message, text), text


def test_checkpoint_and_its_export_score_alike_on_another_data_set(run_dir, tmp_path, monkeypatch):
    """The encoder gets its own training normalisation (the demo's, not ImageNet's) on a folder
    it never trained on, from its checkpoint as from its export."""
    root = _two_class_folder(str(tmp_path / "folder"))
    saved = export.export_checkpoint(str(run_dir), str(tmp_path / "export"))
    features, extract = [], evaluation.extract_features

    def recording(encoder, dataset):
        found = extract(encoder, dataset)
        features.append(found[0])
        return found

    monkeypatch.setattr(evaluate_run, "extract_features", recording)  # the name it calls
    scores = []
    for source in ({"model_dir": str(run_dir)}, {"saved_model": saved}):
        output = str(tmp_path / f"{len(scores)}.json")
        with flagsaver.flagsaver(protocol="knn", dataset=root, output=output, **source):
            assert evaluate.main(["evaluate.py"]) == 0
        scores.append(json.loads(open(output).read()))
    checkpoint_train, checkpoint_test, export_train, export_test = features
    np.testing.assert_allclose(checkpoint_train, export_train, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(checkpoint_test, export_test, rtol=1e-5, atol=1e-6)
    assert scores[0]["top1"] == scores[1]["top1"] and scores[0]["top5"] == scores[1]["top5"]


def _two_class_folder(root):
    for split in ("train", "test"):
        class_folder(os.path.join(root, split), ["a", "b"], per_class=6)
    return root


def test_knn_names_the_k_it_uses_on_a_small_train_split(run_dir, tmp_path, capsys):
    root = _two_class_folder(str(tmp_path / "folder"))
    with flagsaver.flagsaver(model_dir=str(run_dir), protocol="knn", dataset=root):
        assert evaluate.main(["evaluate.py"]) == 0
    assert json.loads((run_dir / "eval_knn.json").read_text())["k"] == 12
    out = capsys.readouterr().out
    assert f"kNN (k=12, T=0.1; k=200 clipped to the 12 train examples) on {root}/test" in out


def test_evaluate_a_checkpoint_file_of_a_run(run_dir, tmp_path, capsys):
    path = checkpoints.latest_checkpoint(str(run_dir))
    with flagsaver.flagsaver(checkpoint=path, protocol="knn"):  # the run's data set
        assert evaluate.main(["evaluate.py"]) == 0
    results = json.loads((run_dir / "eval_knn.json").read_text())
    assert (results["encoder"], results["dataset"], results["num_test"]) == (path, "demo", 1000)
    with flagsaver.flagsaver(checkpoint=str(run_dir), protocol="knn"):
        with pytest.raises(SystemExit) as error:
            evaluate.main(["evaluate.py"])
    assert str(error.value.code) == (
        f"evaluate.py: error: --checkpoint={run_dir} is a folder; expected a .keras checkpoint "
        "file (for the newest checkpoint of a run folder, pass --model_dir)"
    )


def test_a_checkpoint_outside_a_run_is_normalised_as_its_data_set_with_a_note(
    run_dir, tmp_path, capsys
):
    (tmp_path / "other").mkdir()
    path = tmp_path / "other" / "ckpt.keras"
    path.write_bytes(open(checkpoints.latest_checkpoint(str(run_dir)), "rb").read())
    with flagsaver.flagsaver(checkpoint=str(path), dataset="demo", protocol="knn"):
        assert evaluate.main(["evaluate.py"]) == 0
    assert (tmp_path / "other" / "eval_knn.json").exists()
    assert capsys.readouterr().err.strip() == (
        "No run_config.json beside the checkpoint to take the encoder's normalisation from: "
        "normalising with demo's statistics."
    )
