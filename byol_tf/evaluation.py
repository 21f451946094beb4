"""Evaluation protocols: feature extraction, kNN, linear probe and semi-supervised fine-tuning."""

import numbers

import keras
import numpy as np
import tensorflow as tf

DEFAULT_LEARNING_RATES = (0.01, 0.03, 0.1, 0.3, 1.0)
DEFAULT_L2 = (0.0, 1e-4, 1e-3)
_MOMENTUM = 0.9  # SGD with Nesterov momentum 0.9 (SPEC §6)


def _check_int(name, value, minimum=1):
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}. Received: {name}={value!r}")


def _check_fraction(name, value, allow_one=True):
    ok = isinstance(value, numbers.Real) and 0 < value and (value <= 1 if allow_one else value < 1)
    if not ok:
        upper = "1]" if allow_one else "1)"
        raise ValueError(f"{name} must be in (0, {upper}. Received: {name}={value!r}")


def _check_features(prefix, features, labels):
    """Validates a `(features [N, D], labels [N])` pair; returns float32 / int64 arrays."""
    features = np.asarray(features, np.float32)
    labels = np.asarray(labels)
    if features.ndim != 2 or len(features) == 0:
        raise ValueError(
            f"{prefix}_features must be a non-empty [N, D] array. Received: shape={features.shape}"
        )
    if labels.shape != (len(features),) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"{prefix}_labels must be ints of shape [{len(features)}]. "
            f"Received: shape={labels.shape}, dtype={labels.dtype}"
        )
    if labels.min() < 0:
        raise ValueError(f"{prefix}_labels must be >= 0. Received: min={labels.min()}")
    return features, labels.astype(np.int64)


def _check_splits(train_features, train_labels, test_features, test_labels):
    train_x, train_y = _check_features("train", train_features, train_labels)
    test_x, test_y = _check_features("test", test_features, test_labels)
    if train_x.shape[1] != test_x.shape[1]:
        raise ValueError(
            "train_features and test_features must have the same width. "
            f"Received: {train_x.shape[1]} and {test_x.shape[1]}"
        )
    return train_x, train_y, test_x, test_y


def _split_batch(batch):
    """`(images, labels)` from an `(images, labels, ...)` tuple or an {"image", "label"} dict."""
    if isinstance(batch, dict):
        return batch["image"], batch["label"]
    if isinstance(batch, (tuple, list)) and len(batch) >= 2:
        return batch[0], batch[1]
    raise ValueError(
        "dataset elements must be (images, labels) or {'image', 'label'}. "
        f"Received: {type(batch).__name__}"
    )


def _as_pairs(dataset):
    """A dataset of `(images, labels)` from one of tuples or {"image", "label"} dicts."""
    return dataset.map(lambda *batch: _split_batch(batch[0] if len(batch) == 1 else batch))


def extract_features(encoder, dataset):
    """Runs `encoder` over a labelled dataset in inference mode.

    Args:
        encoder: a `keras.Model` (called with `training=False`, so BatchNorm uses its moving
            statistics) or any callable mapping an image batch to `[B, D]` features.
        dataset: an iterable of `(images [B, H, W, C], labels [B])` batches (a batched
            `tf.data.Dataset` such as `byol_tf.data.eval_dataset`), or of {"image", "label"}.

    Returns:
        `(features float32 [N, D], labels int64 [N])`.

    Raises:
        ValueError: if `encoder` is not callable or `dataset` is empty.
    """
    if not callable(encoder):
        raise ValueError(f"encoder must be callable. Received: encoder={type(encoder).__name__}")
    if isinstance(encoder, keras.Model):
        # One traced graph for all batches (the last, smaller batch retraces at most once).
        forward = tf.function(lambda x: encoder(x, training=False), reduce_retracing=True)
    else:
        forward = encoder
    features, labels = [], []
    for batch in dataset:
        images, batch_labels = _split_batch(batch)
        features.append(np.asarray(forward(images), np.float32))
        labels.append(np.asarray(batch_labels).astype(np.int64).reshape(-1))
    if not features:
        raise ValueError("dataset must yield at least one batch. Received an empty dataset")
    return np.concatenate(features), np.concatenate(labels)


def _l2_normalize(x):
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _topk_hits(scores, labels, k):
    """Per-row flags: is `labels[i]` among the `k` highest `scores[i]`?"""
    k = min(k, scores.shape[1])
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.any(top == labels[:, None], axis=1)


