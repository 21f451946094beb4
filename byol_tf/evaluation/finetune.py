"""Semi-supervised evaluation: fine-tuning the whole encoder on a fraction of the labels."""

import numbers

import keras
import numpy as np
import tensorflow as tf

from byol_tf.evaluation.features import (
    as_pairs,
    check_fraction,
    check_int,
    encoder_input_side,
    fixed_size_pairs,
    resolve_num_classes,
    subset_by_fraction,
    topk_hits,
)
from byol_tf.views import augment, rng


def _labelled_subset(dataset, fraction, batch_size, seed, num_classes):
    """The `subset_by_fraction` examples of a batched `(images, labels)` dataset, re-batched
    (reshuffled each pass).

    One pass reads the labels; the chosen examples are then kept by position, so `dataset`
    must yield the same order every time (as `byol_tf.data.pipelines.eval_dataset` does).
    """
    elements = dataset.unbatch()
    labels = np.fromiter(
        (int(y) for y in elements.map(lambda x, y: y).as_numpy_iterator()), np.int64
    )
    if len(labels) == 0:
        raise ValueError("train_dataset must yield at least one example. Received an empty one")
    resolve_num_classes(num_classes, labels)  # a label the head has no class for: refused here
    keep = np.zeros(len(labels), bool)
    keep[subset_by_fraction(labels, fraction, seed)] = True
    keep = tf.constant(keep)
    subset = elements.enumerate().filter(lambda index, _: keep[index])
    subset = subset.map(lambda _, element: element)
    count = int(keep.numpy().sum())
    # The subset is small (a fraction of the labels): keep it in memory, reshuffle each epoch.
    subset = subset.apply(tf.data.experimental.assert_cardinality(count))
    subset = subset.cache().shuffle(count, seed=seed, reshuffle_each_iteration=True)
    return subset.batch(min(batch_size, count)), count


def _augmented(batches, image_size, crop, flip, seed):
    """Endless `batches` with a random-resized crop (when `crop`) and a horizontal flip (when
    `flip`) per image, resized to `image_size`; batch k uses the stateless seed (seed, k)."""
    options = {"flip_prob": 0.5 if flip else 0.0}
    if not crop:  # the whole image: only resized (an identity at the same side) and flipped
        options.update(crop_area=(1.0, 1.0), crop_aspect=(1.0, 1.0))
    steps = tf.data.Dataset.counter()

    def views(step, batch):
        images = augment.crop_and_flip(batch[0], rng.seed_pair(seed, step), image_size, **options)
        return images, batch[1]

    return tf.data.Dataset.zip(steps, batches.repeat()).map(views)


