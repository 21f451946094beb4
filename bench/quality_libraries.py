"""One library's side of bench/quality.py, in its own process (bench/harness): the random
initialisation, the pretraining and the kNN scores of byol_tf or byol-pytorch on one data set."""

import argparse
import os
import time

import harness
import numpy as np
import torch_peers

# byol-pytorch's default augmentation ends with this normalisation; its encoder is evaluated so.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _to_torch(images, mean=IMAGENET_MEAN, std=IMAGENET_STD):
    """uint8 NHWC → normalised float NCHW tensor."""
    import torch

    x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255.0)
    return (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


def torch_features(net, images, batch_size=512):
    """Pooled features of a torch encoder in inference mode (BatchNorm moving statistics)."""
    import torch

    net.eval()
    with torch.no_grad():
        out = [net(_to_torch(images[i : i + batch_size])).numpy()
               for i in range(0, len(images), batch_size)]  # fmt: skip
    return np.concatenate(out)


def pretrain_byol_pytorch(images, args, monitor=None):
    """byol-pytorch as its README documents: default augmentation, Adam 3e-4, τ 0.99.

    Args:
        images: uint8 `[n, 32, 32, 3]` training images.
        args: parsed flags (epochs, batch_size, width_multiplier, seed).
        monitor: optional `monitor(epoch, encoder)` called after each epoch.

    Returns:
        The pretrained torch encoder.
    """
    import torch

    torch.manual_seed(args.seed)
    net = torch_peers.resnet18_cifar(args.width_multiplier)
    _, step = torch_peers.make_byol_pytorch(net, image_size=32, augment=True, learning_rate=3e-4)
    # Its augmentation ends with an ImageNet normalisation, so it takes [0, 1] images.
    data = torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255.0)
    generator = torch.Generator().manual_seed(args.seed)
    steps = len(images) // args.batch_size
    for epoch in range(args.epochs):
        order = torch.randperm(len(images), generator=generator)
        start, losses = time.perf_counter(), []
        for index in range(steps):
            batch = data[order[index * args.batch_size : (index + 1) * args.batch_size]]
            losses.append(float(step(batch)))
        print(f"  byol-pytorch epoch {epoch + 1}/{args.epochs}: loss {np.mean(losses):.4f} "
              f"({time.perf_counter() - start:.0f} s)")  # fmt: skip
        if monitor:
            monitor(epoch + 1, net)
            net.train()  # torch_features switched it to inference mode
    return net


def _per_batch_draws():
    """Makes byol_tf's augmentation draw per batch: every image takes image 0's crop box and
    image 0's seeds for the rest (a measurement of that lever, not a library option)."""
    import tensorflow as tf

    from byol_tf.views import augment, image_ops

    boxes, seeds = image_ops.sample_crop_boxes, augment.view_seeds

    def one_box(seed, heights, widths, *rest, **kwargs):
        box = boxes(seed, heights[:1], widths[:1], *rest, **kwargs)
        return tf.repeat(box, tf.shape(heights)[0], axis=0)

    def one_seed(seed, batch):
        return tf.repeat(seeds(seed, batch)[:1], batch, axis=0)

    image_ops.sample_crop_boxes, augment.view_seeds = one_box, one_seed


def _byol_tf_dataset(images, args, data, recipe):
    """byol_tf's own pipeline: in-memory images, "small" preset (no blur), per-image draws
    (per-batch with `--tf_per_batch_draws`)."""
    import byol_tf.data.pipelines

    if args.tf_per_batch_draws:
        _per_batch_draws()

    overrides = dict(args.tf_overrides, crop_sampler=recipe.crop_sampler)
    source = byol_tf.data.source((images,), mean=data.mean, std=data.std)
    return byol_tf.data.pipelines.pretrain_dataset(
        source, args.batch_size, 32, seed=args.seed, preset="small",
        with_labels=False, augment_overrides=overrides,
    )  # fmt: skip


