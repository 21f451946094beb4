"""The kNN monitor of a pretraining run (whether it runs, on what) and the baselines beside it.

`train.py` scores the online encoder by kNN every `--knn_every_epochs` (docs/algorithm.md §6)
and, at the end, two encoders that cost nothing under the same protocol: the raw pixels and the
same architecture at random initialisation (`baseline_scores`, which bench/ uses as well).
With `--knn_labels_per_class=N` the memory bank keeps N labelled images per class, a seeded
class-balanced draw, and the score is the mean over `FEW_LABEL_DRAWS` draws
(`FewLabelKNNMonitor`).
"""

import dataclasses

import numpy as np
import tensorflow as tf

from byol_tf.data import pipelines, sources, splits
from byol_tf.settings.protocols import FEATURE_BATCH_SIZE, FEW_LABEL_DRAWS, KNN_TEMPERATURE
from byol_tf.training.callbacks import KNNMonitor


@dataclasses.dataclass(frozen=True)
class KNNPlan:
    """The kNN monitor of a run, decided once.

    Attributes:
        memory: the training split (a resolved `Source`): the memory bank's images.
        queries: the evaluation split (a resolved `Source`): the images classified.
        bank_size: images of `memory` in the bank (`bank_size`).
        k: neighbours, `--knn_k` clamped to the bank.
        every_epochs: `--knn_every_epochs`.
        protocol: the protocol in words, for summary.json.
        labels_per_class: `--knn_labels_per_class` (0: every image of the bank is labelled).
    """

    memory: object
    queries: object
    bank_size: int
    k: int
    every_epochs: int
    protocol: str
    labels_per_class: int = 0

    def datasets(self, image_size) -> tuple[tf.data.Dataset, tf.data.Dataset]:
        """The memory bank's and the queries' `(image, label)` batches."""
        memory = pipelines.eval_dataset(
            self.memory, FEATURE_BATCH_SIZE, image_size, max_examples=self.bank_size
        )
        return memory, pipelines.eval_dataset(self.queries, FEATURE_BATCH_SIZE, image_size)

    def monitor(self, image_size) -> KNNMonitor:
        """A `byol_tf.training.callbacks.KNNMonitor` on this plan's splits (a
        `FewLabelKNNMonitor` with `labels_per_class`)."""
        datasets = self.datasets(image_size)
        if self.labels_per_class:
            return FewLabelKNNMonitor(
                *datasets, self.every_epochs, self.k, labels_per_class=self.labels_per_class
            )
        return KNNMonitor(*datasets, self.every_epochs, self.k)


def few_label_indices(labels, per_class, seed) -> np.ndarray:
    """Indices of a seeded class-balanced draw: `per_class` examples of every class (all of a
    class that has fewer), sorted.

    Args:
        labels: int [N] class labels.
        per_class: examples drawn per class, without replacement.
        seed: seed of the draw; the same labels and seed always give the same indices.

    Returns:
        Sorted int64 indices into `labels`.
    """
    labels = np.asarray(labels).reshape(-1)
    rng = np.random.default_rng(seed)
    chosen = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        chosen.append(rng.choice(members, min(per_class, len(members)), replace=False))
    return np.sort(np.concatenate(chosen)).astype(np.int64)


