"""BYOL train-step throughput: byol_tf with XLA and with TensorFlow's own (oneDNN) kernels,
against byol-pytorch and a hand-written PyTorch step, in float32 and in bfloat16.

The step is the same for everyone: ResNet-18 with the CIFAR stem at 32 px, heads 4096 → 256,
online forward and backward of both views, target forward of both views, optimiser update and
EMA target update, on synthetic images. Paths (`--contenders`), each in each precision
(`--precisions`):

- `byol_tf_xla`: `byol_tf.BYOL` compiled with `jit_compile=True` (XLA's CPU kernels).
- `byol_tf`: `jit_compile=False`: TensorFlow's own kernels, which are oneDNN's on x86 unless
  `TF_ENABLE_ONEDNN_OPTS=0` (the child reports which).
- `byol_tf_eigen` (not in the default set): `jit_compile=False` with `TF_ENABLE_ONEDNN_OPTS=0`.
- `byol_tf_xla_grouped` (not in the default set): XLA, both views in one pass per network.
- `byol_pytorch`: byol-pytorch's `BYOL`, plain BYOL, augmentation off, Adam (its README).
- `torch_handwritten`: the same network and loss as byol_tf in plain PyTorch, eager.

bfloat16 is Keras's "mixed_bfloat16" policy for byol_tf (float32 variables, bfloat16
compute) and `torch.autocast("cpu", dtype=torch.bfloat16)` around PyTorch's forward passes.
Ratios are taken at equal precision: each contender against byol-pytorch in the same
precision. Every contender runs in its own process (bench/harness); figures from CPUs of
different kinds must not be mixed, so the CPU's model and features head the output and the
report (bench/results/).

    python bench/train_step.py                     # batch 128, every default path, both precisions
    python bench/train_step.py --quick             # smoke run: batch 8, one round of one step
"""

import argparse
import math
import os
import sys
import time

import harness
import torch_peers

IMAGE_SIZE = 32
PROJECTION_DIM = 256
HIDDEN_DIM = 4096
TAU = 0.99
# path: (label, what it needs installed)
PATHS = {
    "byol_tf_xla": ("byol_tf, XLA", "tensorflow"),
    "byol_tf": ("byol_tf, TF kernels", "tensorflow"),
    "byol_tf_eigen": ("byol_tf, TF kernels, oneDNN off", "tensorflow"),
    "byol_tf_xla_grouped": ("byol_tf, XLA, views grouped", "tensorflow"),
    # A/B: TF kernels with Keras's op-by-op BatchNorm instead of the fused kernel
    # (bench/keras_batch_norm.py; byol_tf before the fused path).
    "byol_tf_keras_bn": ("byol_tf, TF kernels, Keras's BatchNorm ops", "tensorflow"),
    "byol_pytorch": ("byol-pytorch", "byol_pytorch"),
    "torch_handwritten": ("hand-written PyTorch", "torch"),
}
DEFAULT_PATHS = ("byol_tf_xla", "byol_tf", "byol_pytorch", "torch_handwritten")
PRECISIONS = {"float32": "fp32", "bfloat16": "bf16"}
REFERENCE = "byol_pytorch"
QUICK = {"batch_sizes": [8], "warmup": 1, "repeats": 1, "steps": 1}


def _tf_matmul_gflops(tf, dtype, size=2048, repeats=5):
    """Best square-matmul rate in TensorFlow at `dtype`, GFLOP/s."""
    a = tf.cast(tf.random.stateless_normal((size, size), seed=(1, 1)), dtype)
    b = tf.cast(tf.random.stateless_normal((size, size), seed=(1, 2)), dtype)
    tf.linalg.matmul(a, b).numpy()
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        tf.linalg.matmul(a, b).numpy()
        best = min(best, time.perf_counter() - start)
    return 2.0 * size**3 / best / 1e9


def _onednn_enabled():
    """Whether TensorFlow runs its oneDNN kernels in this process (None if it cannot say)."""
    try:
        from tensorflow.python.util import _pywrap_util_port

        return bool(_pywrap_util_port.IsMklEnabled())
    except (ImportError, AttributeError):
        return None


