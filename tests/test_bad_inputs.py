"""Bad inputs: each stops with one line naming the culprit (no traceback) and loses no file.

CLI cases call `train.main` / `evaluate.main` / the flags parser in-process: what they raise as
`SystemExit(str)` is exactly the line absl prints on stderr before exiting 1, and anything else
would print a traceback. Two subprocess runs confirm that end to end.
"""

import contextlib
import errno
import glob
import hashlib
import io
import json
import logging
import os
import shutil
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from absl import flags
from absl.testing import flagsaver
from helpers import tiny_encoder
from test_end_to_end import ROOT, TINY

import evaluate
import train
from byol_tf import (
    checkpoints,
    config,
    data,
    distribution,
    export,
    networks,
    optimizers,
    recipes,
    training,
)
from byol_tf.cli import console
from byol_tf.model import BYOL
from byol_tf.settings import TrainConfig

FLAGS = flags.FLAGS
QUICK = dict(TINY, epochs=1, steps_per_epoch=1, knn_every_epochs=0, demo_baseline=False)


def _snapshot(folder):
    """`{relative path: sha256}` of every file under `folder`."""
    found = {}
    for base, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(base, name)
            with open(path, "rb") as handle:
                found[os.path.relpath(path, folder)] = hashlib.sha256(handle.read()).hexdigest()
    return found


def _one_line(error, program):
    message = str(error.value.code)
    assert message.startswith(f"{program}: error: "), message
    assert "\n" not in message and "Traceback" not in message, message
    return message


def _train_error(model_dir, **overrides):
    """The one-line error of `train.py` with the tiny flags plus `overrides`."""
    with flagsaver.flagsaver(**dict(QUICK, model_dir=model_dir, **overrides)):
        with pytest.raises(SystemExit) as error:
            train.main(["train.py"])
    return _one_line(error, "train.py")


def _parse_error(*argv):
    """The one-line error of train.py's flags parser for `argv`."""
    with flagsaver.flagsaver():
        with pytest.raises(SystemExit) as error:
            config.flags_parser("train.py")(["train.py", *argv])
    return _one_line(error, "train.py")


def _write_images(folder, count, shape, ext="jpg", seed=0):
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        image = rng.integers(0, 256, shape, dtype=np.uint8)
        encoded = tf.io.encode_jpeg(image) if ext == "jpg" else tf.io.encode_png(image)
        tf.io.write_file(os.path.join(folder, f"{i}.{ext}"), encoded)


def _corrupt_jpeg(path):
    with open(path, "wb") as handle:
        handle.write(b"\xff\xd8\xff\xe0 not really a JPEG")


