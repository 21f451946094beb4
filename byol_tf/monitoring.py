"""The kNN monitor of a pretraining run (whether it runs, on what) and the baselines beside it.

`train.py` scores the online encoder by kNN every `--knn_every_epochs` (docs/algorithm.md §6)
and, at the end, two encoders that cost nothing under the same protocol: the raw pixels and the
same architecture at random initialisation (`baseline_scores`, which bench/ uses as well).
"""

import dataclasses

import tensorflow as tf

from byol_tf import data, sources, splits
from byol_tf.protocols import FEATURE_BATCH_SIZE, KNN_TEMPERATURE


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
    """

    memory: object
    queries: object
    bank_size: int
    k: int
    every_epochs: int
    protocol: str

    def datasets(self, image_size):
        """The memory bank's and the queries' `(image, label)` batches."""
        memory = data.eval_dataset(
            self.memory, None, FEATURE_BATCH_SIZE, image_size, max_examples=self.bank_size
        )
        return memory, data.eval_dataset(self.queries, None, FEATURE_BATCH_SIZE, image_size)

    def monitor(self, image_size):
        """A `byol_tf.callbacks.KNNMonitor` on this plan's splits."""
        from byol_tf.callbacks import KNNMonitor

        return KNNMonitor(*self.datasets(image_size), self.every_epochs, self.k)


def bank_size(max_examples):
    """Train images in the kNN memory bank: `max_examples` rounded down to whole feature
    batches (`FEATURE_BATCH_SIZE`, at least one)."""
    return max(max_examples // FEATURE_BATCH_SIZE, 1) * FEATURE_BATCH_SIZE


def knn_plan(cfg, source, log):
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
    queries = sources.resolve(cfg.dataset, cfg.eval_split, cfg.data_dir, cfg.manual_dir)
    args = (cfg.dataset, cfg.train_split, cfg.eval_split, cfg.data_dir, cfg.manual_dir)
    problem = splits.evaluation_problem(*args, train=source, test=queries)
    if problem is not None:
        return _refuse_or_note(cfg, problem, log)
    bank, num_examples = bank_size(cfg.knn_max_examples), source.info.num_examples
    k = _clamped_k(cfg.knn_k, min(bank, num_examples), log)
    return KNNPlan(
        memory=source,
        queries=queries,
        bank_size=bank,
        k=k,
        every_epochs=cfg.knn_every_epochs,
        protocol=_protocol(cfg, k, bank, num_examples),
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


def _protocol(cfg, k, bank, num_examples):
    """The protocol, the memory bank and the queries in words."""
    if bank >= num_examples:
        sampled = f"all {num_examples} images of"
    else:
        sampled = f"{bank} images spread evenly over"
    return (
        f"kNN k={k}, cosine, exp(sim/{KNN_TEMPERATURE}) vote; "
        f"memory: {sampled} {splits.where(cfg.dataset, cfg.train_split)}, "
        f"queries: {splits.where(cfg.dataset, cfg.eval_split)}"
    )


def raw_pixels(images):
    """The baseline "encoder" that costs nothing: the images as the encoder receives them
    (normalised), flattened to one vector each."""
    return tf.reshape(tf.cast(images, tf.float32), (tf.shape(images)[0], -1))


def unit_pixels(images, mean, std):
    """The raw-pixel baseline before normalisation: the pixels in [0, 1], flattened."""
    scale, shift = tf.constant(std, tf.float32), tf.constant(mean, tf.float32)
    unit = tf.cast(images, tf.float32) * scale + shift
    return tf.reshape(unit, (tf.shape(images)[0], -1))


def baseline_scores(score, mean, std, random_encoder=None):
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
