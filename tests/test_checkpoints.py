"""Checkpoints: a damaged newest one falls back to the newest readable one, in one line; an
interrupted write leaves no temporary file; another architecture is refused in one line."""

import contextlib
import io
import os
import shutil

import keras
import pytest
from absl.testing import flagsaver
from helpers import TINY, tiny_encoder

import byol_tf
import evaluate
import train
from byol_tf.core.model import BYOL
from byol_tf.runs import checkpoints
from byol_tf.serving import export

TWO_STEPS = dict(TINY, epochs=1, knn_every_epochs=0, demo_baseline=False)  # 2 checkpoints


def _truncate(path):
    with open(path, "rb") as handle:
        content = handle.read()
    with open(path, "wb") as handle:
        handle.write(content[: len(content) // 2])


def _text(path):
    with open(path, "w") as handle:
        handle.write("not a checkpoint\n")


DAMAGE = {"truncated": _truncate, "text_file": _text}


def _tiny_model():
    model = BYOL(tiny_encoder(), projection_dim=8, hidden_dim=16)
    model.compile(optimizer=byol_tf.LARS(0.1))
    model.optimizer.build(model.trainable_variables)
    return model


def _saved(tmp_path, steps):
    model = _tiny_model()
    return [checkpoints.save_checkpoint(model, str(tmp_path), step, keep=5) for step in steps]


@pytest.mark.parametrize("damage", DAMAGE.values(), ids=DAMAGE.keys())
def test_a_damaged_newest_checkpoint_is_named_and_the_one_before_used(tmp_path, damage):
    first, second = _saved(tmp_path, [1, 2])
    damage(second)
    notes = []
    assert checkpoints.latest_readable(str(tmp_path), notes.append) == first
    assert len(notes) == 1 and notes[0].startswith(f"Skipping damaged checkpoint {second}: ")
    with pytest.raises(ValueError, match=f"Cannot read checkpoint {second}: it is damaged: "):
        checkpoints.load_checkpoint(second)


def test_every_checkpoint_damaged_is_refused_in_one_line(tmp_path):
    paths = _saved(tmp_path, [1, 2])
    for path in paths:
        _text(path)
    notes = []
    with pytest.raises(ValueError) as error:
        checkpoints.latest_readable(str(tmp_path), notes.append)
    assert str(error.value).startswith(
        f"Every checkpoint in {checkpoints.checkpoint_dir(str(tmp_path))} is damaged (2, listed"
    )
    assert len(notes) == 2


def test_a_checkpoint_write_interrupted_by_ctrl_c_leaves_no_temporary_file(tmp_path, monkeypatch):
    (first,) = _saved(tmp_path, [1])
    save = BYOL.save

    def save_then_interrupt(model, path, *args, **kwargs):
        save(model, path, *args, **kwargs)
        _truncate(path)  # half written
        raise KeyboardInterrupt

    monkeypatch.setattr(BYOL, "save", save_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        checkpoints.save_checkpoint(_tiny_model(), str(tmp_path), 2)
    assert os.listdir(checkpoints.checkpoint_dir(str(tmp_path))) == [os.path.basename(first)]


# --- through the programs --------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished run of 2 steps with a checkpoint after each."""
    model_dir = str(tmp_path_factory.mktemp("trained") / "run")
    with flagsaver.flagsaver(**dict(TWO_STEPS, model_dir=model_dir)):
        assert train.main(["train.py"]) == 0
    assert [s for s, _ in checkpoints.list_checkpoints(model_dir)] == [1, 2]
    return model_dir


@pytest.fixture
def run(trained, tmp_path):
    model_dir = str(tmp_path / "run")
    shutil.copytree(trained, model_dir)
    return model_dir


def _train(model_dir, capsys, **overrides):
    """`(exit status or one-line error, stdout + stderr)` of train.py on `model_dir`."""
    capsys.readouterr()
    with flagsaver.flagsaver(**dict(TWO_STEPS, model_dir=model_dir, **overrides)):
        try:
            result = train.main(["train.py"])
        except SystemExit as error:
            result = str(error.code)
    printed = capsys.readouterr()
    return result, printed.out + printed.err


# The text file is the slower case: a resume past it trains a step more (slow target).
@pytest.mark.parametrize(
    "damage",
    [DAMAGE["truncated"], pytest.param(DAMAGE["text_file"], marks=pytest.mark.slow)],
    ids=DAMAGE.keys(),
)
def test_training_resumes_from_the_newest_readable_checkpoint(run, capsys, damage):
    newest = checkpoints.latest_checkpoint(run)
    damage(newest)
    result, printed = _train(run, capsys)
    assert result == 0, printed
    assert f"Skipping damaged checkpoint {newest}: " in printed
    assert "Resuming from " in printed and "ckpt-00000001.keras (step 1)" in printed
    checkpoints.load_checkpoint(newest)  # written again, whole


def test_training_refuses_when_every_checkpoint_is_damaged(run, capsys):
    for _, path in checkpoints.list_checkpoints(run):
        _text(path)
    result, printed = _train(run, capsys)
    assert result.startswith("train.py: error: Every checkpoint in ") and "\n" not in result
    assert "Traceback" not in printed


def test_a_checkpoint_of_another_architecture_without_run_config_is_one_line(run, capfd):
    os.remove(os.path.join(run, "run_config.json"))
    capfd.readouterr()
    with flagsaver.flagsaver(**dict(TWO_STEPS, model_dir=run, width_multiplier=0.25, epochs=2)):
        with pytest.raises(SystemExit) as error:
            train.main(["train.py"])
    message = str(error.value.code)
    assert message.startswith(f"train.py: error: Cannot resume from {run}/checkpoints/ckpt-")
    assert "its weights do not fit the model these flags build" in message
    assert "\n" not in message
    printed = capfd.readouterr()
    assert len((printed.out + printed.err).splitlines()) <= 3  # the recipe, augmentation lines


@pytest.mark.parametrize("content", ["{}", "[1, 2]", '{"dataset": "demo",'])
def test_training_refuses_a_damaged_run_config_naming_it(run, capsys, content):
    with open(os.path.join(run, "run_config.json"), "w") as handle:
        handle.write(content)
    result, _ = _train(run, capsys, epochs=2)
    assert result.startswith(f"train.py: error: {run}/run_config.json is damaged (")
    assert "\n" not in result


def test_evaluate_calls_a_damaged_checkpoint_damaged(run, capsys):
    for _, path in checkpoints.list_checkpoints(run):
        _truncate(path)
    capsys.readouterr()
    with flagsaver.flagsaver(model_dir=run, protocol="knn"):
        with pytest.raises(SystemExit) as error:
            evaluate.main(["evaluate.py"])
    message = str(error.value.code)
    assert message.startswith("evaluate.py: error: Every checkpoint in ") and "damaged" in message
    assert "not found" not in message
    assert "Skipping damaged checkpoint" in capsys.readouterr().err


def test_export_calls_a_damaged_checkpoint_damaged(run, tmp_path):
    newest = checkpoints.latest_checkpoint(run)
    _text(newest)
    with pytest.raises(ValueError) as error:
        export.export_checkpoint(run, str(tmp_path / "export"), checkpoint=newest)
    assert str(error.value).startswith(f"Cannot read checkpoint {newest}: it is damaged: ")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):  # without --checkpoint: the newest readable one
        path = export.export_checkpoint(run, str(tmp_path / "export"))
    assert os.path.exists(os.path.join(path, "saved_model.pb"))
    assert f"Skipping damaged checkpoint {newest}: " in printed.getvalue()


def test_checkpoint_loading_keeps_keras_safe_mode(tmp_path):
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Lambda(lambda x: x * 2)(inputs))
    path = str(tmp_path / "ckpt-00000001.keras")
    model.save(path)
    with pytest.raises(ValueError, match="safe_mode"):
        checkpoints.load_checkpoint(path)