def _truncated_png(path):
    encoded = tf.io.encode_png(np.full((12, 12, 3), 127, np.uint8)).numpy()
    with open(path, "wb") as handle:
        handle.write(encoded[: len(encoded) // 2])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A real one-step run (checkpoint, run_config.json, flags.txt); copied per test."""
    model_dir = str(tmp_path_factory.mktemp("trained") / "run")
    with flagsaver.flagsaver(**dict(QUICK, model_dir=model_dir)):
        assert train.main(["train.py"]) == 0
    return model_dir


@pytest.fixture
def run_dir(trained, tmp_path):
    """A copy of the trained run; on teardown, asserts every file in it is intact (flags.txt
    and flags_history.txt included: a refused invocation records nothing)."""
    model_dir = str(tmp_path / "run")
    shutil.copytree(trained, model_dir)
    before = _snapshot(model_dir)
    assert {"flags.txt", "flags_history.txt"} <= set(before)
    yield model_dir
    after = _snapshot(model_dir)
    assert {k: after.get(k) for k in before} == before
    for _, path in checkpoints.list_checkpoints(model_dir):
        checkpoints.load_checkpoint(path, compile=False)


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


@pytest.fixture
def new_dir(tmp_path):
    """A fresh model_dir holding one unrelated file, which must survive untouched."""
    model_dir = tmp_path / "new_run"
    model_dir.mkdir()
    (model_dir / "notes.txt").write_text("keep me")
    yield str(model_dir)
    assert (model_dir / "notes.txt").read_text() == "keep me"
    assert not checkpoints.list_checkpoints(str(model_dir))


def _folder_with(tmp_path, bad_name, make_bad):
    root = str(tmp_path / "images")
    _write_images(os.path.join(root, "a"), 8, (12, 12, 3))
    _write_images(os.path.join(root, "b"), 8, (12, 12, 3), seed=1)
    make_bad(os.path.join(root, "b", bad_name))
    return root


# --- data ----------------------------------------------------------------------------------


def test_missing_data_dir(new_dir, tmp_path):
    missing = str(tmp_path / "no_such_folder")
    message = _train_error(new_dir, dataset=missing)
    assert f"Image folder not found: {missing}" in message


def test_empty_folder(new_dir, tmp_path):
    (tmp_path / "empty").mkdir()
    message = _train_error(new_dir, dataset=str(tmp_path / "empty"))
    assert "No images" in message and str(tmp_path / "empty") in message


def test_folder_with_only_non_image_files(new_dir, tmp_path):
    folder = tmp_path / "docs"
    (folder / "cls").mkdir(parents=True)
    (folder / "cls" / "readme.txt").write_text("hello")
    (folder / "labels.csv").write_text("a,b")
    message = _train_error(new_dir, dataset=str(folder))
    assert "No images" in message and str(folder) in message


def test_corrupt_jpeg_among_good_ones_is_named(new_dir, tmp_path):
    root = _folder_with(tmp_path, "bad.jpg", _corrupt_jpeg)
    message = _train_error(new_dir, dataset=root, batch_size=16, eval_split="")
    assert os.path.join(root, "b", "bad.jpg") in message and "--skip_corrupt" in message


def test_truncated_png_is_named(new_dir, tmp_path):
    root = _folder_with(tmp_path, "cut.png", _truncated_png)
    message = _train_error(new_dir, dataset=root, batch_size=16, eval_split="")
    assert os.path.join(root, "b", "cut.png") in message


def _one_pass(root, **kwargs):
    ds = data.pretrain_dataset(root, 4, 28, repeat=False, jit_compile=False, **kwargs)
    batches = list(ds)
    assert all(b["view1"].shape == (4, 28, 28, 3) for b in batches)
    assert all(np.isfinite(b["view1"].numpy()).all() for b in batches)
    return sum(int(b["view1"].shape[0]) for b in batches)


def test_corrupt_jpeg_with_skip_corrupt_is_skipped_and_reported(tmp_path):
    root = _folder_with(tmp_path, "bad.jpg", _corrupt_jpeg)
    assert _one_pass(root, skip_corrupt=True) == 16
    assert os.path.join(root, "b", "bad.jpg") in data.skipped_files()


def test_unsupported_image_formats_are_skipped_counted_and_reported(tmp_path, caplog):
    root = _folder_with(tmp_path, "notes.txt", lambda path: open(path, "w").close())
    for name in ("a/x.webp", "b/y.TIFF", "b/z.tif"):
        with open(os.path.join(root, name), "wb") as handle:
            handle.write(b"an image TensorFlow cannot decode")
    with caplog.at_level(logging.WARNING):
        assert _one_pass(root) == 16
    lines = [r.getMessage() for r in caplog.records if "unsupported formats" in r.getMessage()]
    assert len(lines) == 2  # one per folder listed, not per pass over it
    assert lines[1].startswith(
        f"byol_tf: skipping 2 image file(s) of unsupported formats in {root}"
    )
    assert "(1 .tif, 1 .tiff; e.g." in lines[1] and "readable formats: .jpg, .jpeg" in lines[1]
    assert {os.path.join(root, n) for n in ("a/x.webp", "b/y.TIFF")} <= set(data.skipped_files())
    assert os.path.join(root, "b", "notes.txt") not in data.skipped_files()
    absl_line = b"W1203 23:22:48.434898 1402 decoding.py:90] " + lines[0].encode()
    assert console._NATIVE_NOISE.match(absl_line) is None  # train.py's console shows it


@pytest.mark.parametrize(
    "shape, ext",
    [((12, 12, 1), "png"), ((12, 12, 4), "png"), ((7, 9, 3), "jpg")],
    ids=["greyscale", "rgba", "smaller_than_image_size"],
)
def test_greyscale_rgba_and_small_images_just_work(tmp_path, shape, ext):
    root = str(tmp_path / "images")
    _write_images(root, 8, shape, ext)
    assert _one_pass(root) == 8


def test_fixed_size_source_far_smaller_than_image_size(new_dir):
    message = _train_error(new_dir, image_size=64)
    assert "image_size=64 is more than twice the source images' size (28x28)" in message


def test_unknown_tfds_name(new_dir):
    message = _train_error(new_dir, dataset="cifar_ten")
    assert "Unknown data source 'cifar_ten'" in message and "cifar10" in message


def test_dataset_that_is_a_file(new_dir, tmp_path):
    path = _a_file(tmp_path)
    message = _train_error(new_dir, dataset=str(path))
    assert f"Data source {path} is a file, not a folder; a data source is 'demo', a " in message
    assert "tensorflow-datasets name or a folder of images" in message


# --- flags ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides, match",
    [
        (dict(batch_size=0), "--batch_size must be a positive int. Received: --batch_size=0"),
        (dict(batch_size=-8), "--batch_size must be a positive int. Received: --batch_size=-8"),
        (dict(epochs=0), "--epochs must be a positive int. Received: --epochs=0"),
        (dict(encoder="vgg16"), "--encoder must be one of resnet18, resnet34, resnet50, resnet101"),
        (
            dict(image_size=0),
            "--image_size must be a positive int <= 4096. Received: --image_size=0",
        ),
        (dict(knn_k=0), "--knn_k must be a positive int. Received: --knn_k=0"),
        (
            dict(keep_checkpoints=0),
            "--keep_checkpoints must be a positive int. Received: --keep_checkpoints=0",
        ),
        (
            dict(log_every_steps=0),
            "--log_every_steps must be a positive int. Received: --log_every_steps=0",
        ),
    ],
    ids=[
        "batch_size_0",
        "batch_size_negative",
        "epochs_0",
        "unknown_encoder",
        "image_size_0",
        "knn_k_0",
        "keep_checkpoints_0",
        "log_every_steps_0",
    ],
)
def test_invalid_flag_values(run_dir, overrides, match):
    assert match in _train_error(run_dir, **overrides)


@pytest.mark.parametrize("rate", [-1.0, float("inf")], ids=["negative", "infinite"])
@pytest.mark.parametrize("name", ["LARS", "AdamW"])
def test_optimisers_refuse_a_negative_or_infinite_learning_rate(name, rate):
    optimizer = getattr(optimizers, name)
    with pytest.raises(ValueError) as info:
        optimizer(rate)
    assert (
        str(info.value) == f"learning_rate must be >= 0 and finite. Received: learning_rate={rate}"
    )
    assert optimizer(0.0).learning_rate == 0.0


def test_batch_size_not_divisible_by_replicas(run_dir, monkeypatch):
    two_cpus = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    monkeypatch.setattr(training, "make_strategy", lambda *args, **kwargs: two_cpus)
    message = _train_error(run_dir, batch_size=33, strategy="mirrored")
    assert "--batch_size=33" in message and "number of replicas (2)" in message


@pytest.mark.parametrize("cifar_stem", [False, True], ids=["standard_stem", "cifar_stem"])
def test_every_positive_image_size_suits_the_encoder(cifar_stem):
    # "same" padding: each stride-2 layer maps 1x1 to 1x1, so --image_size needs no minimum
    # beyond 1 (training and export at 1 px run too; the views just carry little information).
    encoder = networks.resnet(18, 0.125, cifar_stem, input_shape=(1, 1, 3))
    assert encoder(np.zeros((2, 1, 1, 3), np.float32), training=True).shape == (2, 64)


def test_image_size_not_an_int():
    assert "--image_size=abc" in _parse_error("--image_size=abc")


def test_flagfile_that_does_not_exist(tmp_path):
    missing = str(tmp_path / "nope.flags")
    message = _parse_error(f"--flagfile={missing}")
    assert "Unable to open flagfile" in message and missing in message


def test_flagfile_with_an_unknown_flag(tmp_path):
    flagfile = tmp_path / "typo.flags"
    flagfile.write_text("# a recipe\n--batch_size=32\n--learning_rat=0.3\n")
    assert "Unknown command line flag 'learning_rat'" in _parse_error(f"--flagfile={flagfile}")


def test_flagfile_that_includes_itself(tmp_path):
    flagfile = tmp_path / "self.flags"
    flagfile.write_text(f"--batch_size=32\n--flagfile={flagfile}\n")
    message = _parse_error(f"--flagfile={flagfile}")
    assert f"--flagfile={flagfile} includes itself: {flagfile} -> {flagfile}" in message


def test_flagfiles_that_include_each_other(tmp_path):
    first, second = tmp_path / "a.flags", tmp_path / "b.flags"
    first.write_text(f"--flagfile={second}\n")
    second.write_text(f"# back to the first\n--epochs=2\n--flagfile={first}\n")
    message = _parse_error("--flagfile", str(first))
    assert f"--flagfile={first} includes itself: {first} -> {second} -> {first}" in message


def test_flagfile_line_without_dashes(tmp_path):
    flagfile = tmp_path / "recipe.flags"
    flagfile.write_text("# a recipe\n--epochs=2\nbatch_size=32\n")
    message = _parse_error(f"--flagfile={flagfile}")
    assert f"--flagfile={flagfile} line 3: 'batch_size=32' is not a flag" in message
    assert "--batch_size=32" in message


def test_knn_k_above_the_memory_bank_is_clamped_with_a_note(knn_trained):
    note = "Note: --knn_k=100000 exceeds the kNN memory bank (256 examples); using 256."
    assert [line for line in knn_trained[1].splitlines() if "--knn_k" in line] == [note]
    with open(os.path.join(knn_trained[0], "summary.json")) as handle:
        assert "kNN k=256," in json.load(handle)["knn_protocol"]


def test_model_dir_that_is_a_file(tmp_path):
    path = tmp_path / "a_file"
    path.write_text("precious")
    assert f"--model_dir={path} is a file" in _train_error(str(path))
    assert path.read_text() == "precious"


def _a_file(tmp_path):
    path = tmp_path / "a_file"
    path.write_text("precious")
    return path


def test_export_dir_that_is_a_file_is_refused_before_training(new_dir, tmp_path):
    path = _a_file(tmp_path)
    assert f"--export_dir={path} is a file; expected a folder." in _train_error(
        new_dir, export_dir=str(path)
    )
    assert path.read_text() == "precious"


def test_export_dir_under_a_file_is_refused_before_training(new_dir, tmp_path):
    path = os.path.join(_a_file(tmp_path), "sub")
    message = _train_error(new_dir, export_dir=path)
    assert f"--export_dir={path} is not writable: Not a directory." in message


def test_export_program_checks_export_dir_before_loading(run_dir, tmp_path):
    path = _a_file(tmp_path)
    with pytest.raises(ValueError, match=r"--export_dir=.*/a_file/sub is not writable"):
        export.export_checkpoint(run_dir, str(path / "sub"))
    result = subprocess.run(
        [sys.executable, "-m", "byol_tf.export", f"--model_dir={run_dir}", f"--export_dir={path}"],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=ROOT,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1] == (
        f"python -m byol_tf.export: error: --export_dir={path} is a file; expected a folder."
    )
    assert path.read_text() == "precious"


def test_resume_with_another_encoder_keeps_the_checkpoint(run_dir):
    message = _train_error(run_dir, encoder="resnet34")
    assert "--encoder=resnet34 does not match the checkpoint" in message
    assert "--encoder=resnet18" in message


def test_resume_with_another_schedule_is_refused_listing_each_change(run_dir, capsys):
    # The run trained 1 epoch with the recipe's learning rate (auto at this budget: short).
    capsys.readouterr()
    message = _train_error(run_dir, epochs=3, learning_rate=0.5, base_tau=0.9)
    assert "Resuming" not in capsys.readouterr().out  # refused before a resume is announced
    assert f"Resuming {run_dir} with other schedule settings" in message
    assert "--base_tau: 0.98 -> 0.9, --epochs: 1 -> 3, --learning_rate: 0.0005 -> 0.5" in message
    assert "--allow_schedule_change" in message and "not modified" in message
    assert not os.path.exists(os.path.join(run_dir, "schedule_changes.json"))


def test_resume_with_another_optimizer_keeps_the_checkpoint(run_dir):
    # The run trained with the recipe's optimiser (`auto` at this budget: AdamW).
    message = _train_error(run_dir, optimizer="lars")
    assert "--optimizer=lars does not match the checkpoint" in message
    assert "--optimizer=adamw" in message


@pytest.mark.parametrize(
    "args, match",
    [
        (["--flagfile=/nonexistent/x.flags"], "Unable to open flagfile"),
        (["--epochs=0"], "--epochs must be a positive int"),
    ],
)
def test_cli_exits_non_zero_with_one_line_on_stderr(args, match, tmp_path):
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "train.py"), f"--model_dir={tmp_path}", *args],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=ROOT,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
    )
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("train.py")]
    assert errors == [result.stderr.splitlines()[-1]] and match in errors[0]
    assert "Traceback" not in result.stderr


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
    for value in ("", "not json", "[]", '{"cluster": {}}'):
        monkeypatch.setenv("TF_CONFIG", value)
        assert distribution.ignored_cluster_note("auto") is None


