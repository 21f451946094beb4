"""BYOL train-step throughput of byol_tf against byol-pytorch and a hand-written PyTorch step."""

import argparse
import importlib.util
import json
import multiprocessing as mp
import os
import resource
import statistics
import sys
import time
import traceback

import torch_peers

IMAGE_SIZE = 32
PROJECTION_DIM = 256
HIDDEN_DIM = 4096
TAU = 0.99
# name: (label, what it needs installed)
CONTENDERS = {
    "byol_tf_xla": ("byol_tf, jit_compile=True", "tensorflow"),
    "byol_tf_xla_grouped": (
        "byol_tf, jit_compile=True, both views in one pass (grouped_views=True)",
        "tensorflow",
    ),
    "byol_tf": ("byol_tf, jit_compile=False", "tensorflow"),
    "byol_pytorch": ("byol-pytorch", "byol_pytorch"),
    "torch_handwritten": ("hand-written PyTorch", "torch"),
}
REFERENCE = "byol_pytorch"


class _TFContender:
    """byol_tf's `BYOL` on synthetic views; one step is `train_on_batch` plus the EMA update.

    `grouped_views` as `byol_tf.BYOL`'s: False (the default) runs one pass per view; True sends
    both views through each network as one batch with per-view BatchNorm statistics.
    """

    def __init__(self, batch_size, jit_compile, threads, inter_op_threads, grouped_views=False):
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(inter_op_threads)
        import byol_tf

        self._tf = tf
        encoder = byol_tf.networks.resnet(18, cifar_stem=True)
        self.model = byol_tf.BYOL(
            encoder,
            projection_dim=PROJECTION_DIM,
            hidden_dim=HIDDEN_DIM,
            image_shape=(IMAGE_SIZE, IMAGE_SIZE, 3),
            grouped_views=grouped_views,
        )
        self.model.compile(
            optimizer=byol_tf.LARS(byol_tf.WarmupCosine(1.0, 1000, 10)), jit_compile=jit_compile
        )
        shape = (batch_size, IMAGE_SIZE, IMAGE_SIZE, 3)
        self.views = {
            "view1": tf.random.stateless_uniform(shape, seed=(0, 1)),
            "view2": tf.random.stateless_uniform(shape, seed=(0, 2)),
        }

    def step(self):
        # train_on_batch returns host values, so the step has finished when it returns.
        self.model.train_on_batch(self.views)
        self.model.update_target(TAU)

    def matmul_gflops(self, size=2048, repeats=5):
        tf = self._tf
        a = tf.random.stateless_normal((size, size), seed=(1, 1))
        b = tf.random.stateless_normal((size, size), seed=(1, 2))
        tf.linalg.matmul(a, b).numpy()
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            tf.linalg.matmul(a, b).numpy()
            best = min(best, time.perf_counter() - start)
        return 2.0 * size**3 / best / 1e9


class _TorchContender:
    """byol-pytorch (augmentation off) or the hand-written step on synthetic images."""

    def __init__(self, name, batch_size, threads):
        import torch

        torch.set_num_threads(threads)
        torch.manual_seed(0)
        net = torch_peers.resnet18_cifar()
        shape = (batch_size, 3, IMAGE_SIZE, IMAGE_SIZE)
        if name == "byol_pytorch":
            _, step = torch_peers.make_byol_pytorch(
                net, IMAGE_SIZE, PROJECTION_DIM, HIDDEN_DIM, moving_average_decay=TAU
            )
            # byol-pytorch takes one batch and forwards both (here identical) views of it.
            images = torch.rand(shape)
            self._step, self._args = step, (images,)
        else:
            model = torch_peers.make_handwritten_byol(
                net, torch_peers.stage_widths()[-1], PROJECTION_DIM, HIDDEN_DIM
            )
            step = torch_peers.make_handwritten_step(model, tau=TAU)
            self._step, self._args = step, (torch.rand(shape), torch.rand(shape))

    def step(self):
        self._step(*self._args)

    def count_flops(self):
        return torch_peers.count_flops(self._step, *self._args)

    def matmul_gflops(self):
        return torch_peers.matmul_gflops("torch")


