"""Builds the offline demo data set (a Fashion-MNIST subset) shipped in byol_tf/data_files."""

import argparse
import gzip
import os

import numpy as np

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


def read_idx(images_path, labels_path):
    """Reads one Fashion-MNIST IDX image/label pair.

    Args:
        images_path: path of the gzipped IDX image file (16-byte header).
        labels_path: path of the gzipped IDX label file (8-byte header).

    Returns:
        `(images uint8 [N, 28, 28], labels uint8 [N])`.
    """
    with gzip.open(images_path, "rb") as f:
        images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    with gzip.open(labels_path, "rb") as f:
        labels = np.frombuffer(f.read(), np.uint8, offset=8)
    if len(images) != len(labels):
        raise ValueError(f"{images_path} and {labels_path} hold different numbers of examples")
    return images, labels


def first_per_class(images, labels, per_class):
    """Keeps the first `per_class` examples of every class, in file order."""
    keep = np.concatenate([np.flatnonzero(labels == c)[:per_class] for c in range(10)])
    keep.sort()
    return images[keep], labels[keep]


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--source",
        default=os.path.join(_REPO, "data", "fashion-mnist"),
        help="folder with the official Fashion-MNIST IDX .gz files (bench/README.md, Data)",
    )
    parser.add_argument(
        "--output", default=os.path.join(_REPO, "byol_tf", "data_files", "fashion_mnist_demo.npz")
    )
    parser.add_argument("--train_per_class", type=int, default=600)
    parser.add_argument("--test_per_class", type=int, default=100)
    args = parser.parse_args()
    arrays = {}
    for split, per_class in (("train", args.train_per_class), ("test", args.test_per_class)):
        paths = [os.path.join(args.source, name) for name in _FILES[split]]
        for path in paths:
            if not os.path.isfile(path):
                raise FileNotFoundError(f"Fashion-MNIST file not found: {path}")
        x, y = first_per_class(*read_idx(*paths), per_class)
        arrays[f"x_{split}"], arrays[f"y_{split}"] = x, y
        print(f"{split}: {len(x)} images, mean {x.mean() / 255:.4f}, std {(x / 255).std():.4f}")
    np.savez_compressed(args.output, **arrays)
    print(f"wrote {args.output} ({os.path.getsize(args.output) / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
