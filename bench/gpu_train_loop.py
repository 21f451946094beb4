"""The whole BYOL training loop on one accelerator: JPEG files → tf.data → `fit`, host against
device augmentation, images/s and GPU utilisation.

What it measures: images/s of byol_tf's complete pretraining loop, as train.py runs it — the
`byol_tf.data.pretrain_dataset` pipeline reading JPEG files and `BYOL.fit` train steps with the
`TargetEMA` callback — once with `augment_on="host"` (the host decodes, crops and augments; the
step gets the views) and once with `augment_on="device"` (the host decodes and crops; the
compiled train step draws the views with `byol_tf.data.train_step_augmentation`). An image
counts once for its two views. The model is the paper's: ResNet-50 (`--encoder_depth`) at 224 px
(`--image_size`), heads 4096 → 256, the official 300-epoch preset of
`byol_tf.training.recipes.paper`
(LARS, zero-initialised residual γ, bias-free head outputs, the clamped crop sampler), the
train step compiled with XLA (`jit_compile=True`, `steps_per_execution=1`) under the Keras
policy "mixed_float16" when a GPU is visible (`--mixed_precision`, `--policy`; float32 on a
CPU, where float16 is slow).

How: each mode runs in a fresh process (bench/harness), so that the modes share no memory,
caches or thread pools; with `--rounds N` the modes alternate, host device host device ..., a
new process each time, and the figures are the median round's. A process builds the model and
the pipeline and calls `fit` for `--warmup_steps` + `--steps` steps. A callback, after
`TargetEMA`, records the wall time at the end of each train batch; Keras hands it the step's
loss as a Python number (a device-to-host copy, so the step has finished), and at the last
warm-up step and the last timed step it also reads a target weight to the host, so that the EMA
update of that step has finished too. images/s = batch × steps / (time of the last timed batch
end − time of the last warm-up batch end); the step time is the median of the timed intervals.
During the timed steps a thread polls `nvidia-smi --query-gpu=utilization.gpu,memory.used,name`
every 0.5 s (mean utilisation, highest memory use; "n/a" without nvidia-smi), and the process's
CPU time over the same wall time gives the host's CPU use in cores. TensorFlow's peak GPU
allocation, the device name, the host's CPU and cores, the load average around every round, and
the versions are recorded (bench/results/ by default). tf.data fills its buffers during the
first step's XLA compilation and hands them over quickly afterwards: the warm-up steps consume
them, and the script warns when the second half of the timed steps ran more than 15 % off the
whole window's rate (raise `--warmup_steps` or `--steps` then).

On a machine with one GPU (H100 / H200 class), from the repository root:

    python bench/gpu_train_loop.py

The defaults: 384 generated JPEGs (bench/jpegs.py), batch 128, 10 warm-up and 60 timed steps
per mode, both modes: 4-6 minutes in all on an H100 / H200 class machine (an estimate until a
GPU run is recorded; bench/README.md). Each mode is stopped after `--mode_timeout` seconds
(default 270); a mode that fails or times out is reported as failed and the other still runs
(exit status 1). Other forms:

    python bench/gpu_train_loop.py --folder ~/imagenette2/train --steps 100
    python bench/gpu_train_loop.py --encoder_depth 18 --image_size 32 \\
        --batch_size 4 --num_images 16 --warmup_steps 1 --steps 2   # CPU smoke run

The folder is `root/<class>/*.jpg` or flat (see `byol_tf.data`). The benchmark's own process
never imports TensorFlow; the JPEGs are written by another with the GPUs hidden.
"""

import argparse
import os
import sys
import tempfile
import time

import harness
from jpegs import image_paths, write_in_process

MODES = ("host", "device")
POLICIES = ("mixed_float16", "mixed_bfloat16")
DEPTHS = (18, 34, 50)
# Second half of the timed steps against the whole window: beyond this, say it was not steady.
STEADY_TOLERANCE = 0.15
PROG = "gpu_train_loop.py"
SETTINGS = ("batch_size", "image_size", "encoder_depth", "warmup_steps", "steps")
failure_line = harness.failure_line


def child_env():
    env = {"TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")}
    # Grow GPU memory as needed, so that nvidia-smi's memory.used shows what the run uses.
    env["TF_FORCE_GPU_ALLOW_GROWTH"] = os.environ.get("TF_FORCE_GPU_ALLOW_GROWTH", "true")
    return env


def contenders(args):
    """One `harness.Contender` per mode."""
    options = {k: getattr(args, k) for k in (*SETTINGS, "folder", "policy", "mixed_precision")}
    return [
        harness.Contender(
            name=mode,
            build="train_loop_mode:build",
            options=dict(options, mode=mode),
            label=f"{mode} mode",
            env=child_env(),
            work=args.batch_size * args.steps,
            reference="host",
        )  # fmt: skip
        for mode in args.modes
    ]