def _peak_rss_mib():
    """Peak resident set size of this process (getrusage ru_maxrss, KiB on Linux) in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _worker(name, batch_size, args, conn):
    """Builds one contender, warms it up, then answers ("run", steps) with the seconds taken."""
    try:
        if name.startswith("byol_tf"):
            grouped = name.endswith("_grouped")
            contender = _TFContender(
                batch_size, name.startswith("byol_tf_xla"), args.threads,
                args.tf_inter_op_threads, grouped_views=grouped,
            )  # fmt: skip
            flops = None
        else:
            contender = _TorchContender(name, batch_size, args.threads)
            flops = contender.count_flops() if name == "torch_handwritten" else None
        for _ in range(args.warmup):
            contender.step()
        conn.send(("ready", {"matmul_gflops": contender.matmul_gflops(), "counted_flops": flops}))
        while True:
            command, value = conn.recv()
            if command == "stop":
                conn.send(("peak_rss_mib", _peak_rss_mib()))
                return
            start = time.perf_counter()
            for _ in range(value):
                contender.step()
            conn.send(("seconds", time.perf_counter() - start))
    except Exception:  # noqa: BLE001 - the parent reports it and skips this contender
        conn.send(("error", traceback.format_exc()))


def _available(names):
    """Keeps the contenders whose framework imports; says why each other one is skipped."""
    kept = []
    for name in names:
        module = CONTENDERS[name][1]
        if importlib.util.find_spec(module) is None:
            print(
                f"skipping {CONTENDERS[name][0]}: `{module}` is not installed "
                "(run bench/setup_env.sh and use .venv-bench/bin/python)"
            )
        elif name.startswith("byol_tf") and not _byol_tf_ready():
            print(f"skipping {CONTENDERS[name][0]}: this byol_tf has no BYOL model yet")
        else:
            kept.append(name)
    return kept


def _byol_tf_ready():
    import byol_tf

    return all(hasattr(byol_tf, attr) for attr in ("BYOL", "LARS", "WarmupCosine", "networks"))


def _start(name, batch_size, args, context):
    parent, child = context.Pipe()
    process = context.Process(target=_worker, args=(name, batch_size, args, child), daemon=True)
    process.start()
    kind, payload = parent.recv()
    if kind == "error":
        print(f"{CONTENDERS[name][0]} failed to build at batch {batch_size}:\n{payload}")
        process.join()
        return None
    return process, parent, payload


def _measure(batch_size, names, args):
    """Runs every contender in its own worker, interleaved A B C A B C, for one batch size."""
    context = mp.get_context("spawn")
    workers = {}
    for name in names:  # built one after the other, so that builds and warm-ups do not overlap
        started = _start(name, batch_size, args, context)
        if started:
            workers[name] = started
    seconds = {name: [] for name in workers}
    for _ in range(args.repeats):
        for name, (_, conn, _) in workers.items():
            conn.send(("run", args.steps))
            kind, payload = conn.recv()
            if kind == "error":
                raise RuntimeError(f"{name} failed while timing:\n{payload}")
            seconds[name].append(payload)
            time.sleep(args.pause)  # lets the previous contender's spinning threads go idle
    results = {}
    for name, (process, conn, info) in workers.items():
        conn.send(("stop", None))
        peak = conn.recv()[1]
        process.join()
        median = statistics.median(seconds[name]) / args.steps
        results[name] = {
            "step_seconds": median,
            "images_per_second": batch_size / median,
            "peak_rss_mib": peak,
            "step_seconds_all": seconds[name],
            **info,
        }
    return results


def _table(batch_size, results, flops, peak_gflops):
    reference = results.get(REFERENCE, {}).get("images_per_second")
    lines = [
        f"\n### batch {batch_size} (two views of {batch_size} images per step)\n",
        "| contender | images/s | vs byol-pytorch | ms/step | GFLOP/s | % of matmul peak |"
        " peak RSS (MiB) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, result in results.items():
        ratio = f"{result['images_per_second'] / reference:.2f}×" if reference else "n/a"
        gflops = flops / result["step_seconds"] / 1e9
        result.update(ratio_to_byol_pytorch=ratio, gflops_per_second=gflops)
        lines.append(
            f"| {CONTENDERS[name][0]} | {result['images_per_second']:.1f} | {ratio} | "
            f"{1000 * result['step_seconds']:.0f} | {gflops:.1f} | "
            f"{100 * gflops / peak_gflops:.0f} % | {result['peak_rss_mib']:.0f} |"
        )
    return "\n".join(lines)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch_sizes", type=int, nargs="+", default=[128, 256])
    parser.add_argument(
        "--contenders", nargs="+", choices=list(CONTENDERS), default=list(CONTENDERS)
    )
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds per contender")
    parser.add_argument("--steps", type=int, default=1, help="timed steps per round")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps (and compilation)")
    parser.add_argument(
        "--threads",
        type=int,
        default=2,
        help="intra-op threads of both frameworks (torch.set_num_threads, TF intra)",
    )
    parser.add_argument("--tf_inter_op_threads", type=int, default=2)
    parser.add_argument("--pause", type=float, default=0.2, help="seconds between contenders")
    parser.add_argument("--json_out", default=None, help="also write the results here as JSON")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[variable] = str(args.threads)  # inherited by the workers
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    names = _available(args.contenders)
    if not names:
        sys.exit("nothing to measure")
    numpy_peak = torch_peers.matmul_gflops("numpy")
    print(
        f"threads: {args.threads} intra-op per framework (torch.set_num_threads, TF intra-op; "
        f"TF inter-op {args.tf_inter_op_threads}); each contender runs in its own process, "
        f"interleaved over {args.repeats} rounds of {args.steps} steps after {args.warmup} "
        "warm-up steps; figures are medians"
    )
    report = {"args": vars(args), "numpy_matmul_gflops": numpy_peak, "batches": {}}
    for batch_size in args.batch_sizes:
        results = _measure(batch_size, names, args)
        flops = torch_peers.byol_step_flops(batch_size, IMAGE_SIZE, 1.0, PROJECTION_DIM, HIDDEN_DIM)
        rates = {"numpy": numpy_peak}
        rates.update({CONTENDERS[n][0]: r["matmul_gflops"] for n, r in results.items()})
        peak = max(rates.values())
        listed = ", ".join(f"{k} {v:.1f}" for k, v in rates.items())
        print(f"\nfp32 2048² matmul GFLOP/s: {listed} → peak {peak:.1f}")
        counted = results.get("torch_handwritten", {}).get("counted_flops")
        check = f"; FlopCounterMode, hand-written step: {counted / 1e9:.1f}" if counted else ""
        print(f"GFLOP per step (conv + dense, fwd + bwd): analytic {flops / 1e9:.1f}{check}")
        print(_table(batch_size, results, flops, peak))
        report["batches"][batch_size] = {
            "flops_per_step": flops,
            "matmul_peak_gflops": peak,
            "results": results,
        }
    print("\npeak RSS: ru_maxrss of each contender's own worker process (framework included)")
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()
