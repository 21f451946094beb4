"""Benchmark of the two-view augmentation (byol_tf XLA / plain vs torchvision) and the pipeline.

Part 1 — images per second per CPU core for BYOL's two views (paper Table 6) at 32 px and 224 px:
byol_tf's `two_views` compiled with XLA and without, and, when torch/torchvision are importable,
the pipeline written the way PyTorch SSL libraries write it (solo-learn, lightly: torchvision v2
transforms per PIL image, Gaussian blur by PIL's ImageFilter). Every contender runs in its own
process with one thread (`--threads`; bench/harness) on the same images, and the figures are
medians over `--repeats` interleaved rounds. Sources are 32 px images for the 32 px views and
256 px images for the 224 px views.

Part 2 — does the input pipeline keep up with training? The step time of `byol_tf.BYOL` with a
CIFAR ResNet-18 fed by `byol_tf.data.pipelines.pretrain_dataset` against the step time on one cached
batch. Source: the CIFAR-10 JPEG folder from `--data_root`/cifar10-jpg (extracted to a temporary
folder) when present, else the demo set.

    python bench/augment.py                      # everything
    python bench/augment.py --parts augment --sizes 32
    .venv-bench/bin/python bench/augment.py      # with the torchvision column
"""

import argparse
import os
import shutil
import tarfile
import tempfile
import time
import warnings

import harness

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _images(size, count, seed=0):
    """Natural-ish uint8 test images: smooth colour gradients plus noise, [count, s, s, 3]."""
    import numpy as np

    rng = np.random.default_rng(seed)
    source = 32 if size <= 64 else 256
    grid = np.linspace(0, 1, source, dtype=np.float32)
    base = rng.random((count, 1, 1, 3), dtype=np.float32)
    ramp = (
        grid[None, :, None, None] * rng.random((count, 1, 1, 3)) + grid[None, None, :, None] * 0.5
    )
    noise = rng.normal(0, 0.1, (count, source, source, 3))
    return (np.clip(base * 0.5 + ramp * 0.5 + noise, 0, 1) * 255).astype(np.uint8)


def build_tf(contender, size, batch, calls, threads):
    """byol_tf's `two_views` on one in-memory batch, XLA (`tf_xla`) or not (`tf_plain`), with
    `threads` threads; a round is `calls` calls (bench/harness)."""
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    from byol_tf.views import augment

    preset = "small" if size <= 64 else "imagenet"
    images = tf.constant(_images(size, batch))
    fn = tf.function(augment.two_views, jit_compile=contender == "tf_xla", autograph=False)
    counter = [0]

    def run():
        for _ in range(calls):
            counter[0] += 1
            seed = tf.constant([1, counter[0]], tf.int64)
            view1, _ = fn(images, seed, preset=preset, image_size=size)
            view1.numpy()

    return harness.Workload(run=run, info={"tensorflow": tf.__version__})


def _torchvision_views(size):
    """The two BYOL views as PyTorch SSL libraries write them (per PIL image)."""
    import torch
    from PIL import ImageFilter
    from torchvision.transforms import v2

    class PILGaussianBlur:  # solo-learn / lightly: PIL's blur with σ ∈ U[0.1, 2]
        def __call__(self, image):
            sigma = 0.1 + 1.9 * torch.rand(1).item()
            return image.filter(ImageFilter.GaussianBlur(radius=sigma))

    def view(blur_prob, solarize_prob):
        steps = [
            v2.RandomResizedCrop(
                size, scale=(0.08, 1.0), interpolation=v2.InterpolationMode.BICUBIC
            ),
            v2.RandomHorizontalFlip(),
            v2.RandomApply([v2.ColorJitter(0.4, 0.4, 0.2, 0.1)], p=0.8),
            v2.RandomGrayscale(p=0.2),
        ]
        if blur_prob > 0:
            steps.append(v2.RandomApply([PILGaussianBlur()], p=blur_prob))
        steps += [
            v2.RandomSolarize(threshold=128, p=solarize_prob),
            v2.ToImage(),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
        ]
        return v2.Compose(steps)

    small = size <= 64
    return view(0.0 if small else 1.0, 0.0), view(0.0 if small else 0.1, 0.2)


