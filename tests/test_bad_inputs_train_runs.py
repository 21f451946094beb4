"""train.py on runs in progress or finished: a resume that would change the run is refused
in one line, a rerun of a finished run trains nothing, the kNN monitor refuses or notes a
folder it cannot score, and a disk that fills up loses no checkpoint already written.
"""

import contextlib
import errno
import io
import json
import os
import shutil

import pytest
import tensorflow as tf
from absl.testing import flagsaver
from helpers import QUICK, UNSCORABLE_FOLDERS, class_folder, train_error

import train
from byol_tf.core.model import BYOL
from byol_tf.runs import checkpoints
from byol_tf.training import distribution, train_run

KNN = dict(QUICK, knn_every_epochs=1, knn_k=100_000)  # k far above the 256-image memory bank


@pytest.fixture(scope="module")
def knn_trained(tmp_path_factory):
    """A finished one-step run with the kNN monitor on, and what train.py printed."""
    model_dir = str(tmp_path_factory.mktemp("knn_trained") / "run")
    printed = io.StringIO()
    with flagsaver.flagsaver(**dict(KNN, model_dir=model_dir)), contextlib.redirect_stdout(printed):
        assert train.main(["train.py"]) == 0
    return model_dir, printed.getvalue()


def _rerun(knn_trained, tmp_path, capsys, **overrides):
    """Runs train.py again on a copy of the finished kNN run; returns (copy, summary, output)."""
    model_dir = str(tmp_path / "run")
    shutil.copytree(knn_trained[0], model_dir)
    steps = checkpoints.list_checkpoints(model_dir)
    capsys.readouterr()
    with flagsaver.flagsaver(**dict(KNN, model_dir=model_dir, **overrides)):
        assert train.main(["train.py"]) == 0
    assert [s for s, _ in checkpoints.list_checkpoints(model_dir)] == [s for s, _ in steps]
    with open(os.path.join(model_dir, "summary.json")) as handle:
        return model_dir, json.load(handle), capsys.readouterr().out


def test_knn_k_above_the_memory_bank_is_clamped_with_a_note(knn_trained):
    note = "Note: --knn_k=100000 exceeds the kNN memory bank (256 examples); using 256."
    assert [line for line in knn_trained[1].splitlines() if "--knn_k" in line] == [note]
    with open(os.path.join(knn_trained[0], "summary.json")) as handle:
        assert "kNN k=256," in json.load(handle)["knn_protocol"]


def test_resume_with_another_encoder_keeps_the_checkpoint(finished_run):
    message = train_error(finished_run, encoder="resnet34")
    assert "--encoder=resnet34 does not match the checkpoint" in message
    assert "--encoder=resnet18" in message


def test_resume_with_another_schedule_is_refused_listing_each_change(finished_run, capsys):
    # The run trained 1 epoch with the recipe's learning rate (auto at this budget: short).
    capsys.readouterr()
    message = train_error(finished_run, epochs=3, learning_rate=0.5, base_tau=0.9)
    assert "Resuming" not in capsys.readouterr().out  # refused before a resume is announced
    assert f"Resuming {finished_run} with other schedule settings" in message
    assert "--base_tau: 0.98 -> 0.9, --epochs: 1 -> 3, --learning_rate: 0.0005 -> 0.5" in message
    assert "--allow_schedule_change" in message and "not modified" in message
    assert not os.path.exists(os.path.join(finished_run, "schedule_changes.json"))


def test_resume_with_another_optimizer_keeps_the_checkpoint(finished_run):
    # The run trained with the recipe's optimiser (`auto` at this budget: AdamW).
    message = train_error(finished_run, optimizer="lars")
    assert "--optimizer=lars does not match the checkpoint" in message
    assert "--optimizer=adamw" in message


