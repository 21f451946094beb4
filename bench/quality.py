"""kNN quality of byol_tf against byol-pytorch after the same short CIFAR-10 pretraining."""

import argparse
import json
import os
import pathlib
import sys
import tarfile
import tempfile
import time

import numpy as np
import torch_peers

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
DEFAULT_DATA = "../shared/data/cifar10-jpg/cifar10-jpg.tar.gz"
CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip
# byol-pytorch's default augmentation ends with this normalisation; its encoder is evaluated so.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def load_split(root, split, subset=None, seed=0):
    """Decodes `root/split/<class>/*.jpg` into uint8 images, optionally a seeded random subset.

    Args:
        root: folder holding `train/` and `test/`.
        split: "train" or "test".
        subset: number of images to keep (all when `None`).
        seed: seed of the subset draw.

    Returns:
        `(images [n, 32, 32, 3] uint8, labels [n] int64)`.
    """
    from PIL import Image

    files, labels = [], []
    for label, name in enumerate(CLASSES):
        paths = sorted((pathlib.Path(root) / split / name).glob("*.jpg"))
        files += paths
        labels += [label] * len(paths)
    labels = np.asarray(labels, np.int64)
    order = np.random.default_rng(seed).permutation(len(files))
    if subset:
        order = order[:subset]
    images = np.stack([np.asarray(Image.open(files[i]).convert("RGB")) for i in order])
    return images, labels[order]


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


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--data",
        default=DEFAULT_DATA,
        help="CIFAR-10 JPEG tarball; relative paths start at the repo root",
    )
    parser.add_argument(
        "--train_subset",
        type=int,
        default=5000,
        help="training images used for pretraining and as the kNN memory bank",
    )
    parser.add_argument("--test_subset", type=int, default=None, help="test images (all: 10000)")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--batch_size", type=int, default=256)
    parser.add_argument(
        "--warmup_epochs",
        type=int,
        default=None,
        help="byol_tf LARS warm-up (default: a tenth of the epochs, >= 1); Adam runs have none",
    )
    parser.add_argument(
        "--tf_optimizer",
        default="adam",
        choices=["adam", "lars"],
        help="byol_tf optimiser: Adam at a constant rate (the short-budget setting) or LARS "
        "with warm-up + cosine (the 1000-epoch CIFAR recipe, docs/algorithm.md §4)",
    )
    parser.add_argument(
        "--tf_learning_rate",
        type=float,
        default=None,
        help="byol_tf rate: Adam's rate (default 1e-3) or LARS's base rate per 256 images "
        "(default 1.0)",
    )
    parser.add_argument("--tf_base_tau", type=float, default=0.99, help="byol_tf τ at step 0")
    parser.add_argument(
        "--tf_tau_schedule",
        default="constant",
        choices=["constant", "cosine"],
        help="byol_tf τ: constant at --tf_base_tau, or the paper's cosine schedule to 1",
    )
    parser.add_argument("--width_multiplier", type=float, default=0.25)
    parser.add_argument(
        "--libraries",
        nargs="+",
        default=["byol_tf", "byol_pytorch"],
        choices=["byol_tf", "byol_pytorch"],
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--knn_k", type=int, default=200)
    parser.add_argument("--knn_temperature", type=float, default=0.1)
    parser.add_argument(
        "--tf_crop_area",
        type=float,
        default=0.08,
        help="byol_tf views' smallest crop area, as a fraction of the image (paper: 0.08)",
    )
    parser.add_argument(
        "--tf_augment",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="byol_tf view override, as train.py's --augment (e.g. jitter_prob=0.3 or "
        "view2_solarize_prob=0); repeat the flag for several",
    )
    parser.add_argument(
        "--tf_joint_views",
        action="store_true",
        help="byol_tf forwards both views as one batch (BatchNorm statistics over 2B images, "
        "as byol-pytorch does) instead of one pass per view (the paper)",
    )
    parser.add_argument(
        "--knn_every_epochs",
        type=int,
        default=0,
        help="also print each pretrained encoder's kNN top-1 every N epochs (0: only at the "
        "end); that scoring counts in the reported pretraining time",
    )
    parser.add_argument("--json_out", default=None)
    args = parser.parse_args(argv)
    if not 0.0 < args.tf_crop_area <= 1.0:
        parser.error(f"--tf_crop_area must lie in (0, 1]; got {args.tf_crop_area}")
    if not 0.0 <= args.tf_base_tau <= 1.0:
        parser.error(f"--tf_base_tau must lie in [0, 1]; got {args.tf_base_tau}")
    if args.tf_learning_rate is not None and args.tf_learning_rate <= 0:
        parser.error(f"--tf_learning_rate must be positive; got {args.tf_learning_rate}")
    return args


def tf_overrides(args):
    """byol_tf's view overrides from `--tf_crop_area` and `--tf_augment`, checked.

    Imports TensorFlow, so it runs after `_set_threads` (PyTorch first).

    Raises:
        SystemExit: with a one-line message for a malformed or out-of-range entry.
    """
    from byol_tf.settings import checked_augment

    overrides = {"crop_area": (args.tf_crop_area, 1.0)}
    try:
        overrides.update(checked_augment(args.tf_augment, "small", flag="--tf_augment"))
    except ValueError as error:
        sys.exit(f"error: {error}")
    return overrides


CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)