def build_byol_tf(
    batch_size, steps, jit_compile, precision, threads, inter_op_threads, grouped, keras_bn=False
):
    """byol_tf's BYOL on synthetic views; a round is `steps` × (`train_on_batch`, EMA update).

    Runs in the contender's process (bench/harness). The loss of every step is kept in the
    workload's info, so that the report shows it finite in both precisions.
    """
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(inter_op_threads)
    import keras

    import byol_tf

    policy = "mixed_bfloat16" if precision == "bfloat16" else "float32"
    keras.mixed_precision.set_global_policy(policy)
    from keras_batch_norm import use_keras_batch_norm

    if keras_bn:
        use_keras_batch_norm()
    encoder = byol_tf.core.networks.resnet(18, cifar_stem=True)
    model = byol_tf.BYOL(
        encoder, projection_dim=PROJECTION_DIM, hidden_dim=HIDDEN_DIM,
        image_shape=(IMAGE_SIZE, IMAGE_SIZE, 3), grouped_views=grouped,
    )  # fmt: skip
    optimizer = byol_tf.LARS(byol_tf.WarmupCosine(1.0, 1000, 10))
    model.compile(optimizer=optimizer, jit_compile=jit_compile)
    shape = (batch_size, IMAGE_SIZE, IMAGE_SIZE, 3)
    views = {
        "view1": tf.random.stateless_uniform(shape, seed=(0, 1)),
        "view2": tf.random.stateless_uniform(shape, seed=(0, 2)),
    }
    info = {
        "policy": policy,
        "jit_compile": jit_compile,
        "onednn": _onednn_enabled(),
        "matmul_gflops": _tf_matmul_gflops(tf, tf.bfloat16 if policy != "float32" else tf.float32),
        "runtime_versions": {"tensorflow": tf.__version__, "keras": keras.__version__},
    }

    def run():
        for _ in range(steps):
            # train_on_batch returns host values, so the step has finished when it returns.
            logs = model.train_on_batch(views, return_dict=True)
            model.update_target(TAU)
        info["loss"] = float(logs["loss"])
        return {"loss": info["loss"]}

    return harness.Workload(run=run, info=info, finish=lambda: {"final_loss": info.get("loss")})


def build_torch(path, batch_size, steps, precision, threads):
    """byol-pytorch (augmentation off) or the hand-written step, under autocast for bfloat16;
    a round is `steps` steps."""
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    dtype = torch.bfloat16 if precision == "bfloat16" else None
    net = torch_peers.resnet18_cifar()
    shape = (batch_size, 3, IMAGE_SIZE, IMAGE_SIZE)
    if path == "byol_pytorch":
        _, step = torch_peers.make_byol_pytorch(
            net, IMAGE_SIZE, PROJECTION_DIM, HIDDEN_DIM, moving_average_decay=TAU,
            autocast_dtype=dtype,
        )  # fmt: skip
        # byol-pytorch takes one batch and forwards both (here identical) views of it.
        args = (torch.rand(shape),)
    else:
        width = torch_peers.stage_widths()[-1]
        model = torch_peers.make_handwritten_byol(net, width, PROJECTION_DIM, HIDDEN_DIM)
        step = torch_peers.make_handwritten_step(model, tau=TAU, autocast_dtype=dtype)
        args = (torch.rand(shape), torch.rand(shape))
    info = {
        "precision": precision,
        "autocast": str(dtype) if dtype else None,
        "matmul_gflops": torch_peers.matmul_gflops("torch", dtype=precision),
        "runtime_versions": {"torch": torch.__version__},
    }
    if path == "torch_handwritten" and dtype is None:
        info["counted_flops"] = torch_peers.count_flops(step, *args)

    def run():
        for _ in range(steps):
            loss = step(*args)
        info["loss"] = float(loss)  # the host waits for the step here
        return {"loss": info["loss"]}

    return harness.Workload(run=run, info=info, finish=lambda: {"final_loss": info.get("loss")})