@pytest.mark.parametrize(
    "overrides, expected",
    [
        (
            dict(recipe="paper", epochs=1),
            "--warmup_epochs=10 (from --recipe=paper), 100 steps) covers the whole run",
        ),
        (dict(warmup_epochs=5, epochs=1, explicit=("warmup_epochs",)), "--warmup_epochs=5, 50"),
        (dict(warmup_epochs=1, epochs=2), None),
    ],
    ids=["paper_recipe_one_epoch", "warmup_5_epochs_1", "shorter_warmup"],
)
def test_a_warmup_as_long_as_the_run_warns(overrides, expected):
    cfg = TrainConfig(**overrides)
    steps_per_epoch = 10
    total = cfg.epochs * steps_per_epoch
    resolved, _ = recipes.resolve(cfg, total, steps_per_epoch, 640)
    warning = training.warmup_warning(resolved, steps_per_epoch, total)
    if expected is None:
        assert warning is None
    else:
        assert warning.startswith("warning: the learning-rate warm-up") and expected in warning
        assert "never decays" in warning and "\n" not in warning


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


# --- labelled evaluation: its own classes, never its training images -------------------------


def _class_folder(root, classes, per_class=8):
    """Noise images in `root/<class>/` for each class name (the images themselves if None)."""
    for seed, name in enumerate(classes or [None]):
        _write_images(os.path.join(root, name or ""), per_class, (12, 12, 3), "png", seed)
    return root