def _byol_tf_dataset(images, args):
    """byol_tf's own pipeline: in-memory images, "small" preset (no blur), per-image draws."""
    import byol_tf.data

    return byol_tf.data.pretrain_dataset(
        (images,), args.batch_size, 32, seed=args.seed, preset="small",
        mean=CIFAR_MEAN, std=CIFAR_STD, with_labels=False,
        augment_overrides=args.tf_overrides,
    )  # fmt: skip


def _tf_rate(args):
    if args.tf_learning_rate is not None:
        return args.tf_learning_rate
    return 1e-3 if args.tf_optimizer == "adam" else 1.0


def tf_recipe(args):
    """One line describing the byol_tf settings these flags select."""
    rate = _tf_rate(args)
    if args.tf_optimizer == "adam":
        optimizer = f"Adam {rate:g} (constant)"
    else:
        optimizer = f"LARS lr {rate:g}·B/256, wd 1e-5, η 0.02, warm-up + cosine"
    tau = (f"τ {args.tf_base_tau:g} (constant)" if args.tf_tau_schedule == "constant"
           else f"τ {args.tf_base_tau:g}→1 (cosine)")  # fmt: skip
    crops = "" if args.tf_crop_area == 0.08 else f", crop area >= {args.tf_crop_area:g}"
    extra = "".join(f", {entry}" for entry in args.tf_augment)
    joint = ", views forwarded jointly" if args.tf_joint_views else ""
    return f"{optimizer}, {tau}, 'small' preset views (per-image draws){crops}{extra}{joint}"