def test_rerunning_a_finished_run_reprints_its_summary_and_exports(knn_trained, tmp_path, capsys):
    with open(os.path.join(knn_trained[0], "summary.json")) as handle:
        first = json.load(handle)
    export_dir = tmp_path / "export"
    _, summary, out = _rerun(knn_trained, tmp_path, capsys, export_dir=str(export_dir))
    assert "is already complete at step 1." in out and "Resuming" not in out
    assert summary == first  # reused, not recomputed
    assert f"{first['knn_top1']:6.2%}" in out
    assert (export_dir / "1" / "saved_model.pb").exists() and str(export_dir / "1") in out


def test_rerunning_a_finished_run_with_another_learning_rate_says_it_is_ignored(
    knn_trained, tmp_path, capsys
):
    _, _, out = _rerun(knn_trained, tmp_path, capsys, learning_rate=0.5)
    assert "is already complete at step 1." in out
    assert "Note: --learning_rate: 0.0005 -> 0.5: ignored, the run has no step left" in out


def test_a_cluster_in_tf_config_that_the_strategy_ignores_is_noted(
    knn_trained, tmp_path, capsys, monkeypatch
):
    cluster = {"worker": ["host0:2222", "host1:2222"]}
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": {"type": "worker"}}))
    _, _, out = _rerun(knn_trained, tmp_path, capsys)
    note = "Note: TF_CONFIG describes a cluster of 2 tasks, which --strategy=auto ignores"
    assert note in out and "--strategy=multi_worker" in out
    for strategy in ("multi_worker", "tpu"):
        assert distribution.ignored_cluster_note(strategy) is None
    for value in ("", "[]", '{"cluster": {}}'):
        monkeypatch.setenv("TF_CONFIG", value)
        assert distribution.ignored_cluster_note("auto") is None
    monkeypatch.setenv("TF_CONFIG", "not json")
    assert distribution.ignored_cluster_note("auto") == (
        "Note: TF_CONFIG is not JSON; --strategy=auto ignores it and trains alone."
    )


def test_rerunning_a_finished_run_without_summary_scores_the_checkpoint(
    knn_trained, tmp_path, capsys
):
    with open(os.path.join(knn_trained[0], "summary.json")) as handle:
        first = json.load(handle)
    shutil.copytree(knn_trained[0], tmp_path / "source")
    os.remove(tmp_path / "source" / "summary.json")
    _, summary, out = _rerun((str(tmp_path / "source"), ""), tmp_path, capsys)
    assert "is already complete at step 1." in out
    assert summary["steps"] == 1 and summary["knn_top1"] == pytest.approx(first["knn_top1"])


@pytest.mark.parametrize("kind", list(UNSCORABLE_FOLDERS))
def test_knn_monitor_asked_for_on_such_a_folder_is_refused_before_training(new_dir, tmp_path, kind):
    classes, why = UNSCORABLE_FOLDERS[kind]
    root = class_folder(str(tmp_path / kind), classes)
    message = train_error(new_dir, dataset=root, batch_size=8, knn_every_epochs=1)
    assert message.startswith(
        "train.py: error: The kNN monitor (--knn_every_epochs=1, --eval_split=test) cannot run: "
        f"folder {root} {why}"
    )
    assert message.endswith("--knn_every_epochs=0.")


@pytest.mark.slow  # a whole run; the refusal of a kNN monitor without classes is tested fast
def test_one_class_folder_pretrains_with_the_default_knn_monitor_off(tmp_path, capsys):
    root = class_folder(str(tmp_path / "one_class"), ["a"])
    model_dir = str(tmp_path / "run")
    flags_set = {k: v for k, v in QUICK.items() if k != "knn_every_epochs"}  # the default: on
    with flagsaver.flagsaver(**dict(flags_set, model_dir=model_dir, dataset=root, batch_size=8)):
        assert train.main(["train.py"]) == 0
    notes = [line for line in capsys.readouterr().out.splitlines() if "kNN monitor" in line]
    assert notes == [
        f"Note: the kNN monitor is off: folder {root} {UNSCORABLE_FOLDERS['one_class'][1]} (a)."
    ]
    with open(os.path.join(model_dir, "summary.json")) as handle:
        assert "knn_top1" not in json.load(handle)