class FewLabelKNNMonitor(KNNMonitor):
    """The kNN monitor with few labels: `labels_per_class` labelled images of every class form
    the memory bank, and the score is the mean top-1 over `draws` seeded class-balanced draws
    (`few_label_indices` with seeds 0, 1, ...) from the `memory` images.

    The semi-supervised evaluation of few labels (e.g. 250 labels, 25 per class, on CIFAR-10 in
    MixMatch and FixMatch), scored by the same weighted kNN (docs/algorithm.md §6).

    Args:
        memory, queries, every_epochs, k, temperature: as `KNNMonitor`; `k` is clamped to the
            labelled images of a draw.
        labels_per_class: labelled images per class in each draw.
        draws: draws averaged.
    """

    def __init__(self, *args, labels_per_class, draws=FEW_LABEL_DRAWS, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.labels_per_class, self.draws = labels_per_class, draws

    def evaluate(self, encoder=None) -> float:
        """Mean kNN top-1 of `encoder` (default: the current online encoder) over the draws."""
        from byol_tf import evaluation

        encoder = encoder or self.model.encoder
        bank, bank_labels = evaluation.extract_features(encoder, self.memory)
        feats, labels = evaluation.extract_features(encoder, self.queries)
        bank, bank_labels = np.asarray(bank), np.asarray(bank_labels)
        scores = []
        for seed in range(self.draws):
            keep = few_label_indices(bank_labels, self.labels_per_class, seed)
            result = evaluation.knn_classify(
                bank[keep], bank_labels[keep], feats, labels,
                k=min(self.k, len(keep)), temperature=self.temperature,
            )  # fmt: skip
            scores.append(float(result["top1"]))
        return float(np.mean(scores))


def bank_size(max_examples) -> int:
    """Train images in the kNN memory bank: `max_examples` rounded down to whole feature
    batches (`FEATURE_BATCH_SIZE`, at least one)."""
    return max(max_examples // FEATURE_BATCH_SIZE, 1) * FEATURE_BATCH_SIZE


def knn_plan(cfg, source, log) -> KNNPlan | None:
    """The run's `KNNPlan`, or None when the monitor does not run.

    It runs when asked for (`--knn_every_epochs` and `--eval_split`) and the two splits suit a
    labelled evaluation. Splits that do not (fewer than 2 classes, or queries that are images
    of the memory bank) are refused when `--knn_every_epochs` or `--eval_split` was set, else
    the default monitor is turned off with a one-line note through `log`.

    Args:
        cfg: the run's `TrainConfig`.
        source: its training split, resolved.
        log: prints a line.

    Raises:
        ValueError: naming the flags, the folder or split, and why.
    """
    if not (cfg.eval_split and cfg.knn_every_epochs):
        return None
    queries = sources.source(
        cfg.dataset, cfg.eval_split, data_dir=cfg.data_dir, manual_dir=cfg.manual_dir
    )
    problem = splits.evaluation_problem(source, queries)
    if problem is not None:
        return _refuse_or_note(cfg, problem, log)
    bank, num_examples = bank_size(cfg.knn_max_examples), source.info.num_examples
    labelled = min(bank, num_examples)
    if cfg.knn_labels_per_class:
        labelled = min(labelled, cfg.knn_labels_per_class * source.info.num_classes)
    k = _clamped_k(cfg.knn_k, labelled, log)
    return KNNPlan(
        memory=source,
        queries=queries,
        bank_size=bank,
        k=k,
        every_epochs=cfg.knn_every_epochs,
        protocol=_protocol(cfg, k, bank, source, queries),
        labels_per_class=cfg.knn_labels_per_class,
    )


def _refuse_or_note(cfg, problem, log):
    split, reason = problem
    flags = f"--knn_every_epochs={cfg.knn_every_epochs}, --eval_split={cfg.eval_split}"
    advice = "name a labelled split disjoint from --train_split with --eval_split, or pass"
    advice = f"{advice if split == 'test' else 'pass'} --knn_every_epochs=0"
    if {"knn_every_epochs", "eval_split"} & set(cfg.explicit):
        raise ValueError(f"The kNN monitor ({flags}) cannot run: {reason}; {advice}.")
    hint = "; --eval_split names its labelled split" if split == "test" else ""
    log(f"Note: the kNN monitor is off: {reason}{hint}.")
    return None


def _clamped_k(k, bank, log):
    """`--knn_k`, clamped to the memory bank's size (with a one-line note through `log`)."""
    if k <= bank:
        return k
    log(f"Note: --knn_k={k} exceeds the kNN memory bank ({bank} examples); using {bank}.")
    return bank


def _protocol(cfg, k, bank, memory, queries):
    """The protocol, the memory bank and the queries in words."""
    num_examples = memory.info.num_examples
    if bank >= num_examples:
        sampled = f"all {num_examples} images of"
    else:
        sampled = f"{bank} images spread evenly over"
    if cfg.knn_labels_per_class:
        sampled = (
            f"{cfg.knn_labels_per_class} labelled images per class (mean of {FEW_LABEL_DRAWS} "
            f"seeded draws) from {sampled}"
        )
    return (
        f"kNN k={k}, cosine, exp(sim/{KNN_TEMPERATURE}) vote; "
        f"memory: {sampled} {splits.where(memory)}, queries: {splits.where(queries)}"
    )


def raw_pixels(images) -> tf.Tensor:
    """The baseline "encoder" that costs nothing: the images as the encoder receives them
    (normalised), flattened to one vector each."""
    return tf.reshape(tf.cast(images, tf.float32), (tf.shape(images)[0], -1))


def unit_pixels(images, mean, std) -> tf.Tensor:
    """The raw-pixel baseline before normalisation: the pixels in [0, 1], flattened."""
    scale, shift = tf.constant(std, tf.float32), tf.constant(mean, tf.float32)
    unit = tf.cast(images, tf.float32) * scale + shift
    return tf.reshape(unit, (tf.shape(images)[0], -1))


def baseline_scores(score, mean, std, random_encoder=None) -> dict:
    """The scores of the encoders that cost nothing, under the protocol `score` implements.

    Args:
        score: maps an encoder (a callable from normalised image batches to features) to its
            score, e.g. `KNNMonitor.evaluate`.
        mean: the normalisation mean of the images `score` feeds (undone for `raw_pixels_unit`).
        std: the normalisation std.
        random_encoder: a callable returning a freshly built (and seeded) encoder; None skips
            `random_init`.

    Returns:
        `{"raw_pixels": ..., "raw_pixels_unit": ..., "random_init": ...}` (the last only with
        `random_encoder`): the normalised pixels, the pixels in [0, 1], and the architecture at
        random initialisation.
    """
    scores = {
        "raw_pixels": score(raw_pixels),
        "raw_pixels_unit": score(lambda images: unit_pixels(images, mean, std)),
    }
    if random_encoder is not None:
        scores["random_init"] = score(random_encoder())
    return scores
