"""The kNN monitor's plan (whether it runs, on what) and the baselines that cost nothing."""

import numpy as np
import pytest
from helpers import UNSCORABLE_FOLDERS, class_folder

from byol_tf.data import sources
from byol_tf.settings import protocols
from byol_tf.settings.train_config import TrainConfig
from byol_tf.training import monitoring


@pytest.mark.parametrize("kind", ["two_classes_no_test_subfolder", "flat"])
def test_default_knn_monitor_is_turned_off_with_a_note_on_such_a_folder(tmp_path, kind):
    classes, why = UNSCORABLE_FOLDERS[kind]
    root = class_folder(str(tmp_path / kind), classes)
    notes = []
    assert not monitoring.knn_plan(TrainConfig(dataset=root), sources.source(root), notes.append)
    assert len(notes) == 1 and notes[0].startswith(
        f"Note: the kNN monitor is off: folder {root} {why}"
    )


def test_an_explicit_monitor_on_such_a_folder_is_refused_naming_the_flags(tmp_path):
    classes, _ = UNSCORABLE_FOLDERS["flat"]
    root = class_folder(str(tmp_path / "flat"), classes)
    cfg = TrainConfig(dataset=root, knn_every_epochs=2, explicit=("knn_every_epochs",))
    with pytest.raises(ValueError, match=r"The kNN monitor \(--knn_every_epochs=2, --eval_split="):
        monitoring.knn_plan(cfg, sources.source(root), print)


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


def test_few_label_draws_are_class_balanced_seeded_and_keep_small_classes_whole():
    labels = np.array([0] * 7 + [1] * 5 + [2] * 2)
    keep = monitoring.few_label_indices(labels, 3, seed=1)
    assert np.bincount(labels[keep]).tolist() == [3, 3, 2]
    assert np.all(np.diff(keep) > 0)
    np.testing.assert_array_equal(keep, monitoring.few_label_indices(labels, 3, seed=1))
    draws = {tuple(monitoring.few_label_indices(labels, 3, seed=s)) for s in range(5)}
    assert len(draws) > 1


def _numpy_knn_top1(bank, bank_labels, queries, labels, k, temperature, classes):
    """Weighted kNN in NumPy: cosine similarity, the k most similar vote exp(s / T)."""
    bank = bank / np.linalg.norm(bank, axis=1, keepdims=True)
    queries = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    sims = queries @ bank.T
    hits = 0
    for row, label in zip(sims, labels, strict=True):
        top = np.argsort(-row)[:k]
        votes = np.zeros(classes)
        np.add.at(votes, bank_labels[top], np.exp(row[top] / temperature))
        hits += int(np.argmax(votes) == label)
    return hits / len(labels)


def test_the_few_label_monitor_is_the_mean_knn_over_seeded_draws():
    import tensorflow as tf

    rng = np.random.default_rng(3)
    bank_x = rng.normal(size=(60, 5)).astype("float32")
    bank_y = np.repeat(np.arange(3), 20).astype("int32")
    bank_x[:, 0] += 2 * bank_y  # separable enough to differ between draws, not trivially
    query_x = rng.normal(size=(30, 5)).astype("float32")
    query_y = np.repeat(np.arange(3), 10).astype("int32")
    query_x[:, 0] += 2 * query_y
    memory = tf.data.Dataset.from_tensor_slices((bank_x, bank_y)).batch(16)
    queries = tf.data.Dataset.from_tensor_slices((query_x, query_y)).batch(16)
    monitor = monitoring.FewLabelKNNMonitor(
        memory, queries, 1, k=4, temperature=0.1, labels_per_class=2, draws=3
    )
    expected = np.mean([
        _numpy_knn_top1(bank_x[keep], bank_y[keep], query_x, query_y, 4, 0.1, 3)
        for keep in (monitoring.few_label_indices(bank_y, 2, seed) for seed in range(3))
    ])  # fmt: skip
    assert monitor.evaluate(lambda x: x) == pytest.approx(expected, abs=1e-6)
    assert monitor.evaluate(lambda x: x) != pytest.approx(
        _numpy_knn_top1(bank_x, bank_y, query_x, query_y, 4, 0.1, 3), abs=1e-6
    )


def test_the_few_label_protocol_is_planned_and_described():
    cfg = TrainConfig(knn_labels_per_class=25, knn_k=200)
    notes = []
    plan = monitoring.knn_plan(cfg, sources.source("demo", "train"), notes.append)
    assert plan.labels_per_class == 25 and plan.k == 200 and not notes
    memory = "memory: 25 labelled images per class (mean of 5 seeded draws) from all 6000 images"
    assert f"{memory} of demo/train" in plan.protocol
    assert isinstance(plan.monitor(8), monitoring.FewLabelKNNMonitor)
    small = TrainConfig(knn_labels_per_class=2, knn_k=200)
    small = monitoring.knn_plan(small, sources.source("demo", "train"), notes.append)
    assert small.k == 20 and notes == [
        "Note: --knn_k=200 exceeds the kNN memory bank (20 examples); using 20."
    ]