def test_knn_monitor_reports_where_its_memory_bank_and_queries_come_from(knn_trained):
    with open(os.path.join(knn_trained[0], "summary.json")) as handle:
        protocol = json.load(handle)["knn_protocol"]
    assert protocol.endswith("memory: 256 images spread evenly over demo/train, queries: demo/test")


# --- failures while writing (disk full, permission lost) -----------------------------------

_NO_SPACE = os.strerror(errno.ENOSPC)


def test_disk_full_during_a_checkpoint_keeps_the_ones_written(tmp_path, monkeypatch):
    model_dir = str(tmp_path / "run")
    save = BYOL.save

    def save_until_the_disk_is_full(model, path, *args, **kwargs):
        if "00000002" not in path:
            return save(model, path, *args, **kwargs)
        with open(path, "wb") as handle:
            handle.write(b"PK half a checkpoint")
        raise OSError(errno.ENOSPC, _NO_SPACE, path)

    monkeypatch.setattr(BYOL, "save", save_until_the_disk_is_full)
    message = train_error(model_dir, steps_per_epoch=2)
    folder = checkpoints.checkpoint_dir(model_dir)
    first = os.path.join(folder, "ckpt-00000001.keras")
    assert message == (
        f"train.py: error: Cannot write checkpoint {folder}/ckpt-00000002.keras: {_NO_SPACE}. "
        f"The checkpoints already written are intact (newest: {first}); free space or restore "
        "write access, then run the same command again to resume."
    )
    assert os.listdir(folder) == ["ckpt-00000001.keras"]  # the half-written file is removed
    assert checkpoints.load_checkpoint(first).optimizer.iterations.numpy() == 1


def _fail_summary(monkeypatch, tmp_path):
    dump = json.dump

    def dump_until_the_disk_is_full(content, handle, **kwargs):
        if handle.name.endswith("summary.json.tmp"):
            handle.write("{")
            raise OSError(errno.ENOSPC, _NO_SPACE)
        return dump(content, handle, **kwargs)

    monkeypatch.setattr(json, "dump", dump_until_the_disk_is_full)
    path = tmp_path / "run" / "summary.json"
    return f"Cannot write {path}: {_NO_SPACE}.", {}


def _fail_export(monkeypatch, tmp_path):
    save = tf.saved_model.save

    def save_until_the_disk_is_full(module, folder, **kwargs):
        save(module, folder, **kwargs)  # TensorFlow's own writer raises OpError, not OSError
        raise tf.errors.ResourceExhaustedError(None, None, f"{folder}/variables; {_NO_SPACE}")

    monkeypatch.setattr(tf.saved_model, "save", save_until_the_disk_is_full)
    path = tmp_path / "export" / "1"
    return f"Cannot write the export {path}: ", {"export_dir": str(tmp_path / "export")}


@pytest.mark.parametrize("fail", [_fail_summary, _fail_export], ids=["summary", "export"])
def test_disk_full_writing_summary_or_export_fails_in_one_line_and_a_rerun_finishes(
    one_step_run, tmp_path, monkeypatch, fail
):
    # The one-step run without its summary: train.py computes and writes it (and the export),
    # as at the end of training, without training again.
    model_dir = str(tmp_path / "run")
    shutil.copytree(one_step_run, model_dir)
    os.remove(os.path.join(model_dir, "summary.json"))
    with monkeypatch.context() as patch:
        match, flags_ = fail(patch, tmp_path)
        message = train_error(model_dir, **flags_)
    last = checkpoints.latest_checkpoint(model_dir)
    assert match in message and _NO_SPACE in message and f"(newest: {last})" in message
    assert not os.path.exists(os.path.join(model_dir, "summary.json"))
    assert not [n for n in os.listdir(model_dir) if n.endswith(".tmp")]
    if flags_:  # no version folder, no temporary folder: the export_dir it created is removed
        assert not os.path.exists(flags_["export_dir"])
    with flagsaver.flagsaver(**dict(QUICK, model_dir=model_dir, **flags_)):
        assert train.main(["train.py"]) == 0  # nothing to train: writes what was missing
    assert os.path.exists(os.path.join(model_dir, "summary.json"))
    assert checkpoints.latest_checkpoint(model_dir) == last


