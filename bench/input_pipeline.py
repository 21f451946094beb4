"""Input pipelines side by side: BYOL view pairs at 224 px from JPEG files, images/s per core.

Three contenders read the same folder of JPEGs and count an image once both of its views exist:

- `tf_device_host_part`: `byol_tf.data.pipelines.pretrain_dataset(folder, batch, 224, seed=0,
  augment_on="device")`, what the host still does when the accelerator augments: crop-aware
  JPEG decoding of the two random-resized crop windows, bicubic resize to 224 px, uint8 crops
  and per-image seeds (the flip, colour jitter, greyscale, blur, solarisation and
  normalisation run later, in the compiled train step).
- `tf_host`: `pretrain_dataset(folder, batch, 224, seed=0)`, everything on the CPU: the same
  decoding, then the XLA-compiled two-view augmentation of each batch.
- `torchvision`: the usual two-view BYOL pipeline with torchvision's v2 transforms, per image:
  `PIL.Image.open(path).convert("RGB")`, then for each view RandomResizedCrop(224, scale
  (0.08, 1), bicubic), RandomHorizontalFlip, ColorJitter(0.4, 0.4, 0.2, 0.1) with p 0.8,
  RandomGrayscale(p 0.2), GaussianBlur(23, sigma (0.1, 2)) with p 1.0 / 0.1 and
  RandomSolarize(128) with p 0.0 / 0.2 (view 1 / view 2), all on the PIL image, then
  ToImage, ToDtype(float32, scale=True) and Normalize(ImageNet mean, std); batches come from a
  `torch.utils.data.DataLoader` with `num_workers=0` (the pipeline runs in the timed process
  itself) and `torch.set_num_threads(N)`, so that N threads are all the cores it can use. PIL
  decodes and resizes on one thread, so at N > 1 it may leave cores idle: the "CPU use" column
  (process CPU seconds / wall seconds, OpenMP threads spinning while they wait included) shows
  how many cores each contender kept busy.

Each (contender, thread count) runs in a fresh process (bench/harness) with TensorFlow or
PyTorch limited to N threads (`--threads`, default 1 and 2; TF intra-/inter-op pools and
tf.data's private pool, torch's intra-/inter-op pools, OMP/MKL/OpenBLAS). It warms up
(`--warmup` batches: XLA compilation, file cache), pulls batches until one has to be waited for
(tf.data's buffers, filled during the compilation, are then empty, as in steady state) and times
the next `--batches` batches. A fresh process per run rather than a long-lived worker because
tf.data keeps prefetching while a worker waits, which would take cores from the contender being
timed. The runs are interleaved, A B C per thread count, over `--rounds` rounds so that machine
noise hits all alike; the table gives median images/s, images/s per core (÷ N), and the ratio to
torchvision at the same N beside the goals (device host part ≥ 6× and host mode ≥ 2× torchvision
per core). The machine's load average is printed before and after; a loaded machine lowers all
figures. Then: how many cores would feed one accelerator at the step rate of the paper's
ResNet-50 run, at the 1-thread rates of the two byol_tf contenders.

    python bench/input_pipeline.py                       # 256 generated Imagenette-like JPEGs
    python bench/input_pipeline.py --folder ~/imagenette2/train --rounds 5 --json_out out.json
    python bench/input_pipeline.py --num_images 16 --batches 1 --batch_size 4 --rounds 1  # smoke

The folder is `root/<class>/*.jpg` or flat (see `byol_tf.data`). Without `--folder`, random
natural-looking JPEGs (bench/jpegs.py; about the size of Imagenette's full-size images) are
written to a temporary folder. torchvision comes from `.venv-bench` (bench/setup_env.sh); its
process never imports TensorFlow (bench/README.md).
"""

import argparse
import os
import statistics
import sys
import tempfile
import time

import harness
from jpegs import image_paths, write_in_process