NEEDS = "needs at least 2 classes (subfolders) for a labelled evaluation"
FOLDERS = {  # kind: (class subfolders or None for a flat folder, why it cannot be evaluated)
    "two_classes_no_test_subfolder": (["a", "b"], "has no 'test' subfolder"),
    "one_class": (["a"], f"{NEEDS}; found 1"),
    "flat": (None, f"{NEEDS}; found none"),
}


@pytest.mark.parametrize("kind", list(FOLDERS))
def test_evaluate_refuses_a_folder_that_cannot_score_a_held_out_split(run_dir, tmp_path, kind):
    classes, why = FOLDERS[kind]
    root = _class_folder(str(tmp_path / kind), classes)
    with flagsaver.flagsaver(model_dir=run_dir, dataset=root, protocol="knn"):
        with pytest.raises(SystemExit) as error:
            evaluate.main(["evaluate.py"])
    message = _one_line(error, "evaluate.py")
    assert f"--dataset={root} (--train_split=train, --test_split=test" in message
    assert f"folder {root} {why}" in message


def test_evaluate_refuses_the_training_split_as_test_split(run_dir):
    with flagsaver.flagsaver(model_dir=run_dir, protocol="linear", test_split="train"):
        with pytest.raises(SystemExit) as error:
            evaluate.main(["evaluate.py"])
    message = _one_line(error, "evaluate.py")
    assert "(--train_split=train, --test_split=train): the demo's 'train' split is both" in message
    assert "--test_split" in message.rpartition(":")[2]


