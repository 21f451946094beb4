"""The whole BYOL training loop on one accelerator: JPEG files → tf.data → `fit`, host against
device augmentation, images/s and GPU utilisation.

What it measures: images/s of byol_tf's complete pretraining loop, as train.py runs it — the
`byol_tf.data.pretrain_dataset` pipeline reading JPEG files and `BYOL.fit` train steps with the
`TargetEMA` callback — once with `augment_on="host"` (the host decodes, crops and augments; the
step gets the views) and once with `augment_on="device"` (the host decodes and crops; the
compiled train step draws the views with `byol_tf.data.view_augmentation`). An image counts once
for its two views. The model is the paper's: ResNet-50 (`--encoder_depth`) at 224 px
(`--image_size`), heads 4096 → 256, the official 300-epoch preset of `byol_tf.recipes.paper`
(LARS, zero-initialised residual γ, bias-free head outputs, the clamped crop sampler), the
train step compiled with XLA (`jit_compile=True`, `steps_per_execution=1`) under the Keras
policy "mixed_float16" when a GPU is visible (`--mixed_precision`, `--policy`; float32 on a
CPU, where float16 is slow).

How: each mode runs in a fresh child process (`--mode host` / `--mode device`), so that the
modes share no memory, caches or thread pools. A child builds the model and the pipeline and
calls `fit` for `--warmup_steps` + `--steps` steps. A callback, after `TargetEMA`, records the
wall time at the end of each train batch; Keras hands it the step's loss as a Python number (a
device-to-host copy, so the step has finished), and at the last warm-up step and the last timed
step it also reads a target weight to the host, so that the EMA update of that step has
finished too. images/s = batch × steps / (time of the last timed batch end − time of the last
warm-up batch end); the step time is the median of the timed intervals. During the timed steps
a thread polls `nvidia-smi --query-gpu=utilization.gpu,memory.used,name` every 0.5 s (mean
utilisation, highest memory use; "n/a" without nvidia-smi), and the process's CPU time over
the same wall time gives the host's CPU use in cores. TensorFlow's peak GPU allocation, the
device name, the host's cores, the load average before and after, and the TF and Keras versions
are recorded. tf.data fills its buffers during the first step's XLA compilation and hands them
over quickly afterwards: the warm-up steps consume them, and the script warns when the second
half of the timed steps ran more than 15 % off the whole window's rate (raise `--warmup_steps`
or `--steps` then).

On a machine with one GPU (H100 / H200 class), from the repository root:

    PYTHONPATH=. python bench/gpu_train_loop.py --json_out bench/out/gpu_train_loop.json

The defaults: 384 generated JPEGs (natural-looking, sides 300-500 px, quality 90, as in
bench/input_pipeline.py), batch 128, 10 warm-up and 60 timed steps per mode, both modes.
Expected runtime (an estimate until a GPU run is recorded): 4-6 minutes in all — 20-30 s
writing the JPEGs, then per mode 1-2 minutes of TensorFlow start-up and XLA compilation
(ResNet-50 forward and backward, with GPU autotuning) and under a minute of steps (60 × 128
images at a few hundred images/s when the host's cores are the limit). Each mode is stopped
after `--mode_timeout` seconds (default 270), so that two modes stay under ten minutes; a mode
that fails or times out is reported as failed and the other still runs (exit status 1).
Other forms:

    PYTHONPATH=. python bench/gpu_train_loop.py --folder ~/imagenette2/train --steps 100
    PYTHONPATH=. python bench/gpu_train_loop.py --encoder_depth 18 --image_size 32 \\
        --batch_size 4 --num_images 16 --warmup_steps 1 --steps 2   # CPU smoke run

The folder is `root/<class>/*.jpg` or flat (see `byol_tf.data`). The parent process never
imports TensorFlow; the JPEGs are written by a child with the GPUs hidden.
"""

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

from input_pipeline import image_paths, write_images

