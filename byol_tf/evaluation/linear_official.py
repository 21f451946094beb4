"""The paper's linear evaluation (Grill et al. 2020, appendix C.1; docs/algorithm.md §6): a linear
classifier on the frozen encoder, trained on random crops and flips of whole training images."""

import collections
import functools
import math
import numbers

import keras
import numpy as np
import tensorflow as tf

from byol_tf.data.source_kinds import Source, SourceInfo
from byol_tf.evaluation.features import (
    as_pairs,
    check_fraction,
    check_int,
    encoder_input_side,
    extract_features,
    resolve_num_classes,
    subset_by_fraction,
)
from byol_tf.evaluation.linear import classifier_accuracies
from byol_tf.settings.choices import CROP_SAMPLERS, LINEAR_SELECTIONS
from byol_tf.views import eval_crops, image_ops, rng

PROTOCOL = "linear_official"
# The paper's sweep (appendix C.1: "5 learning rates {0.4, 0.3, 0.2, 0.1, 0.05}"), read as the
# official code's base rates per 256 images (`byol/utils/schedules.py`); on a tie of held-out
# top-1 the first is kept. Each number's source: docs/algorithm.md §6.
LINEAR_OFFICIAL_LEARNING_RATES = (0.4, 0.3, 0.2, 0.1, 0.05)
OFFICIAL_LEARNING_RATE = 0.2  # the official `byol/configs/eval.py` base rate
# Budgets: epochs, and the batch size per selection (None: the caller's). "imagenet": 80 epochs
# at the paper's batch of 1024 (appendix C.1), or the official main loop's 4096.
LINEAR_PRESETS = {
    "small": {"epochs": 10, "batch_size": {"paper": None, "official": None}},
    "imagenet": {"epochs": 80, "batch_size": {"paper": 1024, "official": 4096}},
}
# The paper's held-out set: 10,009 ImageNet training images (appendix C.1, Table 10).
MAX_VALIDATION_EXAMPLES = 10_009
_MOMENTUM = 0.9  # SGD with Nesterov momentum 0.9, no weight decay (paper appendix C.1)
_CROP_TAG = 3  # seed_pair counter of the training crops
# The checked settings of a run: the views', the training's and the held-out split's.
_Options = collections.namedtuple("_Options", "image_size epochs batch_size crop_sampler "
    "shuffle_buffer seed mean std crop_fraction selection label_fraction validation_fraction "
    "max_validation_examples")  # fmt: skip


def preset_budget(preset, selection="paper") -> dict:
    """`{"epochs", "batch_size"}` of the `LINEAR_PRESETS` budget `preset` under `selection`
    (`batch_size` None: the caller's)."""
    _check_choice("preset", preset, tuple(LINEAR_PRESETS))
    _check_choice("selection", selection, LINEAR_SELECTIONS)
    budget = LINEAR_PRESETS[preset]
    return {"epochs": budget["epochs"], "batch_size": budget["batch_size"][selection]}


def learning_rate(step, base_rate, batch_size, total_steps) -> tf.Tensor:
    """The official schedule: base · batch / 256, cosine decay to 0 over `total_steps`, no
    warm-up (`byol/utils/schedules.py`, `learning_schedule` with warmup_steps=0).

    Args:
        step: the step (int, or a tensor), counted from 0.
        base_rate: base rate per 256 images (float, or float32 [G] for G classifiers).
        batch_size: the mini-batch size.
        total_steps: the number of steps of the run.

    Returns:
        float32, the rate at `step` (shape of `base_rate`).
    """
    progress = tf.minimum(tf.cast(step, tf.float32), total_steps) / total_steps
    return base_rate * (batch_size / 256) * 0.5 * (1.0 + tf.cos(math.pi * progress))


