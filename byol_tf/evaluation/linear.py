"""Linear evaluation of frozen features: SGD softmax classifiers, hyper-parameters chosen on
validation (docs/algorithm.md §6)."""

import numpy as np
import tensorflow as tf

from byol_tf.evaluation.features import (
    check_fraction,
    check_int,
    check_splits,
    resolve_num_classes,
    subset_by_fraction,
    topk_hits,
)

DEFAULT_LEARNING_RATES = (0.01, 0.03, 0.1, 0.3, 1.0)
DEFAULT_L2 = (0.0, 1e-4, 1e-3)
_MOMENTUM = 0.9  # SGD with Nesterov momentum 0.9 (docs/algorithm.md §6)


def _standardizer(x):
    """Per-feature `(x - mean) / std` fitted on `x` (constant features are only centred)."""
    mean, std = x.mean(axis=0), x.std(axis=0)
    std = np.where(std < 1e-8, 1.0, std)
    return lambda f: ((f - mean) / std).astype(np.float32)


def _batch_indices(n, batch_size, epochs, seed):
    """[steps, batch] example indices: a fresh seeded permutation per epoch, remainder dropped."""
    batch_size = min(batch_size, n)
    per_epoch = n // batch_size
    rng = np.random.default_rng(seed)
    orders = [rng.permutation(n)[: per_epoch * batch_size] for _ in range(epochs)]
    return np.concatenate(orders).reshape(-1, batch_size).astype(np.int32)


@tf.function(
    input_signature=[
        tf.TensorSpec([None, None], tf.float32),
        tf.TensorSpec([None, None], tf.float32),
        tf.TensorSpec([None, None], tf.int32),
        tf.TensorSpec([None], tf.float32),
        tf.TensorSpec([None], tf.float32),
    ]
)
def _sgd_linear(x, onehot, batches, learning_rates, l2):
    """Trains G linear softmax classifiers at once, one per (learning rate, ℓ2) pair.

    The G kernels sit side by side in one [D + 1, G·C] matrix (the last row is the bias, fed
    by a column of ones and not decayed), so a step is two GEMMs whatever G. The G losses are
    independent, so each block of the matrix gets exactly its own gradient. SGD with Nesterov
    momentum 0.9 (Keras' formulation) and a cosine learning-rate decay to 0.

    Args:
        x: float32 [N, D] features. onehot: float32 [N, C] targets.
        batches: int32 [S, B] example indices of the S steps.
        learning_rates: float32 [G] peak learning rates. l2: float32 [G] kernel penalties.

    Returns:
        float32 [G, D + 1, C]: per classifier, the kernel with the bias as last row.
    """
    num, classes = tf.shape(learning_rates)[0], tf.shape(onehot)[1]
    x = tf.concat([x, tf.ones_like(x[:, :1])], axis=1)
    dim = tf.shape(x)[1]
    lr = tf.repeat(learning_rates, classes)[None, :]
    decay_mask = tf.concat([tf.ones([dim - 1, 1]), tf.zeros([1, 1])], axis=0)
    penalty = decay_mask * tf.repeat(l2, classes)[None, :]
    kernel = tf.zeros([dim, num * classes])
    velocity = tf.zeros_like(kernel)
    steps = tf.shape(batches)[0]
    for step in tf.range(steps):
        xb, yb = tf.gather(x, batches[step]), tf.gather(onehot, batches[step])
        logits = tf.reshape(xb @ kernel, [-1, num, classes])
        # Gradient of the mean cross-entropy plus l2/2·‖kernel‖².
        dlogits = (tf.nn.softmax(logits) - yb[:, None]) / tf.cast(tf.shape(xb)[0], tf.float32)
        grad = tf.matmul(xb, tf.reshape(dlogits, [-1, num * classes]), transpose_a=True)
        grad += penalty * kernel
        progress = tf.cast(step, tf.float32) / tf.cast(steps, tf.float32)
        step_size = lr * 0.5 * (1.0 + tf.cos(np.pi * progress))
        velocity = _MOMENTUM * velocity - step_size * grad
        kernel += _MOMENTUM * velocity - step_size * grad
    return tf.transpose(tf.reshape(kernel, [dim, num, classes]), [1, 0, 2])