@pytest.mark.parametrize("kind", list(FOLDERS))
def test_knn_monitor_asked_for_on_such_a_folder_is_refused_before_training(new_dir, tmp_path, kind):
    classes, why = FOLDERS[kind]
    root = _class_folder(str(tmp_path / kind), classes)
    message = _train_error(new_dir, dataset=root, batch_size=8, knn_every_epochs=1)
    assert message.startswith(
        "train.py: error: The kNN monitor (--knn_every_epochs=1, --eval_split=test) cannot run: "
        f"folder {root} {why}"
    )
    assert message.endswith("--knn_every_epochs=0.")


def test_one_class_folder_pretrains_with_the_default_knn_monitor_off(tmp_path, capsys):
    root = _class_folder(str(tmp_path / "one_class"), ["a"])
    model_dir = str(tmp_path / "run")
    flags_set = {k: v for k, v in QUICK.items() if k != "knn_every_epochs"}  # the default: on
    with flagsaver.flagsaver(**dict(flags_set, model_dir=model_dir, dataset=root, batch_size=8)):
        assert train.main(["train.py"]) == 0
    notes = [line for line in capsys.readouterr().out.splitlines() if "kNN monitor" in line]
    assert notes == [f"Note: the kNN monitor is off: folder {root} {FOLDERS['one_class'][1]} (a)."]
    with open(os.path.join(model_dir, "summary.json")) as handle:
        assert "knn_top1" not in json.load(handle)


