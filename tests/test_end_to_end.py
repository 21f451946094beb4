"""A tiny end-to-end run of train.main (then resume); bad inputs are in test_bad_inputs_*.py."""

import glob
import json
import os

import numpy as np
import pytest
from absl.testing import flagsaver
from helpers import TINY

import evaluate
import train
from byol_tf.runs import checkpoints


def _train(model_dir, **overrides):
    with flagsaver.flagsaver(**dict(TINY, model_dir=model_dir, **overrides)):
        assert train.main(["train.py"]) == 0
    with open(os.path.join(model_dir, "summary.json")) as handle:
        return json.load(handle)


def _weights(path):
    return [w.numpy() for w in checkpoints.load_checkpoint(path).weights]


def test_train_main_runs_resumes_and_exports(tmp_path, capsys):
    model_dir, export_dir = str(tmp_path / "run"), str(tmp_path / "export")
    summary = _train(model_dir, export_dir=export_dir)
    out = capsys.readouterr().out
    assert summary["steps"] == 4
    assert 0.0 <= summary["knn_top1"] <= 1.0 and "knn_top1_random_init" in summary
    assert "kNN top-1" in out and "random-initialisation encoder" in out and "raw pixels" in out
    assert 0.0 <= summary["knn_top1_raw_pixels"] <= 1.0
    # The [0, 1] pixels score differently from the normalised ones under the cosine kNN.
    assert 0.0 <= summary["knn_top1_raw_pixels_unit"] <= 1.0
    assert summary["knn_top1_raw_pixels_unit"] != summary["knn_top1_raw_pixels"]
    # The recipe: printed in one line at start, recorded in run_config.json.
    assert "Recipe (--recipe=auto, 4 steps, 6,000 images): short (" in out
    with open(os.path.join(model_dir, "run_config.json")) as handle:
        run_config = json.load(handle)
    assert run_config["recipe_chosen"] == "short" and run_config["optimizer"] == "adamw"
    assert run_config["predictor_lr_multiplier"] == 10.0
    assert os.path.exists(os.path.join(export_dir, "1", "saved_model.pb"))
    for name in ("flags.txt", "run_config.json", "summary.json"):
        assert os.path.exists(os.path.join(model_dir, name))
    assert glob.glob(os.path.join(model_dir, "tensorboard", "events.out.tfevents.*"))
    assert [s for s, _ in checkpoints.list_checkpoints(model_dir)] == [1, 2, 3, 4]

    # evaluate.main on the run: the kNN protocol reads dataset and image size from the run.
    with flagsaver.flagsaver(model_dir=model_dir, protocol="knn"):
        assert evaluate.main(["evaluate.py"]) == 0
    with open(os.path.join(model_dir, "eval_knn.json")) as handle:
        assert 0.0 <= json.load(handle)["top1"] <= 1.0

    # More epochs change the schedule: with --allow_schedule_change the run resumes at step 4,
    # continues to 6 and records the change.
    resumed = _train(model_dir, epochs=3, demo_baseline=False, allow_schedule_change=True)
    assert resumed["steps"] == 6
    assert "Schedule changed at step 4 (--allow_schedule_change): --epochs: 2 -> 3." in (
        capsys.readouterr().out
    )
    with open(os.path.join(model_dir, "schedule_changes.json")) as handle:
        assert json.load(handle) == [{"step": 4, "changes": {"epochs": [2, 3]}}]


@pytest.mark.slow
def test_resumed_run_equals_uninterrupted_run_with_deterministic_ops(tmp_path):
    straight, broken = str(tmp_path / "a"), str(tmp_path / "b")
    opts = dict(deterministic=True, knn_every_epochs=0, demo_baseline=False)
    _train(straight, **opts)
    _train(broken, **opts)
    for step, path in checkpoints.list_checkpoints(broken):
        if step > 1:
            os.remove(path)  # as if the run had been killed right after step 1
    _train(broken, **opts)
    expected = _weights(checkpoints.latest_checkpoint(straight))
    got = _weights(checkpoints.latest_checkpoint(broken))
    for a, b in zip(expected, got, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.slow  # about 30 s of CPU (3 minutes on a loaded 2-core machine)
def test_the_few_label_knn_scores_every_encoder_under_one_protocol(tmp_path, capsys):
    """--knn_labels_per_class (the demo's protocol): the trained encoder, the pixels and the
    random encoder are all scored with the same few labels, and the protocol line says so."""
    summary = _train(
        str(tmp_path / "run"), epochs=1, steps_per_epoch=1, knn_every_epochs=1,
        knn_labels_per_class=3,
    )  # fmt: skip
    out = capsys.readouterr().out
    protocol = "memory: 3 labelled images per class (mean of 5 seeded draws) from 256 images"
    assert protocol in summary["knn_protocol"] and protocol in out
    assert "Note: --knn_k=20 exceeds the kNN memory bank (30 examples)" not in out
    # 30 labelled images: a pixel kNN is far below its 256-image figure (about 0.70)
    assert 0.0 < summary["knn_top1_raw_pixels"] < 0.65
    assert "knn_top1_random_init" in summary and "knn_top1_raw_pixels_unit" in summary