def _knn_monitor(monitor):
    """A callback calling `monitor(epoch, encoder)` after each epoch (it decides when to score)."""
    import keras

    class KNN(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            monitor(epoch + 1, self.model.encoder)

    return KNN()


def pretrain_byol_tf(images, args, monitor=None):
    """byol_tf's BYOL model, its per-image "small" augmentation and the chosen optimiser and τ.

    The defaults are the short-budget settings (Adam 1e-3, constant τ 0.99);
    `--tf_optimizer lars --tf_tau_schedule cosine` is the 1000-epoch small-data recipe
    (docs/algorithm.md §4: LARS lr 1.0·B/256, wd 1e-5, η 0.02, biases/BN excluded, τ 0.99 → 1).

    Args:
        images: uint8 `[n, 32, 32, 3]` training images.
        args: parsed flags.
        monitor: optional `monitor(epoch, encoder)` called after each epoch.

    Returns:
        The pretrained Keras encoder.
    """
    import keras

    import byol_tf

    keras.utils.set_random_seed(args.seed)
    steps = len(images) // args.batch_size
    total = steps * args.epochs
    encoder = byol_tf.networks.resnet(18, width_multiplier=args.width_multiplier, cifar_stem=True)
    model = byol_tf.BYOL(encoder, projection_dim=256, hidden_dim=4096, image_shape=(32, 32, 3),
                         joint_views=args.tf_joint_views)  # fmt: skip
    rate = _tf_rate(args)
    if args.tf_optimizer == "adam":
        optimizer = keras.optimizers.Adam(rate)
    else:
        warmup = args.warmup_epochs if args.warmup_epochs is not None else max(1, args.epochs // 10)
        schedule = byol_tf.WarmupCosine(rate * args.batch_size / 256, total, warmup * steps)
        optimizer = byol_tf.LARS(schedule, weight_decay=1e-5, eta=0.02)
    model.compile(optimizer=optimizer, jit_compile=True)
    ema = byol_tf.TargetEMA(args.tf_base_tau, total_steps=total, schedule=args.tf_tau_schedule)
    model.fit(
        _byol_tf_dataset(images, args),
        epochs=args.epochs,
        steps_per_epoch=steps,
        callbacks=[ema] + ([_knn_monitor(monitor)] if monitor else []),
        shuffle=False,  # the dataset shuffles itself
        verbose=2,
    )
    return model.encoder


def tf_features(encoder, images, batch_size=512):
    """Pooled features of a Keras encoder in inference mode, CIFAR-normalised as in training."""
    import tensorflow as tf

    mean, std = tf.constant(CIFAR_MEAN), tf.constant(CIFAR_STD)
    out = []
    for i in range(0, len(images), batch_size):
        x = (tf.cast(images[i : i + batch_size], tf.float32) / 255.0 - mean) / std
        out.append(encoder(x, training=False).numpy())
    return np.concatenate(out)


def _random_encoders(args):
    """The random-initialisation baselines: (name, feature function) per installed library."""
    encoders = []
    if "byol_tf" in args.libraries:
        import keras

        import byol_tf

        keras.utils.set_random_seed(args.seed)
        encoder = byol_tf.networks.resnet(
            18, width_multiplier=args.width_multiplier, cifar_stem=True
        )
        encoders.append(("random init (byol_tf ResNet)", lambda x: tf_features(encoder, x)))
    if "byol_pytorch" in args.libraries:
        import torch

        torch.manual_seed(args.seed)
        net = torch_peers.resnet18_cifar(args.width_multiplier)
        encoders.append(("random init (torch ResNet)", lambda x: torch_features(net, x)))
    return encoders


def _resolve_data(path):
    path = pathlib.Path(path)
    return path if path.is_absolute() else (REPO_ROOT / path).resolve()


def _set_threads(libraries, threads):
    """Limits both frameworks to `threads` intra-op threads (TF inter-op too)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if "byol_pytorch" in libraries:
        # PyTorch first: importing torchvision after tensorflow crashes the process.
        import byol_pytorch  # noqa: F401
        import torch

        torch.set_num_threads(threads)
    if "byol_tf" in libraries:
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)


def _installed(libraries):
    """Keeps the libraries whose packages import, and says why each other one is skipped."""
    import importlib.util

    kept = []
    for library in libraries:
        module = "tensorflow" if library == "byol_tf" else "byol_pytorch"
        if importlib.util.find_spec(module) is None:
            print(f"skipping {library}: `{module}` is not installed (see bench/README.md)")
        else:
            kept.append(library)
    return kept


def _evaluate(name, features, data, args):
    """kNN top-1 of one encoder on the test split, with the training subset as memory bank."""
    from byol_tf.evaluation import knn_classify  # imports TensorFlow: after torch (README)

    train_x, train_y, test_x, test_y = data
    accuracy = knn_classify(features(train_x), train_y, features(test_x), test_y,
                            k=args.knn_k, temperature=args.knn_temperature)["top1"]  # fmt: skip
    print(f"{name}: kNN top-1 {100 * accuracy:.2f} %")
    return accuracy


def _epoch_monitor(library, features, data, args):
    """The per-epoch kNN printer of `--knn_every_epochs`, or `None` when it is off."""
    if args.knn_every_epochs <= 0:
        return None

    def monitor(epoch, encoder):
        if epoch % args.knn_every_epochs == 0 and epoch < args.epochs:
            name = f"  {library} after epoch {epoch}"
            _evaluate(name, lambda x: features(encoder, x), data, args)

    return monitor


def main(argv=None):
    args = parse_args(argv)
    path = _resolve_data(args.data)
    if not path.is_file():
        print(f"CIFAR-10 JPEG tarball not found at {path}: skipping the quality benchmark "
              "(pass --data=PATH to the cifar10-jpg.tar.gz file).")  # fmt: skip
        return
    args.libraries = _installed(args.libraries)
    if not args.libraries:
        sys.exit("neither byol_tf nor byol-pytorch can be imported")
    _set_threads(args.libraries, args.threads)
    if "byol_tf" in args.libraries:
        args.tf_overrides = tf_overrides(args)
    with tempfile.TemporaryDirectory() as tmp:
        with tarfile.open(path) as tar:
            tar.extractall(tmp, filter="data")
        train_x, train_y = load_split(tmp, "train", args.train_subset, args.seed)
        test_x, test_y = load_split(tmp, "test", args.test_subset, args.seed)
    data = (train_x, train_y, test_x, test_y)
    print(
        f"CIFAR-10 (JPEG re-encoding): {len(train_x)} train images (pretraining set and kNN "
        f"bank), {len(test_x)} test images; ResNet-18 CIFAR stem, width x{args.width_multiplier}, "
        f"32 px; {args.epochs} epochs of batch {args.batch_size}; {args.threads} threads"
    )
    rows = [(name, "none", 0.0, _evaluate(name, fn, data, args))
            for name, fn in _random_encoders(args)]  # fmt: skip
    recipes = {
        "byol_tf": (tf_recipe(args), pretrain_byol_tf, tf_features),
        "byol_pytorch": ("Adam 3e-4, τ 0.99, its default augmentation", pretrain_byol_pytorch,
                         torch_features),
    }  # fmt: skip
    for library in args.libraries:
        recipe, pretrain, features = recipes[library]
        print(f"pretraining {library}: {recipe}")
        start = time.perf_counter()
        encoder = pretrain(train_x, args, _epoch_monitor(library, features, data, args))
        seconds = time.perf_counter() - start
        accuracy = _evaluate(library, lambda x, e=encoder, f=features: f(e, x), data, args)
        rows.append((library, recipe, seconds, accuracy))
    print(
        f"\n| encoder | pretraining | time (s) | "
        f"kNN top-1 (k={args.knn_k}, T={args.knn_temperature}) |"
    )
    print("|---|---|---:|---:|")
    for name, recipe, seconds, accuracy in rows:
        print(f"| {name} | {recipe} | {seconds:.0f} | {100 * accuracy:.2f} % |")
    if args.json_out:
        results = [dict(zip(("encoder", "pretraining", "seconds", "knn_top1"), r, strict=True))
                   for r in rows]  # fmt: skip
        with open(args.json_out, "w") as f:
            json.dump({"args": vars(args), "results": results}, f, indent=2)


if __name__ == "__main__":
    main()
