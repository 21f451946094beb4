"""The two data sets of bench/quality.py: CIFAR-10 from its JPEG tarball, Fashion-MNIST from its
IDX files, as uint8 arrays with byol_tf's normalisation (see bench/README.md, *Data*)."""

import dataclasses
import gzip
import pathlib
import tarfile
import tempfile

import numpy as np

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
DEFAULT_DATA = "data/cifar10-jpg/cifar10-jpg.tar.gz"
DEFAULT_FASHION_MNIST = "data/fashion-mnist"
DATASETS = ("cifar10", "fashion_mnist")
CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip
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


def resolve(path):
    """`path`, relative to the repository root unless absolute."""
    path = pathlib.Path(path)
    return path if path.is_absolute() else (REPO_ROOT / path).resolve()


def load(name, args):
    """The `Data` set `name` (`cifar10` or `fashion_mnist`), or None when its files are missing."""
    if name == "cifar10":
        path = resolve(args.data)
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
    folder = resolve(args.fashion_mnist_dir)
    if not (folder / "train-images-idx3-ubyte.gz").is_file():
        print(f"Fashion-MNIST IDX files not found in {folder}: skipping Fashion-MNIST (pass "
              "--fashion_mnist_dir=FOLDER, the official IDX files; bench/README.md)."
              )  # fmt: skip
        return None
    train = load_fashion_mnist(folder, "train", args.train_subset, args.seed)
    test = load_fashion_mnist(folder, "test", args.test_subset, args.seed)
    return Data("fashion_mnist", *train, *test, FASHION_MNIST_MEAN, FASHION_MNIST_STD)
