"""Input pipeline throughput: BYOL view pairs at 224 px from JPEG bytes, images/s per CPU core.

Times `byol_tf.data.pretrain_dataset` on an image folder (crop-aware JPEG decoding of the two
random-resized crops, then the XLA-compiled augmentation of each batch) with TensorFlow limited
to 1 thread and to all cores, each in its own process, and says how many cores would feed one
accelerator at the step rate of the paper's ResNet-50 run.

    python bench/input_pipeline.py                       # 256 generated Imagenette-like JPEGs
    python bench/input_pipeline.py --folder ~/imagenette2/train --batches 20

The folder is `root/<class>/*.jpg` or flat (see `byol_tf.data`). Without `--folder`, random
natural-looking JPEGs (smooth colour gradients, blobs and noise; sides 300-500 px, about the
size of Imagenette's full-size images) are written to a temporary folder.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

IMAGENET_IMAGES = 1_281_167
# Paper-implied rate: the official README reports 74.0-74.5 % top-1 (the 1000-epoch result)
# "after about 8h of training using 512 Cloud TPU v3" (deepmind-research/byol/README.md;
# Grill et al. 2020 §3.3: batch 4096 over 512 TPU v3 cores).
PAPER_EPOCHS, PAPER_HOURS, PAPER_CORES = 1000, 8.0, 512


def paper_rates():
    """{label: images/s one accelerator must be fed}; see the module docstring."""
    per_core = PAPER_EPOCHS * IMAGENET_IMAGES / (PAPER_HOURS * 3600) / PAPER_CORES
    return {
        "one TPU v3 core (paper: 1000 epochs in ~8 h on 512 cores)": per_core,
        "one A100-class GPU (assumption: = one TPU v3 chip, 2 cores)": 2 * per_core,
        "one H100-class GPU (assumption: 2x an A100 on ResNet-50)": 4 * per_core,
    }


def write_images(folder, count, seed=0):
    """`count` random natural-looking JPEGs (quality 90) with sides in [300, 500]."""
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


def measure(folder, threads, batch_size, batches, image_size):
    """Images/s of the pipeline with TensorFlow limited to `threads` threads (this process)."""
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    from byol_tf import data

    options = tf.data.Options()
    options.threading.private_threadpool_size = threads
    options.threading.max_intra_op_parallelism = 1
    ds = data.pretrain_dataset(folder, batch_size, image_size, seed=0)
    iterator = iter(ds.with_options(options))
    next(iterator)  # warm-up: XLA compilation of the augmentation, file cache
    next(iterator)
    start = time.perf_counter()
    for _ in range(batches):
        element = next(iterator)
    element["view1"].numpy()
    return batches * batch_size / (time.perf_counter() - start)


def _child(args):
    rate = measure(args.folder, args.threads, args.batch_size, args.batches, args.image_size)
    print(json.dumps({"threads": args.threads, "images_per_s": rate}))


def _run_child(args, threads):
    command = [sys.executable, __file__, "--child", f"--threads={threads}"]
    command += [f"--folder={args.folder}", f"--batch_size={args.batch_size}"]
    command += [f"--batches={args.batches}", f"--image_size={args.image_size}"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    env.update(OMP_NUM_THREADS=str(threads), TF_NUM_INTRAOP_THREADS=str(threads))
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    if result.returncode:
        sys.exit(f"input_pipeline.py: the {threads}-thread run failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])["images_per_s"]


def _table(rates, cores):
    lines = [
        f"Two 224 px views per image from JPEG bytes; {cores} cores on this machine.",
        "",
        "| TF threads | images/s | images/s per core |",
        "|---|---|---|",
    ]
    for threads, rate in rates.items():
        lines.append(f"| {threads} | {rate:.1f} | {rate / threads:.1f} |")
    per_core = rates[1] if 1 in rates else max(r / t for t, r in rates.items())
    lines += ["", "| accelerator fed at | images/s | cores needed (at 1-thread rate) |"]
    lines.append("|---|---|---|")
    for label, target in paper_rates().items():
        lines.append(f"| {label} | {target:.0f} | {target / per_core:.1f} |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", help="image folder; default: generated JPEGs")
    parser.add_argument("--num_images", type=int, default=256, help="generated images")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--batches", type=int, default=6, help="timed batches per setting")
    parser.add_argument("--image_size", type=int, default=224)
    parser.add_argument("--threads", type=int, default=0, help="0: 1 and all cores")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return _child(args)
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="byol_bench_jpeg_") as tmp:
        if not args.folder:
            args.folder = os.path.join(tmp, "images")
            write_images(args.folder, args.num_images)
        settings = [args.threads] if args.threads else sorted({1, cores})
        rates = {threads: _run_child(args, threads) for threads in settings}
    print(_table(rates, cores))


if __name__ == "__main__":
    main()