def contenders(args, batch_size):
    """The `harness.Contender`s of one batch size: every path in every precision."""
    threads = harness.thread_env(args.threads)
    out = []
    for path in args.contenders:
        for precision, short in PRECISIONS.items():
            if precision not in args.precisions:
                continue
            env = dict(threads, TF_CPP_MIN_LOG_LEVEL=os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"))
            if PATHS[path][1] == "tensorflow":
                build = "train_step:build_byol_tf"
                options = dict(
                    batch_size=batch_size, jit_compile="xla" in path, precision=precision,
                    threads=args.threads, inter_op_threads=args.tf_inter_op_threads,
                    grouped=path.endswith("_grouped"), keras_bn=path.endswith("_keras_bn"),
                )  # fmt: skip
                if path == "byol_tf_eigen":
                    env["TF_ENABLE_ONEDNN_OPTS"] = "0"
            else:
                build = "train_step:build_torch"
                options = dict(path=path, batch_size=batch_size, precision=precision,
                               threads=args.threads)  # fmt: skip
            out.append(harness.Contender(
                name=f"{path}/{short}", build=build, options=dict(options, steps=args.steps),
                label=f"{PATHS[path][0]}, {precision}", env=env,
                work=batch_size * args.steps, reference=f"{REFERENCE}/{short}",
            ))  # fmt: skip
    return out


def _available(paths):
    """Keeps the paths whose framework is installed; says why each other one is skipped."""
    import importlib.util

    kept = []
    for path in paths:
        module = PATHS[path][1]
        if importlib.util.find_spec(module) is None:
            print(f"skipping {PATHS[path][0]}: `{module}` is not installed "
                  "(run bench/setup_env.sh and use .venv-bench/bin/python)")  # fmt: skip
        else:
            kept.append(path)
    return kept


def _peaks(outcomes, numpy_gflops):
    """The best matmul rate any process reached, per precision (NumPy counts for float32)."""
    peaks = {"float32": numpy_gflops}
    for outcome in outcomes.values():
        precision = outcome.contender.options["precision"]
        rate = outcome.info.get("matmul_gflops") or 0.0
        peaks[precision] = max(peaks.get(precision, 0.0), rate)
    return peaks


def step_table(batch_size, rows, outcomes, flops, peaks):
    """The markdown table of one batch size; adds gflops and peak shares to `rows`."""
    lines = [
        f"\n### batch {batch_size} (two views of {batch_size} images per step)\n",
        "| contender | images/s | vs byol-pytorch, same precision | ms/step | GFLOP/s "
        "| % of matmul peak, same precision | peak RSS (MiB) | last loss |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        outcome = outcomes[row["name"]]
        if not row["rounds"]:
            lines.append(f"| {row['label']} | failed | | | | | | |")
            continue
        step_s = row["median_seconds"] * batch_size / outcome.contender.work
        precision = outcome.contender.options["precision"]
        row.update(step_seconds=step_s, gflops_per_second=flops / step_s / 1e9)
        row["peak_share"] = (
            row["gflops_per_second"] / peaks[precision] if peaks[precision] else None
        )
        ratio = f"{row['ratio']:.2f}×" if row["ratio"] else "n/a"
        share = f"{100 * row['peak_share']:.0f} %" if row["peak_share"] else "n/a"
        lines.append(
            f"| {row['label']} | {row['rate']:.1f} | {ratio} | {1000 * step_s:.0f} "
            f"| {row['gflops_per_second']:.1f} | {share} "
            f"| {outcome.info.get('peak_rss_mib', 0):.0f} "
            f"| {_loss(outcome.info.get('final_loss'))} |"
        )
    return "\n".join(lines)


def _loss(value):
    return "n/a" if value is None else f"{value:.4f}"


def precision_lines(rows):
    """bfloat16 against float32 of the same path (images/s ratio), one line each."""
    rates = {row["name"]: row["rate"] for row in rows if row["rate"]}
    lines = []
    for path in PATHS:
        fp32, bf16 = rates.get(f"{path}/fp32"), rates.get(f"{path}/bf16")
        if fp32 and bf16:
            lines.append(f"{PATHS[path][0]}: bfloat16 / float32 images/s {bf16 / fp32:.2f}×")
    return lines


def checks(outcomes):
    """Warnings for losses that are not finite and for byol_tf without oneDNN, one line each."""
    lines = []
    for outcome in outcomes.values():
        for key in ("loss", "final_loss"):
            value = outcome.info.get(key)
            if value is not None and not math.isfinite(value):
                lines.append(f"warning: {outcome.contender.text}: {key} is {value}")
        if outcome.info.get("onednn") is False and "eigen" not in outcome.contender.name:
            lines.append(f"note: {outcome.contender.text}: TensorFlow's oneDNN kernels are off")
    return lines


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batch_sizes", type=int, nargs="+", default=[128])
    parser.add_argument("--contenders", nargs="+", choices=list(PATHS), default=DEFAULT_PATHS)
    parser.add_argument(
        "--precisions", nargs="+", choices=list(PRECISIONS), default=list(PRECISIONS)
    )
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds per contender")
    parser.add_argument("--steps", type=int, default=1, help="timed steps per round")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps (and compilation)")
    parser.add_argument(
        "--threads", type=int, default=2,
        help="intra-op threads of both frameworks (torch.set_num_threads, TF intra-op)",
    )  # fmt: skip
    parser.add_argument("--tf_inter_op_threads", type=int, default=2)
    parser.add_argument("--pause", type=float, default=0.2, help="seconds between contenders")
    parser.add_argument("--timeout", type=float, default=None, help="seconds per process")
    parser.add_argument(
        "--quick", action="store_true",
        help="smoke run: batch 8, 1 warm-up step, 1 round of 1 step (overrides those flags)",
    )  # fmt: skip
    harness.add_report_flag(parser, "train_step")
    args = parser.parse_args(argv)
    if args.quick:
        vars(args).update(QUICK)
    return args


def measure(batch_size, paths, args, numpy_gflops):
    """Runs one batch size through the harness, prints its tables; its part of the report."""
    args.contenders = paths
    schedule = harness.Schedule(
        rounds=args.repeats, warmup=args.warmup, pause=args.pause, timeout=args.timeout
    )
    outcomes = harness.run(contenders(args, batch_size), schedule)
    rows = harness.summarise(outcomes)
    flops = torch_peers.byol_step_flops(batch_size, IMAGE_SIZE, 1.0, PROJECTION_DIM, HIDDEN_DIM)
    peaks = _peaks(outcomes, numpy_gflops)
    listed = ", ".join(f"{k} {v:.1f}" for k, v in peaks.items())
    print(f"\nbest 2048² matmul GFLOP/s per precision (any process; NumPy for float32): {listed}")
    counted = [o.info["counted_flops"] for o in outcomes.values() if "counted_flops" in o.info]
    check = f"; FlopCounterMode, hand-written step: {counted[0] / 1e9:.1f}" if counted else ""
    print(f"GFLOP per step (conv + dense, fwd + bwd): analytic {flops / 1e9:.1f}{check}")
    print(step_table(batch_size, rows, outcomes, flops, peaks))
    for line in precision_lines(rows) + checks(outcomes):
        print(line)
    return {
        "flops_per_step": flops, "matmul_peak_gflops": peaks, "rows": rows,
        "outcomes": harness.outcomes_json(outcomes),
    }  # fmt: skip


def main(argv=None):
    args = parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    paths = _available(args.contenders)
    if not paths:
        sys.exit("nothing to measure")
    start = harness.environment()
    print(harness.describe_environment(start))
    print(
        f"threads: {args.threads} intra-op per framework (TF inter-op {args.tf_inter_op_threads})"
        f"; each contender in its own process, {args.repeats} interleaved rounds of {args.steps} "
        f"step(s) after {args.warmup} warm-up step(s); figures are medians over rounds"
    )
    numpy_gflops = torch_peers.matmul_gflops("numpy")
    report = {"settings": vars(args), "numpy_matmul_gflops": numpy_gflops, "batches": {}}
    for batch_size in args.batch_sizes:
        report["batches"][batch_size] = measure(batch_size, paths, args, numpy_gflops)
    print("\npeak RSS: ru_maxrss of each contender's own process (framework included)")
    harness.write_report("train_step", report, args.json_out, start_env=start)


if __name__ == "__main__":
    main()