IMAGENET_IMAGES = 1_281_167
# Paper-implied rate: the official README reports 74.0-74.5 % top-1 (the 1000-epoch result)
# "after about 8h of training using 512 Cloud TPU v3" (deepmind-research/byol/README.md;
# Grill et al. 2020 §3.3: batch 4096 over 512 TPU v3 cores).
PAPER_EPOCHS, PAPER_HOURS, PAPER_CORES = 1000, 8.0, 512
CONTENDERS = ("tf_device_host_part", "tf_host", "torchvision")
# Goals: images/s per core as a multiple of torchvision's at the same thread count.
GOALS = {"tf_device_host_part": 6.0, "tf_host": 2.0}
# A batch taken from a filled buffer comes back in under a millisecond; one that is waited for
# was still being made, so the buffers were empty (see `_drain`).
DRAINED_WAIT_S, MAX_DRAIN_BATCHES = 0.005, 64
# ImageNet statistics (byol_tf.views.image_ops.IMAGENET_MEAN / _STD), used for folders.
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def paper_rates():
    """{label: images/s one accelerator must be fed}; see the module docstring."""
    per_core = PAPER_EPOCHS * IMAGENET_IMAGES / (PAPER_HOURS * 3600) / PAPER_CORES
    return {
        "one TPU v3 core (paper: 1000 epochs in ~8 h on 512 cores)": per_core,
        "one A100-class GPU (assumption: = one TPU v3 chip, 2 cores)": 2 * per_core,
        "one H100-class GPU (assumption: 2x an A100 on ResNet-50)": 4 * per_core,
    }


def tf_batches(folder, threads, batch_size, image_size, augment_on):
    """Endless batches of `pretrain_dataset`, with TensorFlow on `threads` threads.

    Returns:
        (iterator, {library: version}).
    """
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    from byol_tf.data import pipelines

    options = tf.data.Options()
    options.threading.private_threadpool_size = threads
    options.threading.max_intra_op_parallelism = 1
    ds = pipelines.pretrain_dataset(folder, batch_size, image_size, seed=0, augment_on=augment_on)
    return iter(ds.with_options(options)), {"tensorflow": tf.__version__}


def torchvision_view(image_size, blur_prob, solarize_prob):
    """One view of torchvision's two-view BYOL augmentation (see the module docstring)."""
    import torch
    from torchvision.transforms import v2

    return v2.Compose([
        v2.RandomResizedCrop(
            image_size, scale=(0.08, 1.0), interpolation=v2.InterpolationMode.BICUBIC
        ),
        v2.RandomHorizontalFlip(),
        v2.RandomApply([v2.ColorJitter(0.4, 0.4, 0.2, 0.1)], p=0.8),
        v2.RandomGrayscale(p=0.2),
        v2.RandomApply([v2.GaussianBlur(23, sigma=(0.1, 2.0))], p=blur_prob),
        v2.RandomSolarize(threshold=128, p=solarize_prob),  # 128: on PIL (uint8) pixels
        v2.ToImage(),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])  # fmt: skip


class TwoViewFiles:
    """Map-style dataset: image i of `paths`, decoded by PIL, as `(view1, view2)` tensors."""

    def __init__(self, paths, view1, view2):
        self.paths = paths
        self.view1 = view1
        self.view2 = view2

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, index):
        from PIL import Image

        with Image.open(self.paths[index]) as file:
            image = file.convert("RGB")
        return self.view1(image), self.view2(image)


def torchvision_batches(folder, threads, batch_size, image_size):
    """Endless `(view1, view2)` batches of torchvision's pipeline, with PyTorch on `threads`
    threads and no DataLoader workers.

    Returns:
        (iterator, {library: version}).
    """
    import PIL
    import torch
    import torchvision

    torch.set_num_threads(threads)
    torch.set_num_interop_threads(threads)
    torch.manual_seed(0)
    dataset = TwoViewFiles(
        image_paths(folder),
        torchvision_view(image_size, blur_prob=1.0, solarize_prob=0.0),
        torchvision_view(image_size, blur_prob=0.1, solarize_prob=0.2),
    )
    loader = torch.utils.data.DataLoader(
        dataset, batch_size, shuffle=True, num_workers=0, drop_last=True,
        generator=torch.Generator().manual_seed(0),
    )  # fmt: skip

    def endless():
        while True:
            yield from loader

    versions = {"torch": torch.__version__, "torchvision": torchvision.__version__}
    return endless(), dict(versions, PIL=PIL.__version__)


