"""Semi-supervised evaluation: fine-tuning the whole encoder on a fraction of the labels."""

import numbers

import keras
import numpy as np
import tensorflow as tf

from byol_tf.evaluation.features import as_pairs, check_fraction, check_int, subset_by_fraction


def _labelled_subset(dataset, fraction, batch_size, seed):
    """The `subset_by_fraction` examples of a batched `(images, labels)` dataset, re-batched.

    One pass reads the labels; the chosen examples are then kept by position, so `dataset`
    must yield the same order every time (as `byol_tf.data.eval_dataset` does).
    """
    elements = as_pairs(dataset).unbatch()
    labels = np.fromiter(
        (int(y) for y in elements.map(lambda x, y: y).as_numpy_iterator()), np.int64
    )
    if len(labels) == 0:
        raise ValueError("train_dataset must yield at least one example. Received an empty one")
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


def _random_flip(images, labels):
    flip = tf.random.uniform([tf.shape(images)[0], 1, 1, 1]) < 0.5
    return tf.where(flip, tf.reverse(images, axis=[2]), images), labels


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
    seed=0,
    verbose=0,
):
    """Semi-supervised evaluation: fine-tunes a copy of the whole encoder plus a linear head.

    `label_fraction` of the labelled training examples (class-balanced and seeded, see
    `subset_by_fraction`) are kept; the copy of `encoder` and a new `Dense(num_classes)` head
    are trained with SGD + Nesterov momentum and a cosine learning-rate decay, with random
    horizontal flips, BatchNorm in training mode. `encoder` itself is left untouched.

    Args:
        encoder: a `keras.Model` mapping images to `[B, D]` features.
        train_dataset: batched `tf.data.Dataset` of `(images, labels)` in a fixed order.
        test_dataset: batched `tf.data.Dataset` of `(images, labels)`.
        num_classes: number of classes.
        epochs: passes over the labelled subset.
        learning_rate: peak learning rate.
        label_fraction: share of the training labels used, in (0, 1].
        batch_size: batch size of the fine-tuning.
        momentum: Nesterov momentum.
        weight_decay: decoupled weight decay of the optimiser (0 disables it).
        flip: random horizontal flips of the training images.
        seed: seed of the subset, the head's initialisation and the shuffling.
        verbose: Keras `fit` verbosity.

    Returns:
        {"top1", "top5" (test), "label_fraction", "num_labelled", "epochs", "learning_rate"}.

    Raises:
        ValueError: for a bad argument, naming it.
    """
    if not isinstance(encoder, keras.Model):
        raise ValueError(
            f"encoder must be a keras.Model. Received: encoder={type(encoder).__name__}"
        )
    for name, value in (("train_dataset", train_dataset), ("test_dataset", test_dataset)):
        if not isinstance(value, tf.data.Dataset):
            raise ValueError(f"{name} must be a tf.data.Dataset. Received: {type(value).__name__}")
    check_int("num_classes", num_classes, minimum=2)
    check_int("epochs", epochs)
    check_int("batch_size", batch_size)
    check_fraction("label_fraction", label_fraction)
    if not isinstance(learning_rate, numbers.Real) or learning_rate <= 0:
        raise ValueError(f"learning_rate must be > 0. Received: learning_rate={learning_rate!r}")
    keras.utils.set_random_seed(seed)
    train, count = _labelled_subset(train_dataset, label_fraction, batch_size, seed)
    if flip:
        train = train.map(_random_flip)
    model = _classifier(encoder, num_classes)
    schedule = keras.optimizers.schedules.CosineDecay(
        learning_rate, decay_steps=epochs * -(-count // min(batch_size, count))
    )
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
    model.fit(train.prefetch(tf.data.AUTOTUNE), epochs=epochs, verbose=verbose, shuffle=False)
    test = as_pairs(test_dataset)
    scores = model.evaluate(test, verbose=verbose, return_dict=True)
    return {
        "top1": float(scores["top1"]),
        "top5": float(scores["top5"]),
        "label_fraction": float(label_fraction),
        "num_labelled": count,
        "epochs": epochs,
        "learning_rate": float(learning_rate),
    }


def _classifier(encoder, num_classes):
    """A trainable copy of `encoder` (same weights) followed by a linear head."""
    copy = keras.models.clone_model(encoder)
    copy.set_weights(encoder.get_weights())
    copy.trainable = True
    inputs = keras.Input(copy.input_shape[1:])
    logits = keras.layers.Dense(num_classes, name="head")(copy(inputs))
    return keras.Model(inputs, logits, name="finetune_classifier")
