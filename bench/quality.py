"""kNN quality of byol_tf against byol-pytorch after the same short pretraining, on two data sets.

CIFAR-10 (the JPEG re-encoding) and Fashion-MNIST (the official IDX files, padded to 32 px and
copied to three channels): the same seeded training subset pretrains both libraries and is the
kNN memory bank; the test subset is scored by the same NumPy kNN for every encoder. With
`--knn_every_epochs N` each library's kNN is also scored every N epochs, and `--plot` saves the
curves (kNN against epoch, both libraries and both random initialisations) as a PNG.
"""

import argparse
import dataclasses
import gzip
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
DEFAULT_DATA = "data/cifar10-jpg/cifar10-jpg.tar.gz"
DEFAULT_FASHION_MNIST = "data/fashion-mnist"
DATASETS = ("cifar10", "fashion_mnist")
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


def _read_idx(path):
    """An IDX file (gzip) as a NumPy array: `[n, 28, 28]` images or `[n]` labels, uint8."""
    with gzip.open(path, "rb") as handle:
        raw = handle.read()
    dims = raw[3]
    shape = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * dims).reshape(shape)


def load_fashion_mnist(folder, split, subset=None, seed=0):
    """Fashion-MNIST from its official IDX files, padded to 32 px and copied to 3 channels.

    Args:
        folder: the folder of `train-images-idx3-ubyte.gz`, `t10k-images-idx3-ubyte.gz`, ...
        split: "train" or "test".
        subset: number of images to keep (all when `None`), a seeded random draw.
        seed: seed of the subset draw.

    Returns:
        `(images [n, 32, 32, 3] uint8, labels [n] int64)`.
    """
    prefix = "train" if split == "train" else "t10k"
    images = _read_idx(pathlib.Path(folder) / f"{prefix}-images-idx3-ubyte.gz")
    labels = _read_idx(pathlib.Path(folder) / f"{prefix}-labels-idx1-ubyte.gz").astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(images))
    if subset:
        order = order[:subset]
    padded = np.pad(images[order], ((0, 0), (2, 2), (2, 2)))  # black border, as the items'
    return np.repeat(padded[..., None], 3, axis=-1), labels[order]


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
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS)
    parser.add_argument(
        "--data",
        default=DEFAULT_DATA,
        help="CIFAR-10 JPEG tarball; relative paths start at the repo root",
    )
    parser.add_argument(
        "--fashion_mnist_dir",
        default=DEFAULT_FASHION_MNIST,
        help="folder of the Fashion-MNIST IDX files; relative paths start at the repo root",
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
        "--tf_recipe",
        default="auto",
        choices=["auto", "paper", "small_data", "short"],
        help="byol_tf recipe (byol_tf.recipes): 'auto' chooses by budget, as train.py does",
    )
    parser.add_argument(
        "--tf_override",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="byol_tf recipe setting to override (a byol_tf.recipes.Recipe field, e.g. "
        "learning_rate=3e-4 or tau_schedule=cosine); repeat the flag for several",
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
        "--tf_per_batch_draws",
        action="store_true",
        help="measurement only: byol_tf draws one crop box and one set of colour, greyscale and "
        "solarisation decisions per batch and view (as torchvision transforms applied to a "
        "batch tensor do) instead of per image",
    )
    parser.add_argument(
        "--knn_every_epochs",
        type=int,
        default=0,
        help="also score each pretrained encoder's kNN top-1 every N epochs (0: only at the "
        "end); that scoring counts in the reported pretraining time",
    )
    parser.add_argument("--json_out", default=None)
    parser.add_argument(
        "--plot",
        default=None,
        help="save the kNN-against-epoch curves here (PNG; needs matplotlib)",
    )
    args = parser.parse_args(argv)
    if not 0.0 < args.tf_crop_area <= 1.0:
        parser.error(f"--tf_crop_area must lie in (0, 1]; got {args.tf_crop_area}")
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


def tf_recipe(args, steps_per_epoch):
    """The byol_tf `Recipe` of `--tf_recipe` for this budget, with `--tf_override` applied.

    Raises:
        SystemExit: for an override that is not `name=value` of a recipe setting.
    """
    from byol_tf import recipes

    recipe = recipes.select(
        args.tf_recipe,
        total_steps=steps_per_epoch * args.epochs,
        steps_per_epoch=steps_per_epoch,
        num_examples=args.train_subset,
    )
    changes = {}
    for entry in args.tf_override:
        name, _, value = entry.partition("=")
        if name not in recipes.SETTINGS or not value:
            sys.exit(f"error: --tf_override must be name=value with a name among "
                     f"{', '.join(recipes.SETTINGS)}. Received: {entry}")  # fmt: skip
        current = getattr(recipe, name)
        if isinstance(current, bool):
            changes[name] = value.lower() in ("1", "true", "yes")
        else:
            changes[name] = type(current)(value)
    if changes:
        recipe = dataclasses.replace(recipe, name=f"{recipe.name}, overridden", **changes)
    return recipe