def _drain(iterator):
    """Pulls batches until one has to be waited for, so that the timing starts with tf.data's
    buffers empty, as in steady state (they fill during the warm-up's XLA compilation, and
    would hand the first timed batches over for free); the number of batches pulled."""
    for pulled in range(1, MAX_DRAIN_BATCHES + 1):
        before = time.perf_counter()
        next(iterator)
        if time.perf_counter() - before >= DRAINED_WAIT_S:
            return pulled
    return MAX_DRAIN_BATCHES


def build(contender, folder, threads, batch_size, image_size, warmup, batches):
    """One contender in this process (see the module docstring): its pipeline, warmed up and
    drained; the round times the next `batches` batches.

    Returns:
        A `harness.Workload` whose round gives "seconds" (the timed batches), "cpu_seconds",
        "images_per_s", "cpu_use" (CPU seconds per wall second), "batch_seconds" (the wait
        for each timed batch) and "drain_batches" (untimed batches pulled after the warm-up).
    """
    if contender == "torchvision":
        iterator, versions = torchvision_batches(folder, threads, batch_size, image_size)
    else:
        augment_on = "device" if contender == "tf_device_host_part" else "host"
        iterator, versions = tf_batches(folder, threads, batch_size, image_size, augment_on)
    for _ in range(warmup):
        next(iterator)
    drained = _drain(iterator)

    def run():
        waits = []
        start, cpu_start = time.perf_counter(), time.process_time()
        for _ in range(batches):
            before = time.perf_counter()
            next(iterator)  # eager TF tensors and torch tensors are computed when returned
            waits.append(time.perf_counter() - before)
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
        return {
            "seconds": seconds, "cpu_seconds": cpu, "images_per_s": batches * batch_size / seconds,
            "cpu_use": cpu / seconds, "batch_seconds": waits, "drain_batches": drained,
        }  # fmt: skip

    return harness.Workload(run=run, info={"versions": versions})


def contenders(args):
    """The `harness.Contender`s: every contender at every thread count, torchvision at the
    same count as reference, each limited to its threads before its interpreter starts."""
    out = []
    for threads in args.threads:
        env = dict(harness.thread_env(threads), CUDA_VISIBLE_DEVICES="")
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"))
        for name in args.contenders:
            options = {k: getattr(args, k) for k in ("folder", "batch_size", "image_size")}
            options.update(contender=name, threads=threads, warmup=args.warmup,
                           batches=args.batches)  # fmt: skip
            out.append(harness.Contender(
                name=f"{name}@{threads}", build="input_pipeline:build", options=options,
                label=f"{name}, {threads} thread(s)", env=env,
                work=args.batches * args.batch_size, reference=f"torchvision@{threads}",
            ))  # fmt: skip
    return out


def summarise(outcomes, contenders, thread_counts):
    """Rows of the table: medians over rounds and the ratios to torchvision.

    Args:
        outcomes: `harness.run`'s result for `contenders(args)`.
        contenders: contender names, in table order.
        thread_counts: thread counts, in table order.

    Returns:
        A list of dicts, one per (threads, contender) that measured at least one round.
    """
    rows = []
    for threads in thread_counts:
        rounds = {name: outcomes[f"{name}@{threads}"].rounds for name in contenders}
        medians = {
            name: statistics.median(r["images_per_s"] for r in rounds[name])
            for name in contenders if rounds[name]
        }  # fmt: skip
        for name, median in medians.items():
            ratio = median / medians["torchvision"] if "torchvision" in medians else None
            goal = GOALS.get(name) if ratio is not None else None
            rows.append({
                "contender": name,
                "threads": threads,
                "images_per_s": median,
                "images_per_s_per_core": median / threads,
                "cpu_use": statistics.median(r["cpu_use"] for r in rounds[name]),
                "images_per_s_rounds": [r["images_per_s"] for r in rounds[name]],
                "ratio_to_torchvision": ratio,
                "goal_ratio": goal,
                "goal_met": None if goal is None else ratio >= goal,
            })  # fmt: skip
    return rows