@pytest.mark.parametrize("kind", ["two_classes_no_test_subfolder", "flat"])
def test_default_knn_monitor_is_turned_off_with_a_note_on_such_a_folder(tmp_path, kind):
    classes, why = FOLDERS[kind]
    root = _class_folder(str(tmp_path / kind), classes)
    notes = []
    assert not training._knn_on(TrainConfig(dataset=root), notes.append)
    assert len(notes) == 1 and notes[0].startswith(
        f"Note: the kNN monitor is off: folder {root} {why}"
    )


def test_knn_monitor_reports_where_its_memory_bank_and_queries_come_from(knn_trained):
    with open(os.path.join(knn_trained[0], "summary.json")) as handle:
        protocol = json.load(handle)["knn_protocol"]
    assert protocol.endswith("memory: 256 images spread evenly over demo/train, queries: demo/test")


# --- evaluation and serving ------------------------------------------------------------------


def test_evaluate_on_a_directory_without_checkpoint(new_dir):
    with flagsaver.flagsaver(model_dir=new_dir, protocol="knn"):
        with pytest.raises(SystemExit) as error:
            evaluate.main(["evaluate.py"])
    message = _one_line(error, "evaluate.py")
    assert f"No checkpoint found in {new_dir}" in message


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The version folder of a tiny encoder's export (8×8 images, 4 features)."""
    folder = str(tmp_path_factory.mktemp("export"))
    keras.utils.set_random_seed(0)
    return export.export_encoder(tiny_encoder(), folder, 8, (0.5,) * 3, (0.25,) * 3)


@pytest.fixture(scope="module")
def served(exported):
    return tf.saved_model.load(exported).signatures["serving_default"]


def _evaluate_error(**settings):
    """The one-line error of `evaluate.py` with `settings` (kNN unless they say otherwise)."""
    with flagsaver.flagsaver(**dict(dict(protocol="knn"), **settings)):
        with pytest.raises(SystemExit) as error:
            evaluate.main(["evaluate.py"])
    return _one_line(error, "evaluate.py")


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
def test_evaluate_on_a_damaged_saved_model(exported, tmp_path, damage, match):
    folder = str(tmp_path / "1")
    shutil.copytree(exported, folder)
    damage(folder)
    message = _evaluate_error(saved_model=folder, dataset="demo")
    assert match.format(folder=folder) in message
    assert "different device" not in message