def _recipe_text(recipe, args):
    """One line describing the byol_tf settings: the recipe, then the views."""
    crops = "" if args.tf_crop_area == 0.08 else f", crop area >= {args.tf_crop_area:g}"
    extra = "".join(f", {entry}" for entry in args.tf_augment)
    joint = ", views forwarded jointly" if args.tf_joint_views else ""
    draws = "per-batch" if args.tf_per_batch_draws else "per-image"
    return f"{recipe.describe()}; 'small' preset views ({draws} draws){crops}{extra}{joint}"


CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)
FASHION_MNIST_MEAN = (0.2860,) * 3
FASHION_MNIST_STD = (0.3530,) * 3


@dataclasses.dataclass
class Data:
    """One data set of the benchmark: arrays and byol_tf's normalisation."""

    name: str
    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    mean: tuple
    std: tuple


def _per_batch_draws():
    """Makes byol_tf's augmentation draw per batch: every image takes image 0's crop box and
    image 0's seeds for the rest (a measurement of that lever, not a library option)."""
    import tensorflow as tf

    from byol_tf import augment, image_ops

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
    import byol_tf.data

    if args.tf_per_batch_draws:
        _per_batch_draws()

    overrides = dict(args.tf_overrides, crop_sampler=recipe.crop_sampler)
    return byol_tf.data.pretrain_dataset(
        (images,), args.batch_size, 32, seed=args.seed, preset="small",
        mean=data.mean, std=data.std, with_labels=False, augment_overrides=overrides,
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

    The recipe is `byol_tf.recipes.select(--tf_recipe)` for this run's steps and images (what
    train.py would choose), with `--tf_override` applied; it also decides the paper-parity
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
    recipe = args.recipes[data.name]
    encoder = byol_tf.networks.resnet(18, width_multiplier=args.width_multiplier, cifar_stem=True,
                                      zero_init_residual=recipe.zero_init_residual)  # fmt: skip
    model = byol_tf.BYOL(encoder, projection_dim=256, hidden_dim=4096, image_shape=(32, 32, 3),
                         joint_views=args.tf_joint_views,
                         head_output_bias=recipe.head_output_bias)  # fmt: skip
    plan = byol_tf.recipes.build(recipe, total, steps, args.batch_size)
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


def pretrain_byol_pytorch_on(data, args, monitor=None):
    """`pretrain_byol_pytorch` on a `Data` set."""
    return pretrain_byol_pytorch(data.train_x, args, monitor)


def tf_features(encoder, images, data, batch_size=512):
    """Pooled features of a Keras encoder in inference mode, normalised as in its training."""
    import tensorflow as tf

    mean, std = tf.constant(data.mean), tf.constant(data.std)
    out = []
    for i in range(0, len(images), batch_size):
        x = (tf.cast(images[i : i + batch_size], tf.float32) / 255.0 - mean) / std
        out.append(encoder(x, training=False).numpy())
    return np.concatenate(out)


def torch_features_on(net, images, data):
    """`torch_features` with the signature of `tf_features`."""
    return torch_features(net, images)


def _random_encoders(args, data):
    """The random-initialisation baselines: `{library: (name, features)}` per installed library."""
    encoders = {}
    if "byol_tf" in args.libraries:
        import keras

        import byol_tf

        keras.utils.set_random_seed(args.seed)
        recipe = args.recipes[data.name]
        encoder = byol_tf.networks.resnet(
            18, width_multiplier=args.width_multiplier, cifar_stem=True,
            zero_init_residual=recipe.zero_init_residual,
        )  # fmt: skip
        encoders["byol_tf"] = (
            "random init (byol_tf ResNet)",
            lambda x: tf_features(encoder, x, data),
        )
    if "byol_pytorch" in args.libraries:
        import torch

        torch.manual_seed(args.seed)
        net = torch_peers.resnet18_cifar(args.width_multiplier)
        encoders["byol_pytorch"] = ("random init (torch ResNet)", lambda x: torch_features(net, x))
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


def load(name, args):
    """The `Data` set `name` (`cifar10` or `fashion_mnist`), or None when its files are missing."""
    if name == "cifar10":
        path = _resolve_data(args.data)
        if not path.is_file():
            print(f"CIFAR-10 JPEG tarball not found at {path}: skipping CIFAR-10 (pass "
                  "--data=PATH to a tarball of the CIFAR-10 JPEGs, {train,test}/<class>/*.jpg; "
                  "bench/README.md says where to get them).")  # fmt: skip
            return None
        with tempfile.TemporaryDirectory() as tmp:
            with tarfile.open(path) as tar:
                tar.extractall(tmp, filter="data")
            train = load_split(tmp, "train", args.train_subset, args.seed)
            test = load_split(tmp, "test", args.test_subset, args.seed)
        return Data("cifar10", *train, *test, CIFAR_MEAN, CIFAR_STD)
    folder = _resolve_data(args.fashion_mnist_dir)
    if not (folder / "train-images-idx3-ubyte.gz").is_file():
        print(f"Fashion-MNIST IDX files not found in {folder}: skipping Fashion-MNIST (pass "
              "--fashion_mnist_dir=FOLDER, the official IDX files; bench/README.md)."
              )  # fmt: skip
        return None
    train = load_fashion_mnist(folder, "train", args.train_subset, args.seed)
    test = load_fashion_mnist(folder, "test", args.test_subset, args.seed)
    return Data("fashion_mnist", *train, *test, FASHION_MNIST_MEAN, FASHION_MNIST_STD)