def cores_per_accelerator(rows):
    """Cores that feed one accelerator at the paper rates, at each TF contender's per-core rate
    with 1 thread (or its best per-core rate when 1 thread was not measured)."""
    per_core = {}
    for name in ("tf_host", "tf_device_host_part"):
        own = [row for row in rows if row["contender"] == name]
        one = [row for row in own if row["threads"] == 1] or own
        if one:
            per_core[name] = max(row["images_per_s_per_core"] for row in one)
    return [
        {"accelerator": label, "images_per_s": target}
        | {f"cores_{name}": target / rate for name, rate in per_core.items()}
        for label, target in paper_rates().items()
    ]


def _goal_text(row):
    if row["goal_met"] is None:
        return ""
    return f"≥ {row['goal_ratio']:g}×: {'met' if row['goal_met'] else 'not met'}"


def markdown(report):
    """The report as markdown tables."""
    settings, rows = report["settings"], report["rows"]
    lines = [
        f"Two {settings['image_size']} px views per image from JPEG files; batch "
        f"{settings['batch_size']}, {settings['warmup']} warm-up and {settings['batches']} timed "
        f"batches per run, median of {settings['rounds']} interleaved rounds; "
        f"{report['machine_cores']} cores on this machine.",
        "",
        "| contender | threads | images/s | images/s per core | CPU use (cores) "
        "| per core vs torchvision | goal |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        ratio = row["ratio_to_torchvision"]
        lines.append(
            f"| {row['contender']} | {row['threads']} | {row['images_per_s']:.1f} "
            f"| {row['images_per_s_per_core']:.1f} | {row['cpu_use']:.2f} "
            f"| {'' if ratio is None else f'{ratio:.2f}×'} | {_goal_text(row)} |"
        )
    names = [key[len("cores_") :] for key in report["cores_per_accelerator"][0] if "cores_" in key]
    if names:
        lines += ["", "Cores needed per accelerator, at the 1-thread rates:", ""]
        lines.append("| accelerator fed at | images/s | " + " | ".join(names) + " |")
        lines.append("|---|---|" + "---|" * len(names))
        for entry in report["cores_per_accelerator"]:
            cores = " | ".join(f"{entry['cores_' + name]:.1f}" for name in names)
            lines.append(f"| {entry['accelerator']} | {entry['images_per_s']:.0f} | {cores} |")
    return "\n".join(lines)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", help="image folder; default: generated JPEGs")
    parser.add_argument("--num_images", type=int, default=256, help="generated images")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--warmup", type=int, default=3, help="untimed batches per run")
    parser.add_argument("--batches", type=int, default=8, help="timed batches per run")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--image_size", type=int, default=224)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="thread counts")
    parser.add_argument("--contenders", nargs="+", choices=CONTENDERS, default=list(CONTENDERS))
    harness.add_report_flag(parser, "input_pipeline")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    start = harness.environment()
    print(harness.describe_environment(start), flush=True)
    schedule = harness.Schedule(rounds=args.rounds, warmup=0, fresh_process_per_round=True)
    with tempfile.TemporaryDirectory(prefix="byol_bench_jpeg_") as tmp:
        if not args.folder:
            args.folder = os.path.join(tmp, "images")
            write_in_process(args.folder, args.num_images)
        outcomes = harness.run(contenders(args), schedule)
    failed = [o for o in outcomes.values() if o.error]
    rows = summarise(outcomes, args.contenders, args.threads)
    versions = {}
    for outcome in outcomes.values():
        versions.update(outcome.info.get("versions", {}))
    settings = {k: getattr(args, k) for k in ("batch_size", "warmup", "batches", "rounds")}
    report = {
        "settings": dict(settings, image_size=args.image_size, folder=args.folder),
        "machine_cores": os.cpu_count(),
        "versions": versions,
        "rows": rows,
        "cores_per_accelerator": cores_per_accelerator(rows),
        "outcomes": harness.outcomes_json(outcomes),
    }
    print(f"load average at the end (1, 5, 15 min): {harness.load_average()}")
    print("versions: " + ", ".join(f"{k} {v}" for k, v in sorted(versions.items())))
    print(markdown(report))
    harness.write_report("input_pipeline", report, args.json_out, start_env=start)
    if failed:
        sys.exit(f"input_pipeline.py: {len(failed)} run(s) failed: {failed[0].contender.text}")


if __name__ == "__main__":
    main()