def _knn_monitor(monitor):
    """A callback calling `monitor(epoch, encoder)` after each epoch (it decides when to score)."""
    import keras

    class KNN(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            monitor(epoch + 1, self.model.encoder)

    return KNN()


def pretrain_byol_tf(data, args, monitor=None):
    """byol_tf's BYOL model, its per-image "small" augmentation and the recipe for the budget.

    The recipe is `byol_tf.training.recipes.select(--tf_recipe)` for this run's steps and images
    (what train.py would choose), with `--tf_override` applied; it also decides the paper-parity
    choices (zero-initialised residual γ, bias-free head outputs, crop sampler).

    Args:
        data: the `Data` set (its training images pretrain).
        args: parsed flags.
        monitor: optional `monitor(epoch, encoder)` called after each epoch.

    Returns:
        The pretrained Keras encoder.
    """
    import keras

    import byol_tf

    keras.utils.set_random_seed(args.seed)
    steps = len(data.train_x) // args.batch_size
    total = steps * args.epochs
    recipe = args.recipe
    encoder = byol_tf.core.networks.resnet(
        18, width_multiplier=args.width_multiplier, cifar_stem=True,
        zero_init_residual=recipe.zero_init_residual,
    )  # fmt: skip
    model = byol_tf.BYOL(encoder, projection_dim=256, hidden_dim=4096, image_shape=(32, 32, 3),
                         joint_views=args.tf_joint_views,
                         head_output_bias=recipe.head_output_bias)  # fmt: skip
    plan = byol_tf.training.recipes.build(recipe, total, steps, args.batch_size)
    model.compile(optimizer=plan.optimizer, jit_compile=True)
    model.fit(
        _byol_tf_dataset(data.train_x, args, data, recipe),
        epochs=args.epochs,
        steps_per_epoch=steps,
        callbacks=[plan.target_ema] + ([_knn_monitor(monitor)] if monitor else []),
        shuffle=False,  # the dataset shuffles itself
        verbose=2,
    )
    return model.encoder


def tf_features(encoder, images, data, batch_size=512):
    """Pooled features of a Keras encoder in inference mode, normalised as in its training."""
    import tensorflow as tf

    mean, std = tf.constant(data.mean), tf.constant(data.std)
    out = []
    for i in range(0, len(images), batch_size):
        x = (tf.cast(images[i : i + batch_size], tf.float32) / 255.0 - mean) / std
        out.append(encoder(x, training=False).numpy())
    return np.concatenate(out)


def _evaluate(name, features, data, args):
    """kNN top-1 of one encoder on the test split, with the training subset as memory bank."""
    from byol_tf.evaluation import knn_classify  # imports TensorFlow: after torch (README)

    accuracy = knn_classify(
        features(data.train_x), data.train_y, features(data.test_x), data.test_y,
        k=args.knn_k, temperature=args.knn_temperature,
    )["top1"]  # fmt: skip
    print(f"{data.name}, {name}: kNN top-1 {100 * accuracy:.2f} %", flush=True)
    return float(accuracy)


def _epoch_monitor(library, features, data, args, curve):
    """The per-epoch kNN scorer of `--knn_every_epochs` (appends to `curve`), or `None`."""
    if args.knn_every_epochs <= 0:
        return None

    def monitor(epoch, encoder):
        if epoch % args.knn_every_epochs == 0 and epoch < args.epochs:
            name = f"  {library} after epoch {epoch}"
            curve.append((epoch, _evaluate(name, lambda x: features(encoder, x, data), data, args)))

    return monitor


def _random_encoder(library, args):
    """The library's encoder at random initialisation (seeded), as a features function."""
    if library == "byol_tf":
        import keras

        import byol_tf

        keras.utils.set_random_seed(args.seed)
        encoder = byol_tf.core.networks.resnet(
            18, width_multiplier=args.width_multiplier, cifar_stem=True,
            zero_init_residual=args.recipe.zero_init_residual,
        )  # fmt: skip
        return "random init (byol_tf ResNet)", lambda x, data: tf_features(encoder, x, data)
    import torch

    torch.manual_seed(args.seed)
    net = torch_peers.resnet18_cifar(args.width_multiplier)
    return "random init (torch ResNet)", lambda x, data: torch_features(net, x)


def _set_threads(library, threads):
    """Limits both frameworks to `threads` intra-op threads (TF inter-op too); PyTorch first:
    importing torchvision after tensorflow crashes the process."""
    if library == "byol_pytorch":
        import byol_pytorch  # noqa: F401
        import torch

        torch.set_num_threads(threads)
    import tensorflow as tf  # the kNN runs in TensorFlow for both libraries

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)


def build(library, data, settings, description):
    """One library on one data set, in this process (bench/harness).

    Args:
        library: "byol_tf" or "byol_pytorch".
        data: the `quality_data.Data` set.
        settings: the parsed flags as a dict, with `recipe` (byol_tf's `Recipe`) and
            `tf_overrides` (its view overrides) added.
        description: the pretraining settings in words, for the rows.

    Returns:
        A `harness.Workload` whose round scores the random initialisation, pretrains (its time
        is the round's "seconds") and scores the result; the figures hold both rows.
    """
    args = argparse.Namespace(**settings)
    _set_threads(library, args.threads)
    pretrain, features = {
        "byol_tf": (pretrain_byol_tf, lambda e, x, d: tf_features(e, x, d)),
        "byol_pytorch": (lambda d, a, m: pretrain_byol_pytorch(d.train_x, a, m),
                         lambda e, x, d: torch_features(e, x)),
    }[library]  # fmt: skip

    def run():
        name, random_features = _random_encoder(library, args)
        baseline = _evaluate(name, lambda x: random_features(x, data), data, args)
        curve = []
        start = time.perf_counter()
        encoder = pretrain(data, args, _epoch_monitor(library, features, data, args, curve))
        seconds = time.perf_counter() - start
        accuracy = _evaluate(library, lambda x: features(encoder, x, data), data, args)
        curve.append((args.epochs, accuracy))
        common = {"dataset": data.name, "library": library}
        rows = [
            dict(common, encoder=name, pretraining="none", seconds=0.0, knn_top1=baseline,
                 curve=[]),
            dict(common, encoder=library, pretraining=description, seconds=round(seconds, 1),
                 knn_top1=accuracy, curve=curve, load_average=harness.load_average()),
        ]  # fmt: skip
        return {"seconds": seconds, "rows": rows}

    return harness.Workload(run=run, info={"pid": os.getpid()})