MODES = ("host", "device")
POLICIES = ("mixed_float16", "mixed_bfloat16")
DEPTHS = (18, 34, 50)
# The recipe's schedules are laid out for a paper-length ImageNet run (they do not change the
# step's cost): the official 300-epoch preset (configs/imagenet.flags).
PAPER_EPOCHS, IMAGENET_IMAGES = 300, 1_281_167
PROJECTION_DIM, HIDDEN_DIM = 256, 4096
NVIDIA_SMI_QUERY = (
    "--query-gpu=utilization.gpu,memory.used,name",
    "--format=csv,noheader,nounits",
)
POLL_SECONDS = 0.5
# Second half of the timed steps against the whole window: beyond this, say it was not steady.
STEADY_TOLERANCE = 0.15
PROG = "gpu_train_loop.py"


def nvidia_smi_command():
    """The nvidia-smi query for the GPU this process uses (the first of CUDA_VISIBLE_DEVICES,
    else GPU 0), or None when nvidia-smi is not installed or the GPUs are hidden."""
    path = shutil.which("nvidia-smi")
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    first = "0" if visible is None else visible.split(",")[0].strip()
    if path is None or first in ("", "-1"):
        return None
    return [path, *NVIDIA_SMI_QUERY, f"--id={first}"]


def query_gpu(command):
    """`(utilisation %, memory used MiB, name)` from one nvidia-smi call, or None."""
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=5)
        utilisation, memory, name = result.stdout.strip().splitlines()[0].split(",", 2)
        return float(utilisation), float(memory), name.strip()
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None


class GPUMonitor:
    """Polls nvidia-smi every `POLL_SECONDS` in a background thread between `start` and `stop`."""

    def __init__(self):
        self.command = nvidia_smi_command()
        self.samples = []
        self._stop = threading.Event()
        self._thread = None

    def start(self):
        if self.command is not None:
            self._thread = threading.Thread(target=self._poll, daemon=True)
            self._thread.start()

    def _poll(self):
        start, polls = time.perf_counter(), 0
        while not self._stop.is_set():
            sample = query_gpu(self.command)
            if sample is not None:
                self.samples.append(sample)
            polls += 1
            self._stop.wait(max(0.0, start + polls * POLL_SECONDS - time.perf_counter()))

    def stop(self):
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def summary(self):
        """Mean utilisation and highest memory use over the samples ("n/a" without any)."""
        if not self.samples:
            return {"gpu_util_percent": "n/a", "gpu_memory_used_mib": "n/a", "gpu_samples": 0}
        return {
            "gpu_util_percent": statistics.mean(s[0] for s in self.samples),
            "gpu_memory_used_mib": max(s[1] for s in self.samples),
            "gpu_samples": len(self.samples),
        }


