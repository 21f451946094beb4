"""The paper's linear evaluation: a linear classifier on the frozen encoder, trained on randomly
cropped and flipped images (Grill et al. 2020, appendix C.1; docs/algorithm.md §6)."""

import math
import numbers

import keras
import numpy as np
import tensorflow as tf

from byol_tf import augment, image_ops, rng
from byol_tf.evaluation.features import (
    check_fraction,
    check_int,
    encoder_input_side,
    extract_features,
    fixed_size_pairs,
    resolve_num_classes,
    subset_by_fraction,
)
from byol_tf.evaluation.linear import classifier_accuracies

PROTOCOL = "linear_official"
# Candidate base learning rates per 256 images (peak rate = base · batch / 256, as the official
# code scales its single rate of 0.2); the one with the best held-out top-1 is kept.
LINEAR_OFFICIAL_LEARNING_RATES = (0.05, 0.1, 0.2, 0.4, 0.8)
_MOMENTUM = 0.9  # SGD with Nesterov momentum 0.9, no weight decay (paper appendix C.1)


def _check_arguments(encoder, datasets, learning_rates, crop_sampler):
    """Checks the encoder, the datasets, the rates and the sampler; returns the rates."""
    if not callable(encoder):
        raise ValueError(f"encoder must be callable. Received: encoder={type(encoder).__name__}")
    for name, value in zip(("train_dataset", "test_dataset"), datasets, strict=True):
        if not isinstance(value, tf.data.Dataset):
            raise ValueError(f"{name} must be a tf.data.Dataset. Received: {type(value).__name__}")
    rates = tuple(learning_rates)
    if not rates or any(not isinstance(r, numbers.Real) or not r > 0 for r in rates):
        raise ValueError(
            f"learning_rates must be non-empty and > 0. Received: learning_rates={learning_rates}"
        )
    if crop_sampler not in image_ops.CROP_SAMPLERS:
        raise ValueError(
            f"crop_sampler must be one of {image_ops.CROP_SAMPLERS}. "
            f"Received: crop_sampler={crop_sampler!r}"
        )
    return tuple(float(r) for r in rates)


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