def finetune(
    encoder,
    train_dataset,
    test_dataset,
    num_classes,
    epochs=30,
    learning_rate=0.05,
    *,
    label_fraction=1.0,
    batch_size=64,
    momentum=0.9,
    weight_decay=0.0,
    flip=True,
    crop=True,
    seed=0,
    verbose=0,
) -> dict:
    """Semi-supervised evaluation: fine-tunes a copy of the whole encoder plus a linear head.

    `label_fraction` of the labelled training examples (class-balanced and seeded, see
    `subset_by_fraction`) are kept; the copy of `encoder` and a new `Dense(num_classes)` head
    are trained with SGD + Nesterov momentum and a cosine learning-rate decay, BatchNorm in
    training mode, on random-resized crops (area U[0.08, 1], aspect log-U[3/4, 4/3], resized to
    the encoder's input side) with random horizontal flips, drawn per image and step by
    `byol_tf.views.augment.crop_and_flip`, the training input of the linear protocol
    `linear_eval_official` too. `encoder` itself is left untouched.

    Args:
        encoder: a `keras.Model` mapping images to `[B, D]` features.
        train_dataset: batched `tf.data.Dataset` of `(images, labels)` in a fixed order; with
            `crop`, the whole images (not centre cropped: the crops are drawn from them), of
            the encoder's input side or larger.
        test_dataset: batched `tf.data.Dataset` of `(images, labels)`.
        num_classes: number of classes.
        epochs: passes over the labelled subset.
        learning_rate: peak learning rate.
        label_fraction: share of the training labels used, in (0, 1].
        batch_size: batch size of the fine-tuning.
        momentum: Nesterov momentum.
        weight_decay: decoupled weight decay of the optimiser (0 disables it).
        flip: random horizontal flips of the training images.
        crop: random-resized crops of the training images (else whole images, resized to the
            encoder's input side).
        seed: seed of the subset, the head's initialisation, the shuffling and the crops and
            flips.
        verbose: Keras `fit` verbosity.

    Returns:
        {"top1", "top5" (test), "label_fraction", "num_labelled", "epochs", "learning_rate"}.

    Raises:
        ValueError: for a bad argument, naming it.
    """
    _check_arguments(
        encoder, (train_dataset, test_dataset), num_classes, epochs, batch_size, label_fraction,
        learning_rate,
    )  # fmt: skip
    keras.utils.set_random_seed(seed)
    train = fixed_size_pairs(train_dataset)
    image_size = encoder_input_side(encoder) or train.element_spec[0].shape[1]
    train, count = _labelled_subset(train, label_fraction, batch_size, seed, num_classes)
    steps_per_epoch = -(-count // min(batch_size, count))
    if crop or flip:
        train = _augmented(train, image_size, crop, flip, seed)
    else:
        train = train.repeat()
    model = _classifier(encoder, num_classes)
    _compile(model, num_classes, learning_rate, epochs * steps_per_epoch, momentum, weight_decay)
    model.fit(
        train.prefetch(tf.data.AUTOTUNE),
        epochs=epochs,
        steps_per_epoch=steps_per_epoch,
        verbose=verbose,
        shuffle=False,
    )
    top1, top5 = _test_scores(model, as_pairs(test_dataset))
    return {
        "top1": top1,
        "top5": top5,
        "label_fraction": float(label_fraction),
        "num_labelled": count,
        "epochs": epochs,
        "learning_rate": float(learning_rate),
    }


def _test_scores(model, test):
    """Top-1 and top-5 accuracy of `model` on the `(images, labels)` batches of `test`.

    One pass to the end of the data, however long (`model.evaluate` on a dataset of unknown
    length, e.g. an image folder, warns that its input "ran out of data").
    """
    logits_of = tf.function(lambda images: model(images, training=False), reduce_retracing=True)
    hits = np.zeros(2, np.int64)
    count = 0
    for images, labels in test:
        logits, labels = logits_of(images).numpy(), labels.numpy().reshape(-1)
        hits += [topk_hits(logits, labels, 1).sum(), topk_hits(logits, labels, 5).sum()]
        count += len(labels)
    if count == 0:
        raise ValueError("test_dataset must yield at least one example. Received an empty one")
    return float(hits[0] / count), float(hits[1] / count)


def _check_arguments(
    encoder, datasets, num_classes, epochs, batch_size, label_fraction, learning_rate
):
    """Raises a one-line `ValueError` naming the first bad argument of `finetune`."""
    if not isinstance(encoder, keras.Model):
        raise ValueError(
            f"encoder must be a keras.Model. Received: encoder={type(encoder).__name__}"
        )
    for name, value in zip(("train_dataset", "test_dataset"), datasets, strict=True):
        if not isinstance(value, tf.data.Dataset):
            raise ValueError(f"{name} must be a tf.data.Dataset. Received: {type(value).__name__}")
    check_int("num_classes", num_classes, minimum=2)
    check_int("epochs", epochs)
    check_int("batch_size", batch_size)
    check_fraction("label_fraction", label_fraction)
    if not isinstance(learning_rate, numbers.Real) or learning_rate <= 0:
        raise ValueError(f"learning_rate must be > 0. Received: learning_rate={learning_rate!r}")


def _compile(model, num_classes, learning_rate, decay_steps, momentum, weight_decay):
    """Compiles the classifier: SGD with Nesterov momentum and a cosine decay of the learning
    rate to 0 over `decay_steps`, cross-entropy of the logits, top-1 and top-5 accuracy."""
    schedule = keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps=decay_steps)
    model.compile(
        optimizer=keras.optimizers.SGD(
            schedule, momentum=momentum, nesterov=True, weight_decay=weight_decay or None
        ),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[
            keras.metrics.SparseCategoricalAccuracy(name="top1"),
            keras.metrics.SparseTopKCategoricalAccuracy(k=min(5, num_classes), name="top5"),
        ],
    )


def _classifier(encoder, num_classes):
    """A trainable copy of `encoder` (same weights) followed by a linear head."""
    copy = keras.models.clone_model(encoder)
    copy.set_weights(encoder.get_weights())
    copy.trainable = True
    inputs = keras.Input(copy.input_shape[1:])
    logits = keras.layers.Dense(num_classes, name="head")(copy(inputs))
    return keras.Model(inputs, logits, name="finetune_classifier")