def _check_arguments(encoder, datasets, learning_rates, crop_sampler, selection):
    """Checks the encoder, datasets, rates, sampler and selection; returns the rates."""
    if not callable(encoder):
        raise ValueError(f"encoder must be callable. Received: encoder={type(encoder).__name__}")
    for name, value in zip(("train_dataset", "test_dataset"), datasets, strict=True):
        if not isinstance(value, tf.data.Dataset):
            raise ValueError(f"{name} must be a tf.data.Dataset. Received: {type(value).__name__}")
    _check_choice("selection", selection, LINEAR_SELECTIONS)
    if learning_rates is None:
        learning_rates = (
            LINEAR_OFFICIAL_LEARNING_RATES if selection == "paper" else (OFFICIAL_LEARNING_RATE,)
        )
    rates = tuple(learning_rates)
    if not rates or any(not isinstance(r, numbers.Real) or not r > 0 for r in rates):
        raise ValueError(
            f"learning_rates must be non-empty and > 0. Received: learning_rates={learning_rates}"
        )
    if selection == "official" and len(rates) != 1:
        raise ValueError(
            "selection='official' trains one classifier: pass one learning rate. "
            f"Received: learning_rates={learning_rates}"
        )
    _check_choice("crop_sampler", crop_sampler, CROP_SAMPLERS)
    return tuple(float(r) for r in rates)


def _split_info(info):
    """`(num_classes, mean, std)` of `linear_eval_official`'s `info`."""
    if info is None:
        return None, image_ops.IMAGENET_MEAN, image_ops.IMAGENET_STD
    info = info.info if isinstance(info, Source) else info
    if not isinstance(info, SourceInfo):
        raise ValueError(f"info must be a SourceInfo or Source. Received: {type(info).__name__}")
    return info.num_classes, info.mean, info.std


def _check_choice(name, value, choices):
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}. Received: {name}={value!r}")


def _whole_images(dataset):
    """`(image [H, W, C], label)` elements of `dataset` (unbatched, or batches unbatched)."""
    pairs = as_pairs(dataset)
    rank = pairs.element_spec[0].shape.rank
    if rank not in (3, 4):
        raise ValueError(
            "train_dataset must yield images [H, W, C] or batches [B, H, W, C]. "
            f"Received: shape={pairs.element_spec[0].shape}"
        )
    return pairs.unbatch() if rank == 4 else pairs


def _select(elements, indices, total):
    """The elements at sorted `indices` of an unbatched dataset of `total` elements, in order."""
    keep = np.zeros(total, bool)
    keep[indices] = True
    keep = tf.constant(keep)
    chosen = elements.enumerate().filter(lambda index, _: keep[index])
    chosen = chosen.map(lambda _, element: element)
    return chosen.apply(tf.data.experimental.assert_cardinality(len(indices)))


def _forward(encoder):
    """`encoder` as a function of an image batch; a Keras model runs in inference mode."""
    if isinstance(encoder, keras.Model):
        return lambda images: encoder(images, training=False)
    return encoder