def _fit_grid(x, y, num_classes, grid, epochs, batch_size, seed):
    """Trains one classifier per `(learning_rate, l2)` in `grid`: [G, D + 1, C] weights."""
    lrs, l2s = (np.asarray(v, np.float32) for v in zip(*grid, strict=True))
    onehot = np.eye(num_classes, dtype=np.float32)[y]
    batches = _batch_indices(len(x), batch_size, epochs, seed)
    return _sgd_linear(x, onehot, batches, lrs, l2s).numpy()


def classifier_accuracies(x, y, weights) -> list[tuple[float, float]]:
    """(top1, top5) per classifier of `weights` [G, D + 1, C]; a diverged one scores -1."""
    results = []
    for w in weights:
        if not np.all(np.isfinite(w)):
            results.append((-1.0, -1.0))
            continue
        logits = x @ w[:-1] + w[-1]
        results.append((topk_hits(logits, y, 1).mean(), topk_hits(logits, y, 5).mean()))
    return results


def linear_eval(
    train_features,
    train_labels,
    test_features,
    test_labels,
    num_classes,
    *,
    learning_rates=DEFAULT_LEARNING_RATES,
    l2_values=DEFAULT_L2,
    epochs=20,
    batch_size=256,
    validation_fraction=0.1,
    standardize=True,
    seed=0,
) -> dict[str, float | int | bool]:
    """Linear evaluation on frozen features (docs/algorithm.md §6), chosen on validation.

    A class-balanced `validation_fraction` of *train* (seeded, `subset_by_fraction`) is held
    out; one softmax classifier per (learning rate, ℓ2) pair is trained on the rest with SGD,
    Nesterov momentum 0.9 and a cosine learning-rate decay; the pair with the best validation
    top-1 (first in grid order on ties) is retrained on all of train and scored on test. The
    test split never influences the choice. With `standardize`, features are centred and scaled
    per dimension with statistics of the data the classifier is trained on.

    Args:
        train_features: float [N, D]; train_labels: int [N].
        test_features: float [M, D]; test_labels: int [M].
        num_classes: number of classes.
        learning_rates: grid of peak learning rates.
        l2_values: grid of ℓ2 penalties on the kernel.
        epochs: passes over the training data per fit.
        batch_size: mini-batch size.
        validation_fraction: share of train held out for the choice, in (0, 1).
        standardize: standardise features per dimension.
        seed: seed of the validation split and of the mini-batch order.

    Returns:
        {"top1", "top5" (test), "learning_rate", "l2", "val_top1", "epochs", "batch_size",
        "standardize", "validation_fraction"}.

    Raises:
        ValueError: for a bad argument, naming it.
    """
    train_x, train_y, test_x, test_y = check_splits(
        train_features, train_labels, test_features, test_labels
    )
    num_classes = resolve_num_classes(num_classes, train_y, test_y)
    check_int("epochs", epochs)
    check_int("batch_size", batch_size)
    check_fraction("validation_fraction", validation_fraction, allow_one=False)
    grid = [(float(lr), float(l2)) for lr in learning_rates for l2 in l2_values]
    if not grid or any(lr <= 0 or l2 < 0 for lr, l2 in grid):
        raise ValueError(
            "learning_rates must be non-empty and > 0, l2_values non-empty and >= 0. "
            f"Received: learning_rates={learning_rates}, l2_values={l2_values}"
        )
    val_idx = subset_by_fraction(train_y, validation_fraction, seed)
    fit_mask = np.ones(len(train_y), bool)
    fit_mask[val_idx] = False
    if not fit_mask.any():
        raise ValueError(
            f"train_features is too small to hold out a validation split: {len(train_y)}"
        )
    scale = _standardizer(train_x[fit_mask]) if standardize else (lambda f: f)
    weights = _fit_grid(
        scale(train_x[fit_mask]), train_y[fit_mask], num_classes, grid, epochs, batch_size, seed
    )
    val_scores = classifier_accuracies(scale(train_x[val_idx]), train_y[val_idx], weights)
    best = int(np.argmax([top1 for top1, _ in val_scores]))
    scale = _standardizer(train_x) if standardize else (lambda f: f)
    weights = _fit_grid(
        scale(train_x), train_y, num_classes, [grid[best]], epochs, batch_size, seed
    )
    top1, top5 = classifier_accuracies(scale(test_x), test_y, weights)[0]
    return {
        "top1": float(top1),
        "top5": float(top5),
        "learning_rate": grid[best][0],
        "l2": grid[best][1],
        "val_top1": float(val_scores[best][0]),
        "epochs": epochs,
        "batch_size": batch_size,
        "standardize": bool(standardize),
        "validation_fraction": float(validation_fraction),
    }