def run_dataset(data, args):
    """Random baselines, then each library's pretraining and kNN on one data set; its rows."""
    print(
        f"\n{data.name}: {len(data.train_x)} train images (pretraining set and kNN bank), "
        f"{len(data.test_x)} test images; ResNet-18 CIFAR stem, width x{args.width_multiplier}, "
        f"32 px; {args.epochs} epochs of batch {args.batch_size}; {args.threads} threads; "
        f"load average {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    rows = []
    for library, (name, features) in _random_encoders(args, data).items():
        rows.append(dict(dataset=data.name, library=library, encoder=name, pretraining="none",
                         seconds=0.0, knn_top1=_evaluate(name, features, data, args),
                         curve=[]))  # fmt: skip
    contenders = {
        "byol_tf": (_recipe_text(args.recipes.get(data.name), args) if "byol_tf" in args.libraries
                    else "", pretrain_byol_tf, tf_features),
        "byol_pytorch": ("Adam 3e-4, τ 0.99, its default augmentation", pretrain_byol_pytorch_on,
                         torch_features_on),
    }  # fmt: skip
    for library in args.libraries:
        recipe, pretrain, features = contenders[library]
        print(f"pretraining {library} on {data.name}: {recipe}", flush=True)
        curve = []
        start = time.perf_counter()
        encoder = pretrain(data, args, _epoch_monitor(library, features, data, args, curve))
        seconds = time.perf_counter() - start
        accuracy = _evaluate(library, lambda x, e=encoder, f=features: f(e, x, data), data, args)
        curve.append((args.epochs, accuracy))
        rows.append(dict(dataset=data.name, library=library, encoder=library, pretraining=recipe,
                         seconds=round(seconds, 1), knn_top1=accuracy, curve=curve,
                         load_average=os.getloadavg()[0]))  # fmt: skip
    return rows


def plot(rows, path):
    """kNN against epoch per data set: both libraries, their random initialisations at epoch 0."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(f"matplotlib is not installed: no plot written to {path}")
        return
    datasets = list(dict.fromkeys(row["dataset"] for row in rows))
    figure, axes = plt.subplots(1, len(datasets), figsize=(5.5 * len(datasets), 4), squeeze=False)
    colours = {"byol_tf": "tab:orange", "byol_pytorch": "tab:blue"}
    for axis, name in zip(axes[0], datasets, strict=True):
        start = {r["library"]: r["knn_top1"] for r in rows
                 if r["dataset"] == name and r["pretraining"] == "none"}  # fmt: skip
        for row in rows:
            if row["dataset"] != name or row["pretraining"] == "none":
                continue
            library = row["library"]
            points = [(0, start.get(library))] if library in start else []
            points += [tuple(p) for p in row["curve"]]
            epochs, accuracy = zip(*points, strict=True)
            axis.plot(epochs, [100 * a for a in accuracy], "o-", color=colours[library],
                      label=library)  # fmt: skip
            if library in start:
                axis.axhline(100 * start[library], color=colours[library], linestyle=":",
                             label=f"{library} random init")  # fmt: skip
        axis.set_title(name)
        axis.set_xlabel("epoch")
        axis.set_ylabel("kNN top-1 (%)")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    print(f"plot: {path}")


def main(argv=None):
    args = parse_args(argv)
    args.libraries = _installed(args.libraries)
    if not args.libraries:
        sys.exit("neither byol_tf nor byol-pytorch can be imported")
    _set_threads(args.libraries, args.threads)
    if "byol_tf" in args.libraries:
        args.tf_overrides = tf_overrides(args)
    rows, args.recipes = [], {}
    for name in args.datasets:
        data = load(name, args)
        if data is None:
            continue
        if "byol_tf" in args.libraries:
            args.recipes[name] = tf_recipe(args, len(data.train_x) // args.batch_size)
        rows += run_dataset(data, args)
    if not rows:
        return
    print(f"\n| data set | encoder | pretraining | time (s) | "
          f"kNN top-1 (k={args.knn_k}, T={args.knn_temperature}) |")  # fmt: skip
    print("|---|---|---|---:|---:|")
    for row in rows:
        print(f"| {row['dataset']} | {row['encoder']} | {row['pretraining']} | "
              f"{row['seconds']:.0f} | {100 * row['knn_top1']:.2f} % |")  # fmt: skip
    if args.plot:
        plot(rows, args.plot)
    if args.json_out:
        settings = {k: v for k, v in vars(args).items() if k != "recipes"}
        settings["recipes"] = {k: r.to_json() for k, r in args.recipes.items()}
        with open(args.json_out, "w") as f:
            json.dump({"args": settings, "results": rows}, f, indent=2)


if __name__ == "__main__":
    main()
