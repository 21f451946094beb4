"""The byol-import program's answers to bad flags, failures and interruptions."""

import os

import official_format
import pytest
from helpers import run_program

from byol_tf.settings import program_configs

SMALL = dict(depth=50, width=1 / 16, hidden=64, projection=32, classes=10)


@pytest.fixture(scope="module")
def official_file(tmp_path_factory):
    """A narrow official-format checkpoint with random weights."""
    params_shapes, state_shapes = official_format.official_shapes(**SMALL)
    online = official_format.random_trees(params_shapes, state_shapes, seed=1)
    target = official_format.random_trees(params_shapes, state_shapes, seed=2)
    path = str(tmp_path_factory.mktemp("official") / "pretrain_small.pkl")
    official_format.write(path, online[0], target[0], online[1], target[1], step=12)
    return path


def _import(*flags):
    return run_program(["-m", "byol_tf.cli.import_official", *flags], timeout=300)


def _one_line(result):
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1, result.stderr
    return lines[0]


def test_import_refuses_an_unknown_dataset_before_writing(official_file, tmp_path):
    run = tmp_path / "run"
    line = _one_line(_import(f"--checkpoint={official_file}", f"--model_dir={run}",
                             "--dataset=imagenet2021"))  # fmt: skip
    assert line == (
        "python -m byol_tf.cli.import_official: error: --dataset=imagenet2021 is not 'demo', an "
        "existing folder or a tensorflow-datasets name (the data set the checkpoint was "
        "pretrained on; imagenet2012 for the official ones)"
    )
    assert not run.exists()


def test_import_names_a_folder_given_as_checkpoint(tmp_path):
    with pytest.raises(ValueError) as error:
        program_configs.ImportConfig(checkpoint=str(tmp_path), model_dir=str(tmp_path / "run"))
    assert str(error.value).startswith(
        f"--checkpoint={tmp_path} is a folder; expected an official BYOL checkpoint file"
    )


def test_refused_import_leaves_no_new_folder(tmp_path):
    bad = tmp_path / "bad.pkl"
    bad.write_bytes(b"\x80\x02}q\x00")  # a pickle cut short
    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "notes.txt").write_text("keep me")
    line = _one_line(_import(f"--checkpoint={bad}", f"--model_dir={tmp_path / 'run'}",
                             f"--export_dir={kept}"))  # fmt: skip
    assert str(bad) in line and "truncated" in line
    assert sorted(os.listdir(tmp_path)) == ["bad.pkl", "kept"]
    assert os.listdir(kept) == ["notes.txt"]


_INTERRUPTED = """
import os, sys
from byol_tf.runs import run_folder
from byol_tf.cli import import_official

write_run_config = run_folder.write_run_config
def interrupt(*args):  # Ctrl-C once the checkpoint is written
    raise KeyboardInterrupt
run_folder.write_run_config = interrupt
sys.argv = ["byol-import", *sys.argv[1:]]
try:
    import_official.run("byol-import")
except SystemExit as stop:
    print("interrupted:", stop.code, sorted(os.listdir(sys.argv[-1].partition("=")[2])))
run_folder.write_run_config = write_run_config
import_official.main(sys.argv[:1])  # the same command again (its flags are parsed)
"""


@pytest.mark.slow  # about 20 s: one import interrupted, then the same import in full
def test_interrupted_import_can_run_again_into_the_same_folder(official_file, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    flags = [f"--checkpoint={official_file}", f"--model_dir={run}"]
    result = run_program(["-c", _INTERRUPTED, *flags], timeout=300)
    assert result.returncode == 0, result.stderr
    # The folder was there before: it stays, emptied of what the interrupted import wrote.
    assert "interrupted: 130 []" in result.stdout
    assert "byol-import: interrupted (Ctrl-C)." in result.stderr
    assert sorted(os.listdir(run)) == ["checkpoints", "run_config.json"]