def build_torchvision(size, batch, calls, threads):
    """The torchvision two-view pipeline per PIL image, with `threads` threads; a round is
    `calls` passes over the batch (bench/harness)."""
    import torch  # before anything that imports TensorFlow: the reverse order crashes
    import torchvision
    from PIL import Image

    torch.set_num_threads(threads)
    view1, view2 = _torchvision_views(size)
    pil = [Image.fromarray(image) for image in _images(size, batch)]

    def run():
        for _ in range(calls):
            for image in pil:
                view1(image), view2(image)

    return harness.Workload(run=run, info={"torchvision": torchvision.__version__})


def _extract_cifar(data_root, limit):
    """Extracts `limit` CIFAR-10 training JPEGs per class into a temporary folder, or None."""
    archive = os.path.join(data_root, "cifar10-jpg", "cifar10-jpg.tar.gz")
    if not os.path.isfile(archive):
        return None
    out = tempfile.mkdtemp(prefix="byol_bench_cifar_")
    counts = {}
    with tarfile.open(archive) as tar:
        for member in tar:
            parts = member.name.split("/")
            if member.isfile() and len(parts) >= 3 and parts[-3] == "train":
                if counts.get(parts[-2], 0) < limit:
                    counts[parts[-2]] = counts.get(parts[-2], 0) + 1
                    tar.extract(member, out, filter="data")
    for dirpath, dirnames, _ in os.walk(out):
        if "train" in dirnames:
            return os.path.join(dirpath, "train")
    return None


def build_pipeline(**options):
    """Part 2 in this process (bench/harness): a round compares the step fed by the pipeline
    with the step on one cached batch."""
    args = argparse.Namespace(**options)

    def run():
        import byol_tf
        from byol_tf.core import networks
        from byol_tf.data import pipelines

        folder = _extract_cifar(args.data_root, args.cifar_per_class)
        try:
            return _compare_steps(args, byol_tf, networks, pipelines, folder or "demo")
        finally:
            if folder:
                shutil.rmtree(folder.split(os.sep + "train")[0])  # the temporary extraction

    return run


def _compare_steps(args, byol_tf, networks, pipelines, source):
    """Step times on one cached batch and fed by the pipeline, interleaved, best of two."""
    import keras
    import tensorflow as tf

    ds = pipelines.pretrain_dataset(source, args.train_batch, 32, seed=0, with_labels=False)
    encoder = networks.resnet(18, cifar_stem=True)
    model = byol_tf.BYOL(encoder, projection_dim=256, hidden_dim=4096, image_shape=(32, 32, 3))
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    cached = tf.data.Dataset.from_tensors(next(iter(ds))).repeat()
    # Both feeds train without the target's EMA alike: only the pipeline's share is measured.
    warnings.filterwarnings("ignore", message="BYOL.fit without a byol_tf.TargetEMA")
    times = {}
    for name, feed in (
        ("cached", cached),
        ("pipeline", ds),
        ("cached2", cached),
        ("pipeline2", ds),
    ):
        model.fit(feed, steps_per_epoch=args.train_warmup, epochs=1, verbose=0)  # warm-up
        start = time.perf_counter()
        model.fit(feed, steps_per_epoch=args.train_steps, epochs=1, verbose=0)
        times[name] = (time.perf_counter() - start) / args.train_steps
    cached_s = min(times["cached"], times["cached2"])
    pipeline_s = min(times["pipeline"], times["pipeline2"])
    return {
        "source": "cifar10-jpg folder" if source != "demo" else "demo",
        "cached_step_s": cached_s,
        "pipeline_step_s": pipeline_s,
        "ratio": pipeline_s / cached_s,
    }


def _torch_available():
    import importlib.util

    return all(importlib.util.find_spec(m) for m in ("torch", "torchvision", "PIL"))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="augment,pipeline")
    parser.add_argument("--sizes", default="32,224")
    parser.add_argument("--batch", type=int, default=64, help="images per augmentation call")
    parser.add_argument("--calls", type=int, default=3, help="calls per timed round")
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds (median)")
    parser.add_argument("--threads", type=int, default=1, help="threads per contender")
    parser.add_argument("--train_batch", type=int, default=128)
    parser.add_argument("--train_steps", type=int, default=10)
    parser.add_argument("--train_warmup", type=int, default=3)
    parser.add_argument("--cifar_per_class", type=int, default=500)
    parser.add_argument(
        "--data_root",
        default=os.environ.get("BYOL_DATA_ROOT", os.path.join(REPO, "data")),
        help="folder holding cifar10-jpg/cifar10-jpg.tar.gz (env BYOL_DATA_ROOT)",
    )
    harness.add_report_flag(parser, "augment")
    return parser.parse_args(argv)