def knn_classify(
    train_features,
    train_labels,
    test_features,
    test_labels,
    k=200,
    temperature=0.1,
    num_classes=None,
    chunk_size=None,
):
    """Weighted k-nearest-neighbour classification (InstDisc / solo-learn / lightly monitor).

    Features are l2-normalised; each test point takes the `k` train points of highest cosine
    similarity s and gives class c the score Σ exp(s / temperature) over its neighbours of class
    c. The test set is processed in chunks, so memory is O(chunk_size · N_train).

    Args:
        train_features: float [N, D].
        train_labels: int [N].
        test_features: float [M, D].
        test_labels: int [M].
        k: neighbours (clipped to N).
        temperature: softness of the vote weights.
        num_classes: number of classes; default max label + 1.
        chunk_size: test points per chunk; default keeps a chunk's similarities near 64 MB.

    Returns:
        {"top1", "top5": fractions of test points, "k", "temperature"}.

    Raises:
        ValueError: for a bad argument, naming it.
    """
    train_x, train_y, test_x, test_y = _check_splits(
        train_features, train_labels, test_features, test_labels
    )
    _check_int("k", k)
    if not isinstance(temperature, numbers.Real) or temperature <= 0:
        raise ValueError(f"temperature must be > 0. Received: temperature={temperature!r}")
    num_classes = _num_classes(num_classes, train_y, test_y)
    k = min(k, len(train_x))
    chunk_size = chunk_size or max(1, (1 << 24) // len(train_x))
    _check_int("chunk_size", chunk_size)
    train_x, test_x = _l2_normalize(train_x), _l2_normalize(test_x)
    top1 = top5 = 0
    for start in range(0, len(test_x), chunk_size):
        sim = test_x[start : start + chunk_size] @ train_x.T  # [c, N] cosine similarities
        rows = np.arange(len(sim))[:, None]
        nearest = np.argpartition(-sim, k - 1, axis=1)[:, :k]  # the k most similar, unordered
        weights = np.exp(sim[rows, nearest] / temperature)
        scores = np.zeros((len(sim), num_classes), np.float64)
        np.add.at(scores, (np.broadcast_to(rows, nearest.shape), train_y[nearest]), weights)
        labels = test_y[start : start + chunk_size]
        top1 += int(_topk_hits(scores, labels, 1).sum())
        top5 += int(_topk_hits(scores, labels, 5).sum())
    n = len(test_x)
    return {"top1": top1 / n, "top5": top5 / n, "k": k, "temperature": float(temperature)}


def _num_classes(num_classes, *labels):
    needed = int(max(y.max() for y in labels)) + 1
    if num_classes is None:
        return needed
    _check_int("num_classes", num_classes, minimum=2)
    if num_classes < needed:
        raise ValueError(
            f"num_classes is smaller than the largest label + 1 ({needed}). "
            f"Received: num_classes={num_classes}"
        )
    return int(num_classes)


def subset_by_fraction(labels, fraction, seed=0):
    """Indices of a seeded, class-balanced subset holding `fraction` of the examples.

    The subset has `round(fraction · N)` examples (at least one per class) shared as equally
    as possible between the classes; a class with too few examples gives its share to the
    others. The same labels, fraction and seed always give the same subset.

    Args:
        labels: int [N] class labels.
        fraction: in (0, 1]; 1 keeps everything.
        seed: int seed of the choice.

    Returns:
        Sorted int64 indices into `labels`.

    Raises:
        ValueError: for an empty `labels` or a fraction outside (0, 1].
    """
    labels = np.asarray(labels).reshape(-1)
    if len(labels) == 0:
        raise ValueError("labels must be non-empty. Received: labels of length 0")
    _check_fraction("fraction", fraction)
    classes, counts = np.unique(labels, return_counts=True)
    total = min(len(labels), max(int(round(fraction * len(labels))), len(classes)))
    rng = np.random.default_rng(seed)
    quota = np.zeros(len(classes), np.int64)
    remaining = total
    order = rng.permutation(len(classes))  # who gets the remainder of an uneven share
    while remaining > 0:
        open_classes = [c for c in order if quota[c] < counts[c]]
        share = max(remaining // len(open_classes), 1)
        for c in open_classes:
            add = min(share, counts[c] - quota[c], remaining)
            quota[c] += add
            remaining -= add
            if remaining == 0:
                break
    chosen = [
        rng.permutation(np.flatnonzero(labels == cls))[:q]
        for cls, q in zip(classes, quota, strict=True)
    ]
    return np.sort(np.concatenate(chosen)).astype(np.int64)


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


def _accuracies(x, y, weights):
    """(top1, top5) per classifier of `weights` [G, D + 1, C]; a diverged one scores -1."""
    results = []
    for w in weights:
        if not np.all(np.isfinite(w)):
            results.append((-1.0, -1.0))
            continue
        logits = x @ w[:-1] + w[-1]
        results.append((_topk_hits(logits, y, 1).mean(), _topk_hits(logits, y, 5).mean()))
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
):
    """Linear evaluation on frozen features (SPEC §6), hyper-parameters chosen on validation.

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
    train_x, train_y, test_x, test_y = _check_splits(
        train_features, train_labels, test_features, test_labels
    )
    num_classes = _num_classes(num_classes, train_y, test_y)
    _check_int("epochs", epochs)
    _check_int("batch_size", batch_size)
    _check_fraction("validation_fraction", validation_fraction, allow_one=False)
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
    val_scores = _accuracies(scale(train_x[val_idx]), train_y[val_idx], weights)
    best = int(np.argmax([top1 for top1, _ in val_scores]))
    scale = _standardizer(train_x) if standardize else (lambda f: f)
    weights = _fit_grid(
        scale(train_x), train_y, num_classes, [grid[best]], epochs, batch_size, seed
    )
    top1, top5 = _accuracies(scale(test_x), test_y, weights)[0]
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


def _labelled_subset(dataset, fraction, batch_size, seed):
    """The `subset_by_fraction` examples of a batched `(images, labels)` dataset, re-batched.

    One pass reads the labels; the chosen examples are then kept by position, so `dataset`
    must yield the same order every time (as `byol_tf.data.eval_dataset` does).
    """
    elements = _as_pairs(dataset).unbatch()
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
    _check_int("num_classes", num_classes, minimum=2)
    _check_int("epochs", epochs)
    _check_int("batch_size", batch_size)
    _check_fraction("label_fraction", label_fraction)
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
    test = _as_pairs(test_dataset)
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