def mode_results(outcomes):
    """One dict per mode, as the report holds them: the median round's figures (every round
    under "rounds"), or {"mode", "error"}."""
    results = []
    for mode, outcome in outcomes.items():
        if not outcome.rounds:
            results.append({"mode": mode, "error": outcome.error or "no round"})
            continue
        ordered = sorted(outcome.rounds, key=lambda r: r["images_per_s"])
        median = ordered[(len(ordered) - 1) // 2]
        results.append(dict(median, build_seconds=outcome.info.get("build_seconds"),
                            rounds=outcome.rounds))  # fmt: skip
    return results


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


def _parser():
    parser = _Parser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument("--folder", help="JPEG folder; default: generated JPEGs in a temp dir")
    parser.add_argument("--num_images", type=positive_int, default=384, help="generated JPEGs")
    parser.add_argument("--batch_size", type=positive_int, default=128, help="images per step")
    parser.add_argument("--image_size", type=positive_int, default=224, help="view side, px")
    parser.add_argument("--encoder_depth", type=int, choices=DEPTHS, default=50, help="ResNet")
    parser.add_argument("--warmup_steps", type=positive_int, default=10, help="untimed steps")
    parser.add_argument("--steps", type=positive_int, default=60, help="timed steps per mode")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--rounds", type=positive_int, default=1, help="rounds per mode")
    parser.add_argument(
        "--mixed_precision", action=argparse.BooleanOptionalAction, default=None,
        help="Keras mixed precision (--policy); default: on when a GPU is visible",
    )  # fmt: skip
    parser.add_argument("--policy", choices=POLICIES, default="mixed_float16")
    parser.add_argument(
        "--mode_timeout", type=positive_int, default=270, help="seconds allowed per mode"
    )
    harness.add_report_flag(parser, "gpu_train_loop")
    return parser


def parse_args(argv=None):
    parser = _parser()
    args = parser.parse_args(argv)
    if args.steps < 2:
        parser.error("--steps must be at least 2 (a median and a second half)")
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


def _measure(args):
    """Writes the JPEGs when no folder is given, then runs the modes; their outcomes."""
    schedule = harness.Schedule(
        rounds=args.rounds, warmup=0, fresh_process_per_round=True, timeout=args.mode_timeout
    )
    with tempfile.TemporaryDirectory(prefix="byol_bench_jpeg_") as tmp:
        if not args.folder:
            args.folder = os.path.join(tmp, "images")
            before = time.perf_counter()
            try:
                write_in_process(args.folder, args.num_images, args.mode_timeout)
            except harness.ContenderError as error:
                sys.exit(f"{PROG}: writing the JPEGs failed: {failure_line(str(error))}")
            print(f"wrote {args.num_images} JPEGs in {time.perf_counter() - before:.0f} s")
            outcomes = harness.run(contenders(args), schedule, log=_log)
            args.folder = None
        else:
            outcomes = harness.run(contenders(args), schedule, log=_log)
    return outcomes


def _log(line):
    print(line, file=sys.stderr if ": failed: " in line else sys.stdout, flush=True)


def _report(args, results, start):
    """The report's payload and the device / host ratio (None without both modes)."""
    measured = {r["mode"]: r for r in results if "error" not in r}
    ratio = None
    if "host" in measured and "device" in measured:
        ratio = measured["device"]["images_per_s"] / measured["host"]["images_per_s"]
    first = next(iter(measured.values()), {})
    settings = {key: getattr(args, key) for key in (*SETTINGS, "rounds")}
    settings.update(
        folder=args.folder,
        num_images=len(image_paths(args.folder)) if args.folder else args.num_images,
        policy=first.get("policy"), jit_compile=True, steps_per_execution=1,
    )  # fmt: skip
    host = {"cpu": start["cpu"], "cpu_count": start["cores"], "usable_cores": start["usable_cores"]}
    report = {
        "settings": settings, "device_name": first.get("device_name"),
        "versions": first.get("versions"), "host": host, "modes": results,
        "ratio_device_to_host": ratio,
    }  # fmt: skip
    return report


def main(argv=None):
    args = parse_args(argv)
    start = harness.environment()
    print(harness.describe_environment(start), flush=True)
    results = mode_results(_measure(args))
    for result in results:
        if "error" in result:
            print(f"{PROG}: {result['mode']} mode failed: {failure_line(result['error'])}",
                  file=sys.stderr, flush=True)  # fmt: skip
    report = _report(args, results, start)
    print(f"load average at the end (1, 5, 15 min): {harness.load_average()}")
    print(f"device: {report['device_name']}; host: {start['cpu']}, {start['cores']} cores")
    print(
        f"\nResNet-{args.encoder_depth}, {args.image_size} px, batch {args.batch_size}, policy "
        f"{report['settings']['policy'] or 'n/a'}, XLA; {args.warmup_steps} warm-up and "
        f"{args.steps} timed steps per mode, each mode in its own process; an image counts "
        "once for its two views.\n"
    )
    print(table(results))
    for note in steadiness_notes(results):
        print(note)
    if report["ratio_device_to_host"] is not None:
        print(f"\ndevice / host images/s in this run: {report['ratio_device_to_host']:.2f}×")
    harness.write_report("gpu_train_loop", report, args.json_out, start_env=start)
    if any("error" in result for result in results):
        sys.exit(1)


if __name__ == "__main__":
    main()
