"""Bad inputs to train.py: each stops with one line naming the culprit (no traceback), before
anything is written.

The cases call `train.main` or the flags parser in-process: what they raise as `SystemExit(str)`
is exactly the line absl prints on stderr before exiting 1, and anything else would print a
traceback. A subprocess run confirms that end to end.
"""

import os
import pathlib

import pytest
import tensorflow as tf
from absl.testing import flagsaver
from helpers import (
    a_file,
    class_folder,
    corrupt_jpeg,
    folder_with,
    one_line,
    run_program,
    tiny_encoder,
    train_error,
    truncated_png,
)

from byol_tf.cli import flag_definitions
from byol_tf.training import run_plan, train_run


def _parse_error(*argv):
    """The one-line error of train.py's flags parser for `argv`."""
    with flagsaver.flagsaver():
        with pytest.raises(SystemExit) as error:
            flag_definitions.flags_parser("train.py")(["train.py", *argv])
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
    monkeypatch.setattr(train_run, "make_strategy", lambda *args, **kwargs: two_cpus)
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


# --- bounds before any work ----------------------------------------------------------------


@pytest.mark.parametrize("batch_size, accumulation_steps", [(1, 1), (4, 4)])
def test_a_batch_of_one_example_for_batch_norm_is_refused(new_dir, batch_size, accumulation_steps):
    message = train_error(new_dir, batch_size=batch_size, accumulation_steps=accumulation_steps)
    assert f"--batch_size must be at least {2 * accumulation_steps}" in message
    assert "BatchNorm" in message and f"Received: --batch_size={batch_size}" in message


def test_a_batch_larger_than_the_data_set_is_refused_up_front(new_dir, tmp_path):
    root = class_folder(str(tmp_path / "images"), ["a", "b"], per_class=8)
    message = train_error(new_dir, dataset=root, batch_size=32, eval_split="")
    assert message.endswith(
        f"--batch_size=32 exceeds the 16 examples of --dataset={root} (--train_split=train): "
        "pass a --batch_size of at most 16."
    )


def test_heads_too_large_for_the_memory_are_refused_before_the_model_is_built(new_dir, monkeypatch):
    monkeypatch.setattr(run_plan, "memory_bytes", lambda: 2**20)  # a machine of 1 MiB
    message = train_error(new_dir, hidden_dim=4096)
    assert "--hidden_dim=4096 and --projection_dim=16 make heads of 847,920 parameters" in message
    assert "need at least 7.0 MiB to train" in message and "this machine has 1.0 MiB" in message


def test_a_hidden_dim_of_a_billion_is_refused_in_one_line(new_dir):
    message = train_error(new_dir, hidden_dim=1_000_000_000)
    assert "--hidden_dim=1000000000 and --projection_dim=16 make heads of " in message
    assert "GiB to train" in message and "--hidden_dim=4096 --projection_dim=256" in message


@pytest.mark.parametrize(
    "tf_config, match",
    [
        (None, "--strategy=multi_worker needs the cluster in the TF_CONFIG environment variable"),
        ("{not json", "TF_CONFIG is not JSON (Expecting property name"),
        ('{"cluster": {}}', 'TF_CONFIG={"cluster": {}} describes no cluster and task for'),
    ],
    ids=["unset", "not_json", "no_cluster"],
)
def test_multi_worker_without_a_usable_tf_config_is_refused(new_dir, monkeypatch, tf_config, match):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    if tf_config:
        monkeypatch.setenv("TF_CONFIG", tf_config)
    message = train_error(new_dir, strategy="multi_worker")
    assert match in message and "README" in message


def test_a_file_where_the_checkpoint_folder_goes_is_refused_before_training(new_dir):
    path = a_file(pathlib.Path(new_dir), "checkpoints")
    message = train_error(new_dir)
    assert message.endswith(f"holds a file {path} where the run's checkpoints folder goes; "
                            "move it away or pass another --model_dir.")  # fmt: skip
    assert "free space" not in message and path.read_text() == "precious"
    assert sorted(os.listdir(new_dir)) == ["checkpoints", "notes.txt"]


def test_init_from_a_keras_file_of_another_model_is_refused_in_one_line(new_dir, tmp_path):
    path = str(tmp_path / "encoder.keras")
    tiny_encoder().save(path)
    message = train_error(new_dir, init_from=path)
    assert message.endswith(
        f"--init_from={path} holds a Functional, not a byol_tf BYOL checkpoint (a run's "
        "checkpoints/ckpt-<step>.keras, as train.py writes); pass one of those, a run folder "
        "or an official .pkl checkpoint."
    )


def test_init_from_that_does_not_exist_is_refused_in_one_line(new_dir, tmp_path):
    path = str(tmp_path / "nope.keras")
    assert train_error(new_dir, init_from=path).endswith(f"--init_from={path} not found.")


@pytest.mark.parametrize(
    "overrides",
    [dict(dataset="cifar_ten"), dict(batch_size=100_000), dict(init_from="/nonexistent.pkl")],
    ids=["unknown_dataset", "batch_larger_than_the_data", "init_from_missing"],
)
def test_a_refused_run_leaves_no_new_folder(tmp_path, overrides):
    new = tmp_path / "new"
    train_error(str(new / "runs" / "run"), export_dir=str(new / "export"), **overrides)
    assert os.listdir(tmp_path) == []
