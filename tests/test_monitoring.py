"""The kNN monitor's plan (whether it runs, on what) and the baselines that cost nothing."""

import numpy as np
import pytest
from helpers import UNSCORABLE_FOLDERS, class_folder

from byol_tf import monitoring, protocols, sources
from byol_tf.settings import TrainConfig


@pytest.mark.parametrize("kind", ["two_classes_no_test_subfolder", "flat"])
def test_default_knn_monitor_is_turned_off_with_a_note_on_such_a_folder(tmp_path, kind):
    classes, why = UNSCORABLE_FOLDERS[kind]
    root = class_folder(str(tmp_path / kind), classes)
    notes = []
    assert not monitoring.knn_plan(TrainConfig(dataset=root), sources.resolve(root), notes.append)
    assert len(notes) == 1 and notes[0].startswith(
        f"Note: the kNN monitor is off: folder {root} {why}"
    )


def test_an_explicit_monitor_on_such_a_folder_is_refused_naming_the_flags(tmp_path):
    classes, _ = UNSCORABLE_FOLDERS["flat"]
    root = class_folder(str(tmp_path / "flat"), classes)
    cfg = TrainConfig(dataset=root, knn_every_epochs=2, explicit=("knn_every_epochs",))
    with pytest.raises(ValueError, match=r"The kNN monitor \(--knn_every_epochs=2, --eval_split="):
        monitoring.knn_plan(cfg, sources.resolve(root), print)


def test_the_memory_bank_is_whole_feature_batches():
    batch = protocols.FEATURE_BATCH_SIZE
    assert [monitoring.bank_size(n) for n in (1, batch, 2 * batch + 1, 10_000)] == [
        batch, batch, 2 * batch, (10_000 // batch) * batch,
    ]  # fmt: skip


def test_baseline_scores_score_the_pixels_as_given_and_in_unit_range():
    images = np.random.default_rng(0).normal(size=(4, 2, 2, 3)).astype("float32")
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.5)
    seen = {}

    def score(encoder):
        features = np.asarray(encoder(images))
        seen[len(seen)] = features
        return float(features.sum())

    scores = monitoring.baseline_scores(
        score, mean, std, random_encoder=lambda: lambda x: x[:, 0, 0]
    )
    np.testing.assert_array_equal(seen[0], images.reshape(4, -1))
    np.testing.assert_allclose(seen[1], (images * std + mean).reshape(4, -1), rtol=1e-6)
    np.testing.assert_array_equal(seen[2], images[:, 0, 0])
    assert list(scores) == ["raw_pixels", "raw_pixels_unit", "random_init"]
    assert "random_init" not in monitoring.baseline_scores(score, mean, std)


def test_the_protocol_text_names_the_neighbours_and_the_temperature():
    assert protocols.knn_description() == "kNN (k=200, T=0.1)"
    assert (protocols.KNN_NEIGHBOURS, protocols.KNN_TEMPERATURE) == (200, 0.1)
