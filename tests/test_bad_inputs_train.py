"""Bad inputs to train.py: each stops with one line naming the culprit (no traceback), before
anything is written.

The cases call `train.main` or the flags parser in-process: what they raise as `SystemExit(str)`
is exactly the line absl prints on stderr before exiting 1, and anything else would print a
traceback. A subprocess run confirms that end to end.
"""

import os

import pytest
import tensorflow as tf
from absl.testing import flagsaver
from helpers import (
    a_file,
    corrupt_jpeg,
    folder_with,
    one_line,
    run_program,
    train_error,
    truncated_png,
)

from byol_tf import config, training


def _parse_error(*argv):
    """The one-line error of train.py's flags parser for `argv`."""
    with flagsaver.flagsaver():
        with pytest.raises(SystemExit) as error:
            config.flags_parser("train.py")(["train.py", *argv])
    return one_line(error, "train.py")


# --- data ----------------------------------------------------------------------------------


def test_missing_data_dir(new_dir, tmp_path):
    missing = str(tmp_path / "no_such_folder")
    message = train_error(new_dir, dataset=missing)
    assert f"Image folder not found: {missing}" in message


def test_empty_folder(new_dir, tmp_path):
    (tmp_path / "empty").mkdir()
    message = train_error(new_dir, dataset=str(tmp_path / "empty"))
    assert "No images" in message and str(tmp_path / "empty") in message


def test_folder_with_only_non_image_files(new_dir, tmp_path):
    folder = tmp_path / "docs"
    (folder / "cls").mkdir(parents=True)
    (folder / "cls" / "readme.txt").write_text("hello")
    (folder / "labels.csv").write_text("a,b")
    message = train_error(new_dir, dataset=str(folder))
    assert "No images" in message and str(folder) in message


def test_corrupt_jpeg_among_good_ones_is_named(new_dir, tmp_path):
    root = folder_with(tmp_path, "bad.jpg", corrupt_jpeg)
    message = train_error(new_dir, dataset=root, batch_size=16, eval_split="")
    assert os.path.join(root, "b", "bad.jpg") in message and "--skip_corrupt" in message


def test_truncated_png_is_named(new_dir, tmp_path):
    root = folder_with(tmp_path, "cut.png", truncated_png)
    message = train_error(new_dir, dataset=root, batch_size=16, eval_split="")
    assert os.path.join(root, "b", "cut.png") in message


def test_fixed_size_source_far_smaller_than_image_size(new_dir):
    message = train_error(new_dir, image_size=64)
    assert "image_size=64 is more than twice the source images' size (28x28)" in message


def test_unknown_tfds_name(new_dir):
    message = train_error(new_dir, dataset="cifar_ten")
    assert "Unknown data source 'cifar_ten'" in message and "cifar10" in message


def test_dataset_that_is_a_file(new_dir, tmp_path):
    path = a_file(tmp_path)
    message = train_error(new_dir, dataset=str(path))
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
def test_invalid_flag_values(finished_run, overrides, match):
    assert match in train_error(finished_run, **overrides)


def test_batch_size_not_divisible_by_replicas(finished_run, monkeypatch):
    two_cpus = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    monkeypatch.setattr(training, "make_strategy", lambda *args, **kwargs: two_cpus)
    message = train_error(finished_run, batch_size=33, strategy="mirrored")
    assert "--batch_size=33" in message and "number of replicas (2)" in message


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


def test_model_dir_that_is_a_file(tmp_path):
    path = tmp_path / "a_file"
    path.write_text("precious")
    assert f"--model_dir={path} is a file" in train_error(str(path))
    assert path.read_text() == "precious"


def test_export_dir_that_is_a_file_is_refused_before_training(new_dir, tmp_path):
    path = a_file(tmp_path)
    assert f"--export_dir={path} is a file; expected a folder." in train_error(
        new_dir, export_dir=str(path)
    )
    assert path.read_text() == "precious"


def test_export_dir_under_a_file_is_refused_before_training(new_dir, tmp_path):
    path = os.path.join(a_file(tmp_path), "sub")
    message = train_error(new_dir, export_dir=path)
    assert f"--export_dir={path} is not writable: Not a directory." in message


@pytest.mark.parametrize(
    "args, match",
    [
        (["--flagfile=/nonexistent/x.flags"], "Unable to open flagfile"),
        (["--epochs=0"], "--epochs must be a positive int"),
    ],
)
def test_cli_exits_non_zero_with_one_line_on_stderr(args, match, tmp_path):
    result = run_program(["train.py", f"--model_dir={tmp_path}", *args])
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("train.py")]
    assert errors == [result.stderr.splitlines()[-1]] and match in errors[0]
    assert "Traceback" not in result.stderr