def cpu_model():
    """The host CPU's model name (from /proc/cpuinfo where there is one)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or "unknown CPU"


def device_name(tf, gpus):
    """The accelerator's name: TensorFlow's device details, else nvidia-smi's, else the CPU's."""
    if gpus:
        name = tf.config.experimental.get_device_details(gpus[0]).get("device_name")
        command = nvidia_smi_command()
        sample = query_gpu(command) if command else None
        return name or (sample[2] if sample else "GPU")
    return f"CPU: {cpu_model()}"


def load_average():
    try:
        return list(os.getloadavg())
    except OSError:
        return None


def step_clock(keras, warmup_steps, steps, monitor):
    """A callback recording the wall time at the end of the last warm-up step and of each timed
    step (see the module docstring); place it after `TargetEMA`."""

    class StepClock(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.first, self.last = warmup_steps - 1, warmup_steps + steps - 1
            self.times = []
            self.cpu = {}
            self.load = {}

        def on_train_batch_end(self, batch, logs=None):
            if batch < self.first:
                return
            float(logs["loss"])  # a Python number: the step's outputs reached the host
            if batch in (self.first, self.last):
                # TargetEMA (the callback before this one) dispatched the step's target update
                # without waiting for it: wait here, so the window holds exactly `steps` updates.
                self.model.target_projector.weights[-1].numpy()
            self.times.append(time.perf_counter())
            if batch == self.first:
                self.cpu["start"], self.load["start"] = time.process_time(), load_average()
                monitor.start()
            elif batch == self.last:
                self.cpu["end"], self.load["end"] = time.process_time(), load_average()
                monitor.stop()

    return StepClock()


def measure(args):
    """Builds the model and pipeline of `args.mode` in this process, runs `fit` and times it.

    Returns:
        The mode's result dict (see `summarise_steps` and the module docstring).
    """
    started = time.perf_counter()
    import keras
    import tensorflow as tf

    from byol_tf import BYOL, data, networks, recipes

    gpus = tf.config.list_physical_devices("GPU")
    mixed = bool(gpus) if args.mixed_precision is None else args.mixed_precision
    policy = args.policy if mixed else "float32"
    keras.utils.set_random_seed(0)
    keras.mixed_precision.set_global_policy(policy)
    recipe = recipes.paper(PAPER_EPOCHS)
    size, batch_size = args.image_size, args.batch_size
    overrides = {"crop_sampler": recipe.crop_sampler}
    dataset = data.pretrain_dataset(
        args.folder, batch_size, size, seed=0, augment_overrides=overrides, augment_on=args.mode
    )
    augmentation = None
    if args.mode == "device":
        augmentation = data.view_augmentation(args.folder, size, augment_overrides=overrides)
    encoder = networks.resnet(
        args.encoder_depth,
        input_shape=(size, size, 3),
        zero_init_residual=recipe.zero_init_residual,
        name="encoder",
    )
    model = BYOL(
        encoder,
        PROJECTION_DIM,
        HIDDEN_DIM,
        image_shape=(size, size, 3),
        head_output_bias=recipe.head_output_bias,
        augmentation=augmentation,
    )
    steps_per_epoch = IMAGENET_IMAGES // batch_size
    plan = recipes.build(recipe, PAPER_EPOCHS * steps_per_epoch, steps_per_epoch, batch_size)
    model.compile(optimizer=plan.optimizer, jit_compile=True, steps_per_execution=1)
    plan.optimizer.build(model.trainable_variables)
    monitor = GPUMonitor()
    clock = step_clock(keras, args.warmup_steps, args.steps, monitor)
    history = model.fit(
        dataset,
        epochs=1,
        steps_per_epoch=args.warmup_steps + args.steps,
        callbacks=[plan.target_ema, clock],
        verbose=0,
    )
    result = summarise_steps(clock.times, batch_size)
    seconds = clock.times[-1] - clock.times[0]
    peak = tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2**20 if gpus else "n/a"
    result.update(monitor.summary())
    result.update(
        mode=args.mode,
        host_cpu_use=(clock.cpu["end"] - clock.cpu["start"]) / seconds,
        load_average=clock.load,
        tf_peak_gpu_memory_mib=peak,
        seconds_to_first_timed_step=clock.times[0] - started,
        final_loss=history.history["loss"][-1],
        device_name=device_name(tf, gpus),
        policy=policy,
        jit_compile=True,
        versions={"tensorflow": tf.__version__, "keras": keras.__version__},
    )
    return result


def summarise_steps(times, batch_size):
    """images/s over the timed window and its second half, and step times, from the wall times
    at the end of the last warm-up step and of each timed step."""
    intervals = [b - a for a, b in zip(times, times[1:], strict=False)]
    half = len(intervals) // 2
    second_half = intervals[half:]
    return {
        "images_per_s": batch_size * len(intervals) / (times[-1] - times[0]),
        "images_per_s_second_half": batch_size * len(second_half) / sum(second_half),
        "step_ms_median": 1000 * statistics.median(intervals),
        "step_ms": [1000 * s for s in intervals],
    }


def child_env(hide_gpus=False):
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # Grow GPU memory as needed, so that nvidia-smi's memory.used shows what the run uses.
    env.setdefault("TF_FORCE_GPU_ALLOW_GROWTH", "true")
    if hide_gpus:
        env["CUDA_VISIBLE_DEVICES"] = ""
    return env


def generate_images(folder, count, timeout):
    """Writes `count` JPEGs into `folder` in a child process that sees no GPU."""
    command = [sys.executable, __file__, f"--write_images_to={folder}", f"--num_images={count}"]
    result = subprocess.run(
        command, env=child_env(hide_gpus=True), capture_output=True, text=True, timeout=timeout
    )
    if result.returncode:
        sys.exit(f"{PROG}: writing the JPEGs failed:\n{result.stderr[-3000:]}")


def run_child(args, mode):
    """`measure` of `mode` in a fresh process; its result dict, or {"mode", "error"}."""
    command = [sys.executable, __file__, f"--mode={mode}"]
    for flag in ("folder", "batch_size", "image_size", "encoder_depth", "warmup_steps", "steps"):
        command.append(f"--{flag}={getattr(args, flag)}")
    command.append(f"--policy={args.policy}")
    if args.mixed_precision is not None:
        command.append("--mixed_precision" if args.mixed_precision else "--no_mixed_precision")
    start = time.perf_counter()
    try:
        result = subprocess.run(
            command, env=child_env(), capture_output=True, text=True, timeout=args.mode_timeout
        )
    except subprocess.TimeoutExpired:
        return {"mode": mode, "error": f"timed out after {args.mode_timeout} s (--mode_timeout)"}
    wall = time.perf_counter() - start
    lines = result.stdout.strip().splitlines()
    if result.returncode or not lines:
        return {"mode": mode, "error": result.stderr[-3000:] or f"exit status {result.returncode}"}
    return dict(json.loads(lines[-1]), child_wall_s=wall)


def failure_line(stderr):
    """One line about why a child failed: its exception, with the most telling line of a
    message that goes on (TensorFlow's "Graph execution error:")."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    raised = [i for i, line in enumerate(lines) if re.match(r"[\w.]+(Error|Exception)\b", line)]
    if not raised:
        return lines[-1] if lines else "no output"
    line = lines[raised[-1]]
    if line.endswith(":"):
        rest = lines[raised[-1] + 1 :]
        detail = next((x for x in rest if re.search(r"failed|error", x, re.I)), "")
        line = f"{line} {detail}"
    return line[:400]


def _number(value, spec):
    return format(value, spec) if isinstance(value, (int, float)) else str(value)


def table(results):
    """The results as a markdown table, one row per mode."""
    lines = [
        "| mode | images/s | step ms (median) | GPU util % (mean) | GPU memory MiB (max) "
        "| host CPU use (cores) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for result in results:
        if "error" in result:
            lines.append(f"| {result['mode']} | failed | | | | |")
            continue
        lines.append(
            f"| {result['mode']} | {result['images_per_s']:.1f} "
            f"| {result['step_ms_median']:.1f} | {_number(result['gpu_util_percent'], '.0f')} "
            f"| {_number(result['gpu_memory_used_mib'], '.0f')} "
            f"| {result['host_cpu_use']:.2f} |"
        )
    return "\n".join(lines)


def steadiness_notes(results):
    """One line per mode whose second half of timed steps ran off the whole window's rate."""
    notes = []
    for result in results:
        if "error" in result:
            continue
        whole, second = result["images_per_s"], result["images_per_s_second_half"]
        if abs(second / whole - 1) > STEADY_TOLERANCE:
            notes.append(
                f"note: {result['mode']} mode: the second half of the timed steps ran at "
                f"{second:.1f} images/s against {whole:.1f} over all of them; not steady "
                "(buffers filled during the compilation?): raise --warmup_steps or --steps"
            )
    return notes


def positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (no usage block)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def parse_args(argv=None):
    parser = _Parser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument("--folder", help="JPEG folder; default: generated JPEGs in a temp dir")
    parser.add_argument("--num_images", type=positive_int, default=384, help="generated JPEGs")
    parser.add_argument("--batch_size", type=positive_int, default=128, help="images per step")
    parser.add_argument("--image_size", type=positive_int, default=224, help="view side, px")
    parser.add_argument("--encoder_depth", type=int, choices=DEPTHS, default=50, help="ResNet")
    parser.add_argument("--warmup_steps", type=positive_int, default=10, help="untimed steps")
    parser.add_argument("--steps", type=positive_int, default=60, help="timed steps per mode")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument(
        "--mixed_precision",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="Keras mixed precision (--policy); default: on when a GPU is visible",
    )
    parser.add_argument("--policy", choices=POLICIES, default="mixed_float16")
    parser.add_argument(
        "--mode_timeout", type=positive_int, default=270, help="seconds allowed per mode"
    )
    parser.add_argument("--json_out", help="write the report as JSON to this path")
    parser.add_argument("--mode", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--write_images_to", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.steps < 2:
        parser.error("--steps must be at least 2 (a median and a second half)")
    if args.mode or args.write_images_to:
        return args
    if args.folder:
        args.folder = os.path.abspath(os.path.expanduser(args.folder))
        if not os.path.isdir(args.folder):
            parser.error(f"--folder {args.folder} is not a directory")
        count = len(image_paths(args.folder))
        if count < args.batch_size:
            parser.error(
                f"--folder {args.folder} has {count} images, fewer than "
                f"--batch_size={args.batch_size}"
            )
    elif args.num_images < args.batch_size:
        parser.error(f"--num_images={args.num_images} is below --batch_size={args.batch_size}")
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.write_images_to:
        return write_images(args.write_images_to, args.num_images)
    if args.mode:
        return print(json.dumps(measure(args)))
    load_start = load_average()
    print(f"load average at the start (1, 5, 15 min): {load_start}", flush=True)
    with tempfile.TemporaryDirectory(prefix="byol_bench_jpeg_") as tmp:
        generated = not args.folder
        if generated:
            args.folder = os.path.join(tmp, "images")
            before = time.perf_counter()
            generate_images(args.folder, args.num_images, args.mode_timeout)
            print(
                f"wrote {args.num_images} JPEGs in {time.perf_counter() - before:.0f} s", flush=True
            )
        results = []
        for mode in args.modes:
            results.append(run_child(args, mode))
            done = results[-1]
            if "error" in done:
                why = failure_line(done["error"])
                print(f"{PROG}: {mode} mode failed: {why}", file=sys.stderr, flush=True)
            else:
                print(
                    f"{mode}: {done['images_per_s']:.1f} images/s "
                    f"({done['child_wall_s']:.0f} s in all)",
                    flush=True,
                )
    measured = {r["mode"]: r for r in results if "error" not in r}
    ratio = None
    if "host" in measured and "device" in measured:
        ratio = measured["device"]["images_per_s"] / measured["host"]["images_per_s"]
    first = next(iter(measured.values()), {})
    settings = {
        key: getattr(args, key)
        for key in ("batch_size", "image_size", "encoder_depth", "warmup_steps", "steps")
    }
    settings.update(
        folder=None if generated else args.folder,
        num_images=args.num_images if generated else len(image_paths(args.folder)),
        policy=first.get("policy"),
        jit_compile=True,
        steps_per_execution=1,
    )
    cores = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    report = {
        "settings": settings,
        "device_name": first.get("device_name"),
        "versions": first.get("versions"),
        "host": {
            "cpu_count": os.cpu_count(),
            "usable_cores": None if cores is None else len(cores),
            "cpu": cpu_model(),
            "load_average": {"start": load_start, "end": load_average()},
        },
        "modes": results,
        "ratio_device_to_host": ratio,
    }
    host = report["host"]
    print(f"load average at the end (1, 5, 15 min): {host['load_average']['end']}")
    print(
        f"device: {report['device_name']}; host: {host['cpu']}, {host['cpu_count']} cores; "
        + ", ".join(f"{k} {v}" for k, v in (report["versions"] or {}).items())
    )
    print(
        f"\nResNet-{args.encoder_depth}, {args.image_size} px, batch {args.batch_size}, policy "
        f"{settings['policy'] or 'n/a'}, XLA; {args.warmup_steps} warm-up and {args.steps} "
        "timed steps per mode, each mode in its own process; an image counts once for its two "
        "views.\n"
    )
    print(table(results))
    for note in steadiness_notes(results):
        print(note)
    if ratio is not None:
        print(f"\ndevice / host images/s in this run: {ratio:.2f}×")
    if args.json_out:
        os.makedirs(os.path.dirname(os.path.abspath(args.json_out)), exist_ok=True)
        with open(args.json_out, "w") as f:
            json.dump(report, f, indent=2)
    if len(measured) < len(results):
        sys.exit(1)


if __name__ == "__main__":
    main()
