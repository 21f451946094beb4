"""Bad inputs to evaluate.py: each stops with one line naming the culprit (no traceback) and
changes no file of the run it reads."""

import glob
import os
import shutil

import pytest
from absl.testing import flagsaver
from helpers import (
    UNSCORABLE_FOLDERS,
    a_file,
    class_folder,
    evaluate_error,
    one_line,
    tiny_checkpoint_run,
)

import evaluate


@pytest.mark.parametrize("kind", list(UNSCORABLE_FOLDERS))
def test_evaluate_refuses_a_folder_that_cannot_score_a_held_out_split(finished_run, tmp_path, kind):
    classes, why = UNSCORABLE_FOLDERS[kind]
    root = class_folder(str(tmp_path / kind), classes)
    with flagsaver.flagsaver(model_dir=finished_run, dataset=root, protocol="knn"):
        with pytest.raises(SystemExit) as error:
            evaluate.main(["evaluate.py"])
    message = one_line(error, "evaluate.py")
    assert f"--dataset={root} (--train_split=train, --test_split=test" in message
    assert f"folder {root} {why}" in message


def test_evaluate_refuses_the_training_split_as_test_split(finished_run):
    with flagsaver.flagsaver(model_dir=finished_run, protocol="linear", test_split="train"):
        with pytest.raises(SystemExit) as error:
            evaluate.main(["evaluate.py"])
    message = one_line(error, "evaluate.py")
    assert "(--train_split=train, --test_split=train): the demo's 'train' split is both" in message
    assert "--test_split" in message.rpartition(":")[2]


def test_evaluate_on_a_directory_without_checkpoint(new_dir):
    with flagsaver.flagsaver(model_dir=new_dir, protocol="knn"):
        with pytest.raises(SystemExit) as error:
            evaluate.main(["evaluate.py"])
    message = one_line(error, "evaluate.py")
    assert f"No checkpoint found in {new_dir}" in message


def _truncate_variables(folder):
    (data_file,) = glob.glob(os.path.join(folder, "variables", "variables.data-*"))
    with open(data_file, "r+b") as handle:
        handle.truncate(16)


def _write(name, content):
    def damage(folder):
        with open(os.path.join(folder, name), "wb") as handle:
            handle.write(content)

    return damage


_NO_GRAPH = "{folder}/saved_model.pb is corrupt: it holds no SavedModel graph; export the model"


@pytest.mark.parametrize(
    "damage, match",
    [
        (_write("saved_model.pb", b""), _NO_GRAPH),
        (_write("saved_model.pb", b"\x0a\xff\xff not a protocol buffer"), _NO_GRAPH),
        (
            lambda folder: shutil.rmtree(os.path.join(folder, "variables")),
            "The SavedModel in {folder} has no variables/ folder (the weights): copy the whole",
        ),
        (
            _truncate_variables,
            "Cannot load the SavedModel in {folder} (corrupt or incomplete; export the model",
        ),
        (_write("byol_tf_export.json", b"{"), "{folder}/byol_tf_export.json is corrupt: "),
    ],
    ids=[
        "empty_saved_model_pb",
        "garbage_saved_model_pb",
        "no_variables",
        "truncated_variables",
        "truncated_metadata",
    ],
)
def test_evaluate_on_a_damaged_saved_model(tiny_export, tmp_path, damage, match):
    folder = str(tmp_path / "1")
    shutil.copytree(tiny_export, folder)
    damage(folder)
    message = evaluate_error(saved_model=folder, dataset="demo")
    assert match.format(folder=folder) in message
    assert "different device" not in message


def test_evaluate_saved_model_without_model_dir_needs_dataset(tiny_export):
    message = evaluate_error(saved_model=tiny_export)
    assert f"--saved_model={tiny_export} without --model_dir needs --dataset" in message
    assert "None" not in message


def test_evaluate_on_a_dataset_that_is_a_file(tiny_export, tmp_path):
    path = a_file(tmp_path)
    message = evaluate_error(saved_model=tiny_export, dataset=str(path))
    assert f"Data source {path} is a file, not a folder" in message


@pytest.fixture
def tiny_run(tmp_path):
    """A run folder of a tiny checkpoint on the demo set (8×8 images), nothing evaluated."""
    folder = tmp_path / "tiny_run"
    folder.mkdir()
    tiny_checkpoint_run(folder, dataset="demo", image_size=8, mean=[0.3] * 3, std=[0.3] * 3)
    return str(folder)


def _not_evaluated(monkeypatch):
    """Makes the evaluation itself a failure: a refusal must come before it."""
    from byol_tf.evaluation import evaluate_run

    def evaluation_ran(opts):
        raise AssertionError("the evaluation ran before the refusal")

    monkeypatch.setattr(evaluate_run, "evaluate", evaluation_ran)


def _read_only(folder, monkeypatch):
    """`folder` read-only: by its mode, and for a user who may write anywhere (root) by
    `os.access`, which is what the programs ask."""
    os.chmod(folder, 0o500)
    real = os.access
    inside = os.path.abspath(folder)

    def access(path, mode, **kwargs):
        if mode & os.W_OK and os.path.abspath(path).startswith(inside):
            return False
        return real(path, mode, **kwargs)

    monkeypatch.setattr(os, "access", access)


@pytest.mark.parametrize("kind", ["folder", "under_a_file", "read_only_folder"])
def test_evaluate_checks_output_before_evaluating(tiny_run, tmp_path, monkeypatch, kind):
    _not_evaluated(monkeypatch)
    if kind == "folder":
        output, why = tmp_path, "is a folder; expected the path of a JSON file to write"
    elif kind == "under_a_file":
        blocker = a_file(tmp_path)
        output, why = blocker / "eval.json", f"cannot be written: {blocker} is a file, not a folder"
    else:
        (tmp_path / "ro").mkdir()
        output, why = tmp_path / "ro" / "eval.json", f"cannot be written: {tmp_path / 'ro'} is not"
    try:
        if kind == "read_only_folder":
            _read_only(tmp_path / "ro", monkeypatch)
        message = evaluate_error(model_dir=tiny_run, output=str(output))
    finally:
        if kind == "read_only_folder":
            os.chmod(tmp_path / "ro", 0o700)
    assert f"--output={output} {why}" in message
    assert not os.path.exists(os.path.join(tiny_run, "eval_knn.json"))


def test_evaluate_checks_a_read_only_model_dir_before_evaluating(tiny_run, monkeypatch):
    _not_evaluated(monkeypatch)
    try:
        _read_only(tiny_run, monkeypatch)
        message = evaluate_error(model_dir=tiny_run)
    finally:
        os.chmod(tiny_run, 0o700)
    output = os.path.join(tiny_run, "eval_knn.json")
    assert message.endswith(
        f"The results file {output} (in --model_dir={tiny_run}) cannot be written: {tiny_run} "
        "is not writable; pass --output"
    )


def test_evaluate_calls_a_damaged_checkpoint_file_damaged(tiny_run, tmp_path):
    (path,) = glob.glob(os.path.join(tiny_run, "checkpoints", "*.keras"))
    damaged = tmp_path / "damaged.keras"
    with open(path, "rb") as handle:
        damaged.write_bytes(handle.read()[:100])
    message = evaluate_error(checkpoint=str(damaged), dataset="demo")
    assert message.startswith(
        f"evaluate.py: error: Cannot read checkpoint {damaged}: it is damaged"
    )
