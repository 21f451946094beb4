"""Bad inputs to the library's run planning: a warm-up as long as the run is warned about, and
the default kNN monitor turns itself off on a folder it cannot score.

(Bad inputs to other modules are tested with them: test_decoding, test_sources, test_optimizers,
test_networks, test_checkpoints.)
"""

import pytest
from helpers import UNSCORABLE_FOLDERS, class_folder

from byol_tf import recipes, training
from byol_tf.settings import TrainConfig


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


@pytest.mark.parametrize("kind", ["two_classes_no_test_subfolder", "flat"])
def test_default_knn_monitor_is_turned_off_with_a_note_on_such_a_folder(tmp_path, kind):
    classes, why = UNSCORABLE_FOLDERS[kind]
    root = class_folder(str(tmp_path / kind), classes)
    notes = []
    assert not training._knn_on(TrainConfig(dataset=root), notes.append)
    assert len(notes) == 1 and notes[0].startswith(
        f"Note: the kNN monitor is off: folder {root} {why}"
    )
