"""Generated JPEG folders for the pipeline benchmarks, and the files byol_tf reads from one."""

import os

import numpy as np

# byol_tf's folder rule (byol_tf.data.sources), repeated so that a torchvision process needs no TF.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")


def write_images(folder, count, seed=0):
    """Writes `count` random natural-looking JPEGs (smooth colour gradients, soft blobs and
    noise; quality 90) with sides in [300, 500] into `folder`."""
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    for i in range(count):
        h, w = rng.integers(300, 501, size=2)
        y, x = np.mgrid[0:h, 0:w] / max(h, w)
        image = np.zeros((h, w, 3), np.float32)
        for c in range(3):
            a, b, phase = rng.uniform(-3, 3, size=3)
            image[..., c] = 0.5 + 0.3 * np.sin(a * x * 3 + b * y * 3 + phase)
        for _ in range(6):  # soft blobs: edges and texture like objects
            cy, cx, r = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.05, 0.3)
            mask = np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * r * r))[..., None]
            image = image * (1 - mask) + mask * rng.uniform(0, 1, size=3)
        image += rng.normal(0, 0.04, size=image.shape)
        data = tf.io.encode_jpeg(np.clip(image * 255, 0, 255).astype(np.uint8), quality=90)
        tf.io.write_file(os.path.join(folder, f"img_{i:05d}.jpg"), data)


def image_paths(root):
    """The files `byol_tf.data` reads from folder `root`: `root/train` when it exists, then its
    images, or else those of its subfolders (one per class), sorted."""
    if os.path.isdir(os.path.join(root, "train")):
        root = os.path.join(root, "train")

    def images_in(folder):
        names = sorted(n for n in os.listdir(folder) if n.lower().endswith(IMAGE_EXTENSIONS))
        return [os.path.join(folder, n) for n in names if os.path.isfile(os.path.join(folder, n))]

    subfolders = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
    return images_in(root) or [p for d in subfolders for p in images_in(os.path.join(root, d))]


def write_in_process(folder, count, timeout=None):
    """`write_images(folder, count)` in a fresh process that sees no GPU, so that the
    benchmark's own process never imports TensorFlow."""
    import harness

    harness.call_in_process(
        "jpegs:write_images", {"folder": folder, "count": count},
        env={"CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "2"}, timeout=timeout,
    )  # fmt: skip