def _training_views(examples, count, options):
    """Mini-batches of per-image random crops and flips of `examples`, over all the epochs.

    Each image's crop is a window of the *whole* image (`eval_crops.random_crop`), drawn
    from a seed of its position in the run, resized to the views' side and normalised; the
    examples are reshuffled every epoch. As the official code's repeated stream, batches run
    on across epoch ends: `epochs · count // batch` of them.
    """
    o = options
    crop_seed = rng.seed_pair(o.seed, _CROP_TAG)

    def view(position, image, label):
        seed = rng.fold_in(crop_seed, position)
        crop = eval_crops.random_crop(image, seed, o.image_size, sampler=o.crop_sampler)
        return image_ops.normalize(crop, o.mean, o.std), label

    data = examples.shuffle(
        min(count, o.shuffle_buffer), seed=o.seed, reshuffle_each_iteration=True
    )
    data = data.repeat(o.epochs).enumerate()
    data = data.map(lambda i, pair: view(i, *pair), num_parallel_calls=tf.data.AUTOTUNE)
    return data.batch(o.batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def _train_heads(encoder, examples, count, base_rates, num_classes, dim, options):
    """Trains one linear classifier per base learning rate on random views of `examples`.

    The G classifiers share the encoder's forward pass and the mini-batches: their kernels sit
    side by side in one [D, G·C] matrix and their losses are summed, so each block gets exactly
    its own gradient. Gradients reach only the classifiers (the features are computed outside
    the tape, with BatchNorm in inference mode). SGD with Nesterov momentum 0.9 in optax's
    formulation (the official code's optimiser), the official rate schedule (`learning_rate`),
    no weight decay; the kernel starts from N(0, 1/D) truncated at two standard deviations
    (Haiku's `Linear` default, the official classifier), the bias from 0. Returns
    `(kernel float32 [D, G·C], bias float32 [G·C])`.
    """
    batch = min(options.batch_size, count)
    options = options._replace(batch_size=batch)
    total_steps = options.epochs * count // batch
    heads = len(base_rates)
    init = tf.random.stateless_truncated_normal([dim, num_classes], rng.as_seed(options.seed))
    kernel = tf.Variable(tf.tile(init / math.sqrt(dim), [1, heads]))
    bias = tf.Variable(tf.zeros([heads * num_classes]))
    traces = [tf.Variable(tf.zeros_like(kernel)), tf.Variable(tf.zeros_like(bias))]
    rates = tf.constant(np.repeat(np.asarray(base_rates, np.float32), num_classes))
    forward = _forward(encoder)

    @tf.function(reduce_retracing=True)
    def train_step(views, labels, step):
        features = tf.stop_gradient(tf.cast(forward(views), tf.float32))
        targets = tf.tile(tf.cast(labels, tf.int32)[:, None], [1, heads])
        with tf.GradientTape() as tape:
            logits = tf.reshape(features @ kernel + bias, [-1, heads, num_classes])
            losses = tf.nn.sparse_softmax_cross_entropy_with_logits(targets, logits)
            loss = tf.reduce_sum(tf.reduce_mean(losses, axis=0))
        step_size = learning_rate(step, rates, batch, total_steps)
        for variable, trace, grad in zip(
            (kernel, bias), traces, tape.gradient(loss, [kernel, bias]), strict=True
        ):
            trace.assign(grad + _MOMENTUM * trace)
            variable.assign_sub(step_size * (grad + _MOMENTUM * trace))

    for step, (views, labels) in enumerate(_training_views(examples, count, options)):
        train_step(views, labels, tf.constant(step, tf.int64))
    return kernel.numpy(), bias.numpy()


def _scores(features, labels, kernel, bias, num_classes):
    """(top1, top5) of each classifier of `(kernel, bias)`; a diverged one scores -1."""
    weights = [
        np.vstack([kernel[:, g : g + num_classes], bias[None, g : g + num_classes]])
        for g in range(0, len(bias), num_classes)
    ]
    return classifier_accuracies(features, labels, weights)


def _split(labels, label_fraction, selection, validation_fraction, max_validation, seed):
    """`(labelled, fit, held_out)` indices: the labels used, those the classifiers are trained
    on and the class-balanced held-out part (none under the official selection; at least one
    per class, so on a small data set a larger share than asked: the results report it)."""
    labelled = subset_by_fraction(labels, label_fraction, seed)
    if selection == "official":
        return labelled, labelled, labelled[:0]
    fraction = min(validation_fraction, max_validation / len(labelled))
    held_out = labelled[subset_by_fraction(labels[labelled], fraction, seed)]
    fit = np.setdiff1d(labelled, held_out)
    if len(fit) == 0:
        raise ValueError(
            f"train_dataset is too small to hold out a validation split: {len(labelled)} examples"
        )
    return labelled, fit, held_out


def linear_eval_official(
    encoder,
    train_dataset,
    test_dataset,
    info=None,
    *,
    image_size=None,
    selection="paper",
    learning_rates=None,
    epochs=10,
    batch_size=256,
    validation_fraction=0.1,
    max_validation_examples=MAX_VALIDATION_EXAMPLES,
    label_fraction=1.0,
    crop_fraction=None,
    crop_sampler="clamped",
    shuffle_buffer=10_000,
    seed=0,
) -> dict:
    """The paper's linear evaluation protocol (Grill et al. 2020, appendix C.1).

    The encoder is frozen (called in inference mode, so BatchNorm uses its moving statistics;
    no gradient reaches it). A linear classifier (kernel and bias) on its representation is
    trained on random views of the *whole* training images, as the official code's
    `_decode_and_random_crop`: per image and step, a random-resized crop (area U[0.08, 1] of
    the image, aspect log-U[3/4, 4/3], one draw clamped to the image), resized bicubic without
    antialiasing to `image_size`, clipped to [0, 1], flipped with probability 1/2 and
    normalised; SGD, Nesterov momentum 0.9, no weight decay, `learning_rate`'s schedule.

    `selection="paper"`: a seeded, class-balanced held-out part of the training examples
    (`validation_fraction` of them, at most `max_validation_examples`: the paper's 10,009 on
    ImageNet; at least one per class) is set aside; one classifier per base rate is trained on
    the rest and scored on it; the one with the best held-out top-1 (the first on ties) is
    scored on `test_dataset`, without training again. `selection="official"`: one classifier
    at the one rate (default 0.2) on all the training examples (the official code's run).
    Held-out images are centre cropped (`eval_crops.official_center_crop`). Nothing is cached.

    Args:
        encoder: a `keras.Model` mapping normalised images to `[B, D]` features, or any such
            callable (e.g. the function `byol_tf.serving.export.load_exported` returns).
        train_dataset: `tf.data.Dataset` of `(image, label)` or {"image", "label"} in a fixed
            order: whole images, not normalised (uint8 in [0, 255] or float in [0, 1]), one by
            one ([H, W, C], sizes may vary: `byol_tf.data.whole_images`) or in batches.
        test_dataset: batched `tf.data.Dataset` of `(images, labels)` prepared for evaluation
            (`byol_tf.data.eval_dataset(..., official_crop=True)`).
        info: the training split's `byol_tf.data.SourceInfo` (`whole_images` returns it) or
            `Source`: its `mean` and `std` normalise the views (the test images' own), its
            `num_classes` (None: the largest label + 1) is the classifiers'. Default: ImageNet's.
        image_size: side of the views; default the encoder's input side.
        selection: "paper" or "official" (above).
        learning_rates: base rates per 256 images; default `LINEAR_OFFICIAL_LEARNING_RATES`
            (the paper's 0.4, 0.3, 0.2, 0.1, 0.05, for "paper"), `(OFFICIAL_LEARNING_RATE,)`
            ("official", which takes one).
        epochs: passes over the training examples (the paper and the official code: 80).
        batch_size: mini-batch size (the official code: 4096; the paper: 1024).
        validation_fraction: share of the training examples held out ("paper"), in (0, 1).
        max_validation_examples: at most this many held out ("paper").
        label_fraction: share of the training labels used, in (0, 1] (class-balanced).
        crop_fraction: centre-crop share of the held-out images' short side; default
            `image_ops.default_crop_fraction(image_size)` (0.875 above 64 px, else 1).
        crop_sampler: "clamped" (the official code's one draw clamped to the image) or
            "rejection" (see `byol_tf.views.image_ops.sample_crop_boxes`).
        shuffle_buffer: shuffle buffer of the training examples (a full shuffle up to it).
        seed: seed of the subsets, the initialisation, the shuffling and the crops.

    Returns:
        {"protocol", "selection", "top1", "top5" (test), "learning_rate" (the base rate
        scored), "peak_learning_rate", "val_top1" (None under "official"),
        "val_top1_by_learning_rate", "epochs", "batch_size", "validation_fraction" (the share
        held out: num_validation / num_train), "requested_validation_fraction", "label_fraction",
        "image_size", "crop_fraction", "crop_sampler", "num_train" (labelled), "num_fit"
        (trained on), "num_validation", "num_test", "feature_dim"}.

    Raises:
        ValueError: for a bad argument, naming it.
    """
    rates = _check_arguments(
        encoder, (train_dataset, test_dataset), learning_rates, crop_sampler, selection
    )
    num_classes, mean, std = _split_info(info)
    for name, value in (("epochs", epochs), ("batch_size", batch_size),
                        ("shuffle_buffer", shuffle_buffer),
                        ("max_validation_examples", max_validation_examples)):  # fmt: skip
        check_int(name, value)
    check_int("seed", seed, minimum=0)
    if crop_fraction is not None:
        check_fraction("crop_fraction", crop_fraction)
    check_fraction("validation_fraction", validation_fraction, allow_one=False)
    check_fraction("label_fraction", label_fraction)
    image_size = image_size or encoder_input_side(encoder)
    if image_size is None:
        raise ValueError("image_size must be given for an encoder without a static input side")
    check_int("image_size", image_size)
    crop_fraction = crop_fraction or image_ops.default_crop_fraction(image_size)
    options = _Options(
        image_size, epochs, batch_size, crop_sampler, shuffle_buffer, int(seed), mean, std,
        crop_fraction, selection, label_fraction, validation_fraction, max_validation_examples,
    )  # fmt: skip
    return _evaluate(encoder, train_dataset, test_dataset, num_classes, rates, options)


def _evaluate(encoder, train_dataset, test_dataset, num_classes, rates, options):
    """`linear_eval_official` on checked arguments: splits the training examples, trains the
    classifiers, chooses one and scores it on `test_dataset`; returns the result."""
    o = options
    elements = _whole_images(train_dataset)
    labels = np.fromiter(elements.map(lambda x, y: y).as_numpy_iterator(), np.int64)
    if len(labels) == 0 or labels.min() < 0:
        raise ValueError("train_dataset must yield labels >= 0. Received none or a negative one")
    labelled, fit, held_out = _split(
        labels, o.label_fraction, o.selection, o.validation_fraction, o.max_validation_examples,
        o.seed,
    )  # fmt: skip
    test_x, test_y = extract_features(encoder, test_dataset)
    num_classes = resolve_num_classes(num_classes, labels[labelled], test_y)
    examples = _select(elements, fit, len(labels))
    kernel, bias = _train_heads(
        encoder, examples, len(fit), rates, num_classes, test_x.shape[1], options
    )
    best, val_scores = 0, []
    if len(held_out):
        held_out_examples = _select(elements, held_out, len(labels))
        val_scores = _held_out_scores(encoder, held_out_examples, kernel, bias, num_classes, o)
        best = int(np.argmax([top1 for top1, _ in val_scores]))
    chosen = slice(best * num_classes, (best + 1) * num_classes)
    top1, top5 = _scores(test_x, test_y, kernel[:, chosen], bias[chosen], num_classes)[0]
    return {
        "protocol": PROTOCOL,
        "selection": o.selection,
        "top1": float(top1),
        "top5": float(top5),
        "learning_rate": rates[best],
        "peak_learning_rate": rates[best] * min(o.batch_size, len(fit)) / 256,
        "val_top1": float(val_scores[best][0]) if val_scores else None,
        "val_top1_by_learning_rate": {
            str(rate): float(score[0]) for rate, score in zip(rates, val_scores, strict=False)
        },
        "epochs": o.epochs,
        "batch_size": o.batch_size,
        # What was held out, not what was asked (the cap and one per class change it).
        "validation_fraction": len(held_out) / len(labelled),
        "requested_validation_fraction": o.validation_fraction if len(held_out) else None,
        "label_fraction": float(o.label_fraction),
        "image_size": int(o.image_size),
        "crop_fraction": float(o.crop_fraction),
        "crop_sampler": o.crop_sampler,
        "num_train": len(labelled),
        "num_fit": len(fit),
        "num_validation": len(held_out),
        "num_test": len(test_y),
        "feature_dim": int(test_x.shape[1]),
    }


def _held_out_scores(encoder, examples, kernel, bias, num_classes, options):
    """(top1, top5) of each classifier on the held-out `(image, label)` examples, centre
    cropped and normalised as the test images."""
    o = options
    crop = functools.partial(eval_crops.official_center_crop, size=o.image_size)
    images = examples.map(lambda x, y: (crop(x, crop_fraction=o.crop_fraction), y))
    images = images.map(lambda x, y: (image_ops.normalize(x, o.mean, o.std), y))
    features, labels = extract_features(encoder, images.batch(o.batch_size))
    return _scores(features, labels, kernel, bias, num_classes)