def _env(threads):
    level = os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")
    return dict(harness.thread_env(threads), TF_CPP_MIN_LOG_LEVEL=level)


def augment_contenders(args, size, names):
    """The part-1 `harness.Contender`s at one size, compared with torchvision."""
    common = {"size": size, "batch": args.batch, "calls": args.calls, "threads": args.threads}
    reference = "torchvision" if "torchvision" in names else None
    return [
        harness.Contender(
            name=name,
            label=f"{name}, {size} px",
            env=_env(args.threads),
            build="augment:build_torchvision" if name == "torchvision" else "augment:build_tf",
            options=common if name == "torchvision" else dict(common, contender=name),
            work=args.batch * args.calls,
            reference=reference,
        )
        for name in names
    ]


def augment_table(args):
    """Part 1: images/s per core at each size; the rows for the report."""
    names = ["tf_xla", "tf_plain"]
    if _torch_available():
        names.append("torchvision")
    else:
        print("torch/torchvision not importable here: torchvision column skipped "
              "(run with .venv-bench/bin/python for it)")  # fmt: skip
    print(f"Two-view augmentation, images/s per core ({args.threads} thread(s) per contender, "
          f"batch {args.batch}, median of {args.repeats} interleaved rounds)")  # fmt: skip
    header = f"{'size':>6} " + " ".join(f"{c:>12}" for c in names)
    print(header + (f" {'XLA/torchvision':>16}" if "torchvision" in names else ""))
    report = {}
    schedule = harness.Schedule(rounds=args.repeats, warmup=2)
    for size in (int(s) for s in args.sizes.split(",")):
        outcomes = harness.run(augment_contenders(args, size, names), schedule, log=_quiet)
        rows = harness.summarise(outcomes)
        rates = {row["name"]: row["rate"] / args.threads if row["rate"] else None for row in rows}
        line = f"{size:>6} " + " ".join(
            f"{rates[c]:12.1f}" if rates[c] is not None else f"{'error':>12}" for c in names
        )
        if rates.get("torchvision") and rates.get("tf_xla"):
            line += f" {rates['tf_xla'] / rates['torchvision']:15.2f}x"
        print(line, flush=True)
        report[size] = {"rows": rows, "outcomes": harness.outcomes_json(outcomes)}
    return report


def _quiet(line):
    if ": failed: " in line:
        print(line)


def pipeline_part(args):
    """Part 2: the step fed by the pipeline against the step on a cached batch."""
    options = {k: v for k, v in vars(args).items() if k != "json_out"}
    contender = harness.Contender("pipeline", "augment:build_pipeline", options, env=_env(2))
    outcome = harness.run([contender], harness.Schedule(rounds=1, warmup=0), log=_quiet)
    result = outcome["pipeline"].rounds[0] if outcome["pipeline"].rounds else {}
    print(f"\nInput pipeline vs cached tensors, BYOL ResNet-18 (CIFAR stem), 32 px, batch "
          f"{args.train_batch}")  # fmt: skip
    if "ratio" in result:
        print(f"  source: {result['source']}")
        print(f"  step on cached batch : {result['cached_step_s'] * 1000:8.1f} ms")
        print(f"  step fed by pipeline : {result['pipeline_step_s'] * 1000:8.1f} ms")
        print(f"  ratio                : {result['ratio']:8.3f}  (goal <= 1.05)")
    else:
        print("  failed: " + harness.failure_line(outcome["pipeline"].error))
    return harness.outcomes_json(outcome)


def main(argv=None):
    args = parse_args(argv)
    start = harness.environment()
    print(harness.describe_environment(start), flush=True)
    parts = args.parts.split(",")
    report = {"settings": vars(args)}
    if "augment" in parts:
        report["augment"] = augment_table(args)
    if "pipeline" in parts:
        report["pipeline"] = pipeline_part(args)
    print(f"load average (1, 5, 15 min) at the end: {harness.load_average()}")
    harness.write_report("augment", report, args.json_out, start_env=start)


if __name__ == "__main__":
    main()
