"""Files written before byol_tf moved into subpackages still load: a checkpoint and its
run_config.json written by the flat-layout version 0.1.0 (tests/data/checkpoint_0_1_0)."""

import os
import shutil

import numpy as np
import pytest
from absl.testing import flagsaver

import byol_tf
from byol_tf.runs import checkpoints

OLD = os.path.join(os.path.dirname(__file__), "data", "checkpoint_0_1_0")
CHECKPOINT = os.path.join(OLD, "ckpt-00000002.keras")
# The flags the old run was written with (tests/data/checkpoint_0_1_0/README.md).
FLAGS = dict(
    dataset="demo", image_size=28, encoder="resnet18", width_multiplier=0.0625, projection_dim=8,
    hidden_dim=16, batch_size=16, steps_per_epoch=2, knn_every_epochs=0, demo_baseline=False,
    jit_compile=False,
)  # fmt: skip


def _images():
    return np.linspace(-1, 1, 2 * 28 * 28 * 3, dtype=np.float32).reshape(2, 28, 28, 3)


def test_a_0_1_checkpoint_loads_with_its_classes_and_gives_the_same_features():
    model = checkpoints.load_checkpoint(CHECKPOINT)
    assert isinstance(model, byol_tf.BYOL)
    assert type(model.optimizer).__module__ == "byol_tf.core.optimizers"
    assert int(model.optimizer.iterations.numpy()) == 2
    recorded = np.load(os.path.join(OLD, "features.npz"))
    np.testing.assert_allclose(model.encoder(_images(), training=False), recorded["online"],
                               rtol=1e-5, atol=1e-6)  # fmt: skip
    np.testing.assert_allclose(
        model.target_encoder(_images(), training=False), recorded["target"], rtol=1e-5, atol=1e-6
    )
    assert not np.allclose(recorded["online"], recorded["target"])  # two networks told apart


@pytest.mark.slow
def test_a_0_1_run_folder_resumes_with_todays_train_py(tmp_path, capsys):
    import train

    run = tmp_path / "run"
    os.makedirs(run / "checkpoints")
    shutil.copy(CHECKPOINT, run / "checkpoints")
    shutil.copy(os.path.join(OLD, "run_config.json"), run)
    with flagsaver.flagsaver(**FLAGS, epochs=2, allow_schedule_change=True, model_dir=str(run)):
        assert train.main(["train.py"]) == 0
    out = capsys.readouterr().out
    assert "Resuming from" in out and "ckpt-00000002.keras" in out, out
    assert os.path.exists(run / "checkpoints" / "ckpt-00000004.keras")