def test_evaluate_saved_model_without_model_dir_needs_dataset(exported):
    message = _evaluate_error(saved_model=exported)
    assert f"--saved_model={exported} without --model_dir needs --dataset" in message
    assert "None" not in message


def test_evaluate_on_a_dataset_that_is_a_file(exported, tmp_path):
    path = _a_file(tmp_path)
    message = _evaluate_error(saved_model=exported, dataset=str(path))
    assert f"Data source {path} is a file, not a folder" in message


def test_served_model_answers_an_empty_batch_with_no_rows(served):
    for shape in ([0, 8, 8, 3], [0, 31, 17, 3]):
        features = served(images=tf.zeros(shape, tf.uint8))["representation"]
        assert features.shape == (0, 4) and features.dtype == tf.float32
    assert served(images=tf.zeros([2, 8, 8, 3], tf.uint8))["representation"].shape == (2, 4)


def test_served_model_refuses_float_images(served):
    assert served(images=tf.zeros([1, 8, 8, 3], tf.uint8))["representation"].shape == (1, 4)
    with pytest.raises(tf.errors.InvalidArgumentError, match="expected to be a uint8 tensor"):
        served(images=tf.zeros([1, 8, 8, 3], tf.float32))


def test_served_model_refuses_a_wrong_rank(served):
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"expected shape \[\?,\?,\?,3\]"):
        served(images=tf.zeros([8, 8, 3], tf.uint8))


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
    message = _train_error(model_dir, steps_per_epoch=2)
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
    trained, tmp_path, monkeypatch, fail
):
    # The trained run without its summary: train.py computes and writes it (and the export),
    # as at the end of training, without training again.
    model_dir = str(tmp_path / "run")
    shutil.copytree(trained, model_dir)
    os.remove(os.path.join(model_dir, "summary.json"))
    with monkeypatch.context() as patch:
        match, flags_ = fail(patch, tmp_path)
        message = _train_error(model_dir, **flags_)
    last = checkpoints.latest_checkpoint(model_dir)
    assert match in message and _NO_SPACE in message and f"(newest: {last})" in message
    assert not os.path.exists(os.path.join(model_dir, "summary.json"))
    assert not [n for n in os.listdir(model_dir) if n.endswith(".tmp")]
    if flags_:  # no version folder, no temporary folder left in export_dir
        assert os.listdir(flags_["export_dir"]) == []
    with flagsaver.flagsaver(**dict(QUICK, model_dir=model_dir, **flags_)):
        assert train.main(["train.py"]) == 0  # nothing to train: writes what was missing
    assert os.path.exists(os.path.join(model_dir, "summary.json"))
    assert checkpoints.latest_checkpoint(model_dir) == last


# --- untrusted files -------------------------------------------------------------------------


def test_checkpoint_loading_keeps_keras_safe_mode(tmp_path):
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Lambda(lambda x: x * 2)(inputs))
    path = str(tmp_path / "ckpt-00000001.keras")
    model.save(path)
    with pytest.raises(ValueError, match="safe_mode"):
        checkpoints.load_checkpoint(path)


def test_nothing_in_the_project_unpickles_files():
    sources = [os.path.join(ROOT, name) for name in ("train.py", "evaluate.py")]
    for package in (os.path.join(ROOT, "byol_tf"), os.path.join(ROOT, "byol_tf", "cli")):
        sources += [os.path.join(package, n) for n in os.listdir(package) if n.endswith(".py")]
    for path in sources:
        with open(path) as handle:
            text = handle.read()
        unsafe_uses = ["import pickle", "allow_pickle=True", "safe_mode=False", "dill", "joblib"]
        if path.endswith(os.path.join("byol_tf", "official.py")):
            # The official checkpoints are pickles: read only through an unpickler whose
            # find_class resolves an allow-list (tests/test_official.py refuses code in them).
            assert "class _SafeUnpickler(pickle.Unpickler)" in text and "def find_class" in text
            unsafe_uses = ["pickle.load(", "pickle.loads(", "allow_pickle=True", "import dill"]
        for unsafe in unsafe_uses:
            assert unsafe not in text, f"{path} uses {unsafe}"