# --- resuming: the run's own state, what it keeps, what it names ----------------------------


def _copy(one_step_run, tmp_path, name="copy"):
    model_dir = str(tmp_path / name)
    shutil.copytree(one_step_run, model_dir)
    return model_dir


def _edit_run_config(model_dir, **changes):
    path = os.path.join(model_dir, "run_config.json")
    with open(path) as handle:
        content = json.load(handle)
    for key, value in changes.items():
        if value is None:
            del content[key]
        else:
            content[key] = value
    with open(path, "w") as handle:
        json.dump(content, handle)
    return path


def test_a_resume_refuses_a_run_config_with_a_value_of_the_wrong_type(one_step_run, tmp_path):
    model_dir = _copy(one_step_run, tmp_path)
    path = _edit_run_config(model_dir, batch_size="eight")
    assert train_error(model_dir).startswith(
        f'train.py: error: {path} is damaged (batch_size is "eight", expected an integer)'
    )


def test_a_resume_refuses_a_run_config_without_the_schedule_it_compares(one_step_run, tmp_path):
    model_dir = _copy(one_step_run, tmp_path)
    path = _edit_run_config(model_dir, batch_size=None, epochs=None, learning_rate=None)
    message = train_error(model_dir, batch_size=16, epochs=3, learning_rate=0.5)
    assert message.startswith(
        f"train.py: error: {path} is damaged (without batch_size, epochs, learning_rate)"
    )


def test_init_from_on_a_resume_is_noted_and_run_config_keeps_the_original(
    one_step_run, tmp_path, capsys, monkeypatch
):
    model_dir = _copy(one_step_run, tmp_path)
    monkeypatch.setattr(train_run, "_fit", lambda *args: {})  # the resume, without its step
    capsys.readouterr()
    overrides = dict(steps_per_epoch=2, allow_schedule_change=True, init_from="/elsewhere.pkl")
    with flagsaver.flagsaver(**dict(QUICK, model_dir=model_dir, **overrides)):
        assert train.main(["train.py"]) == 0
    out = capsys.readouterr().out
    assert (
        f"Note: --init_from=/elsewhere.pkl is ignored: {model_dir} resumes from its own "
        "checkpoint (the run started from random initialisation, which run_config.json keeps)."
    ) in out
    assert "Resuming from " in out
    with open(os.path.join(model_dir, "run_config.json")) as handle:
        assert json.load(handle)["init_from"] is None


def test_a_copied_run_folder_reports_its_own_checkpoint(one_step_run, tmp_path, capsys):
    model_dir = _copy(one_step_run, tmp_path)
    capsys.readouterr()
    with flagsaver.flagsaver(**dict(QUICK, model_dir=model_dir)):
        assert train.main(["train.py"]) == 0
    out = capsys.readouterr().out
    assert f"checkpoint: {model_dir}/checkpoints/ckpt-00000001.keras" in out
    assert one_step_run not in out


def test_a_resume_on_a_data_set_of_other_classes_names_the_data_set(finished_run, tmp_path):
    root = class_folder(str(tmp_path / "two_classes"), ["a", "b"])
    message = train_error(finished_run, dataset=root, batch_size=8, allow_schedule_change=True)
    assert message == (
        f"train.py: error: --dataset={root} has 2 classes, but the run in {finished_run} was "
        "trained on --dataset=demo with 10 classes: its online probe cannot be resumed on it. "
        "Pass the run's --dataset, or another --model_dir to start a run on this one. The "
        "checkpoint was not modified."
    )