def _train_heads(encoder, examples, count, peak_rates, num_classes, dim, options):
    """Trains one linear classifier per peak learning rate on augmented views of `examples`.

    The G classifiers share the encoder's forward pass and the mini-batches: their kernels sit
    side by side in one [D, G·C] matrix and their losses are summed, so each block gets exactly
    its own gradient. Gradients reach only the classifiers (the features are computed outside
    the tape, with BatchNorm in inference mode). SGD with Nesterov momentum 0.9 in optax's
    formulation (the official code's optimiser), cosine learning-rate decay to 0, no weight
    decay; the kernel starts from N(0, 1/D) truncated at two standard deviations (Haiku's
    `Linear` default, the official classifier), the bias from 0.

    Returns:
        `(kernel float32 [D, G·C], bias float32 [G·C])`.
    """
    image_size, epochs, batch_size, crop_sampler, shuffle_buffer, seed = options
    batch = min(batch_size, count)
    total_steps = epochs * (count // batch)
    heads = len(peak_rates)
    data = examples.shuffle(min(count, shuffle_buffer), seed=seed, reshuffle_each_iteration=True)
    data = data.batch(batch, drop_remainder=True).repeat(epochs).prefetch(tf.data.AUTOTUNE)
    init = tf.random.stateless_truncated_normal([dim, num_classes], rng.as_seed(seed))
    kernel = tf.Variable(tf.tile(init / math.sqrt(dim), [1, heads]))
    bias = tf.Variable(tf.zeros([heads * num_classes]))
    traces = [tf.Variable(tf.zeros_like(kernel)), tf.Variable(tf.zeros_like(bias))]
    rates = tf.constant(np.repeat(np.asarray(peak_rates, np.float32), num_classes))
    forward = _forward(encoder)

    @tf.function(reduce_retracing=True)
    def train_step(images, labels, step):
        views = augment.crop_and_flip(
            images, rng.seed_pair(seed, step), image_size, crop_sampler=crop_sampler
        )
        features = tf.stop_gradient(tf.cast(forward(views), tf.float32))
        targets = tf.tile(tf.cast(labels, tf.int32)[:, None], [1, heads])
        with tf.GradientTape() as tape:
            logits = tf.reshape(features @ kernel + bias, [-1, heads, num_classes])
            losses = tf.nn.sparse_softmax_cross_entropy_with_logits(targets, logits)
            loss = tf.reduce_sum(tf.reduce_mean(losses, axis=0))
        progress = tf.cast(step, tf.float32) / total_steps
        step_size = rates * 0.5 * (1.0 + tf.cos(math.pi * progress))
        for variable, trace, grad in zip(
            (kernel, bias), traces, tape.gradient(loss, [kernel, bias]), strict=True
        ):
            trace.assign(grad + _MOMENTUM * trace)
            variable.assign_sub(step_size * (grad + _MOMENTUM * trace))

    for step, (images, labels) in enumerate(data):
        train_step(images, labels, tf.constant(step, tf.int64))
    return kernel.numpy(), bias.numpy()


def _scores(features, labels, kernel, bias, num_classes):
    """(top1, top5) of each classifier of `(kernel, bias)`; a diverged one scores -1."""
    weights = [
        np.vstack([kernel[:, g : g + num_classes], bias[None, g : g + num_classes]])
        for g in range(0, len(bias), num_classes)
    ]
    return classifier_accuracies(features, labels, weights)


def linear_eval_official(
    encoder,
    train_dataset,
    test_dataset,
    num_classes=None,
    *,
    image_size=None,
    learning_rates=LINEAR_OFFICIAL_LEARNING_RATES,
    epochs=10,
    batch_size=256,
    validation_fraction=0.1,
    label_fraction=1.0,
    crop_fraction=None,
    crop_sampler="clamped",
    shuffle_buffer=10_000,
    seed=0,
):
    """The paper's linear evaluation protocol (Grill et al. 2020, appendix C.1).

    The encoder is frozen (called in inference mode, so BatchNorm uses its moving statistics;
    no gradient reaches it). A linear classifier (kernel and bias) on its representation is
    trained on *augmented* training images: a random-resized crop (area U[0.08, 1], aspect
    log-U[3/4, 4/3], resized to `image_size`) and a random horizontal flip per image, drawn
    anew every step (`byol_tf.augment.crop_and_flip`), with SGD, Nesterov momentum 0.9, no
    weight decay and a cosine learning-rate decay to 0. A seeded, class-balanced
    `validation_fraction` of the training examples is held out; one classifier per base
    learning rate is trained on the rest and scored on the held-out images; the rate with the
    best held-out top-1 (the first on ties) is used to train the classifier again on all the
    training examples, which is then scored on `test_dataset`. Held-out images are centre
    cropped like test images. Unlike `linear_eval`, nothing is cached: every step runs the
    encoder on fresh views, so this costs about 2 · `epochs` forward passes over the data.

    Args:
        encoder: a `keras.Model` mapping normalised images to `[B, D]` features, or any such
            callable (e.g. the function `byol_tf.export.load_exported` returns).
        train_dataset: batched `tf.data.Dataset` of `(images, labels)` or {"image", "label"} in
            a fixed order; images [B, S, S, 3] normalised, whole (not centre cropped: the
            crops are drawn from them), S >= image_size, e.g. `byol_tf.data.eval_dataset` at
            side `image_size / crop_fraction` with `crop_fraction=1.0`.
        test_dataset: batched `tf.data.Dataset` of `(images, labels)` prepared for evaluation
            (centre crop at `image_size`, as `byol_tf.data.eval_dataset`).
        num_classes: number of classes; default the largest label + 1.
        image_size: side of the views; default the encoder's input side, else S.
        learning_rates: candidate base learning rates per 256 images; the peak rate of a
            classifier is base · batch / 256.
        epochs: passes over the training examples per fit (the paper: 80 on ImageNet).
        batch_size: mini-batch size (the last partial batch of an epoch is dropped).
        validation_fraction: share of the training examples held out to choose the rate, in
            (0, 1).
        label_fraction: share of the training labels used, in (0, 1] (class-balanced).
        crop_fraction: centre-crop share of the held-out images' short side; default
            `image_ops.default_crop_fraction(image_size)` (0.875 above 64 px, else 1).
        crop_sampler: "clamped" (the official code's one draw clamped to the image) or
            "rejection" (see `byol_tf.image_ops.sample_crop_boxes`).
        shuffle_buffer: shuffle buffer of the training examples (a full shuffle up to it).
        seed: seed of the subsets, the initialisation, the shuffling and the augmentation; the
            same seed and data give the same result.

    Returns:
        {"protocol", "top1", "top5" (test), "learning_rate" (the chosen base rate),
        "peak_learning_rate", "val_top1", "val_top1_by_learning_rate", "epochs",
        "batch_size", "validation_fraction", "label_fraction", "image_size", "crop_fraction",
        "crop_sampler", "num_train", "num_validation", "num_test", "feature_dim"}.

    Raises:
        ValueError: for a bad argument, naming it.
    """
    rates = _check_arguments(encoder, (train_dataset, test_dataset), learning_rates, crop_sampler)
    for name, value in (("epochs", epochs), ("batch_size", batch_size)):
        check_int(name, value)
    check_int("shuffle_buffer", shuffle_buffer)
    check_int("seed", seed, minimum=0)
    if crop_fraction is not None:
        check_fraction("crop_fraction", crop_fraction)
    check_fraction("validation_fraction", validation_fraction, allow_one=False)
    check_fraction("label_fraction", label_fraction)
    train = fixed_size_pairs(train_dataset)
    side = train.element_spec[0].shape[1]
    image_size = image_size or encoder_input_side(encoder) or side
    check_int("image_size", image_size)
    crop_fraction = crop_fraction or image_ops.default_crop_fraction(image_size)
    elements = train.unbatch()
    labels = np.fromiter(elements.map(lambda x, y: y).as_numpy_iterator(), np.int64)
    if len(labels) == 0 or labels.min() < 0:
        raise ValueError("train_dataset must yield labels >= 0. Received none or a negative one")
    labelled = subset_by_fraction(labels, label_fraction, seed)
    held_out = labelled[subset_by_fraction(labels[labelled], validation_fraction, seed)]
    fit = np.setdiff1d(labelled, held_out)
    if len(fit) == 0:
        raise ValueError(
            f"train_dataset is too small to hold out a validation split: {len(labelled)} examples"
        )
    held_out_images = _select(elements, held_out, len(labels)).batch(batch_size)
    held_out_images = held_out_images.map(
        lambda x, y: (image_ops.center_crop(x, image_size, crop_fraction), y)
    )
    val_x, val_y = extract_features(encoder, held_out_images)
    test_x, test_y = extract_features(encoder, test_dataset)
    if val_x.shape[1] != test_x.shape[1]:
        raise ValueError(
            "test_dataset gives features of another width than train_dataset: "
            f"{test_x.shape[1]} and {val_x.shape[1]} (images of another size?)"
        )
    num_classes = resolve_num_classes(num_classes, labels[labelled], test_y)
    dim = val_x.shape[1]
    options = (image_size, epochs, batch_size, crop_sampler, shuffle_buffer, int(seed))

    def train_heads(indices, base_rates):
        peak = [r * min(batch_size, len(indices)) / 256 for r in base_rates]
        examples = _select(elements, indices, len(labels))
        return _train_heads(encoder, examples, len(indices), peak, num_classes, dim, options)

    val_scores = _scores(val_x, val_y, *train_heads(fit, rates), num_classes)
    best = int(np.argmax([top1 for top1, _ in val_scores]))
    top1, top5 = _scores(test_x, test_y, *train_heads(labelled, [rates[best]]), num_classes)[0]
    return {
        "protocol": PROTOCOL,
        "top1": float(top1),
        "top5": float(top5),
        "learning_rate": rates[best],
        "peak_learning_rate": rates[best] * min(batch_size, len(labelled)) / 256,
        "val_top1": float(val_scores[best][0]),
        "val_top1_by_learning_rate": {
            str(rate): float(score[0]) for rate, score in zip(rates, val_scores, strict=True)
        },
        "epochs": epochs,
        "batch_size": batch_size,
        "validation_fraction": float(validation_fraction),
        "label_fraction": float(label_fraction),
        "image_size": int(image_size),
        "crop_fraction": float(crop_fraction),
        "crop_sampler": crop_sampler,
        "num_train": len(labelled),
        "num_validation": len(held_out),
        "num_test": len(test_y),
        "feature_dim": int(dim),
    }
