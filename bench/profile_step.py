"""Where one byol_tf train step spends its time: TF-profiler op breakdown and the EMA's share."""

import argparse
import collections
import glob
import os
import re
import statistics
import tempfile
import time

import harness

IMAGE_SIZE = 32
PROJECTION_DIM = 256
HIDDEN_DIM = 4096
# variant name: (jit_compile, BatchNorm through Keras's op-by-op path: bench/keras_batch_norm.py)
VARIANTS = {
    "xla": (True, False),
    "graph": (False, False),
    "xla-keras-bn": (True, True),
    "graph-keras-bn": (False, True),
}
# A BatchNorm layer's name scope (byol_tf.core.networks): stem_bn, stage1_block1_bn2, hidden_bn
_BN_SCOPE = re.compile(r"(^|/)\w*_bn\d*(_\d+)?/")
_HLO_COMPUTATION = re.compile(r"(?:ENTRY )?%([\w.\-]+) \(.*\{\s*$")
_HLO_INSTRUCTION = re.compile(r"\s*(?:ROOT )?%([\w.\-]+) = ")
_HLO_METADATA = re.compile(r'metadata=\{(?:op_type="([^"]*)" )?op_name="([^"]*)"')
_HLO_CALLS = re.compile(r"(?:calls|to_apply)=%([\w.\-]+)")
_CONV_TYPES = {
    "Conv2D": "conv forward",
    "Conv2DBackpropInput": "conv backward (input)",
    "Conv2DBackpropFilter": "conv backward (filter)",
}


def _category(op_type, op_name, hlo_name=None, module=""):
    """The breakdown row of one op, from its TF op type and name scope (XLA: its metadata)."""
    if "inference_ema" in module:
        return "EMA target update"
    if hlo_name is not None and re.match(r"(copy|transpose)", hlo_name):
        return "XLA copies / transposes"
    if op_type in _CONV_TYPES:
        return _CONV_TYPES[op_type]
    if op_type in ("MatMul", "BatchMatMulV2"):
        return "matmul (heads)"
    if _BN_SCOPE.search(op_name):
        return "BatchNorm backward" if op_name.startswith("gradient_tape/") else "BatchNorm forward"
    if op_name.startswith("LARS/") or "/LARS/" in op_name:
        return "optimiser (LARS)"
    if not op_name:
        return "XLA ops without TF metadata"
    return "other (ReLU, add, pooling, loss, metrics)"


def _parse_hlo(path):
    """Instructions of an HLO text dump: name → (own metadata or None, called computations)."""
    computations, instructions, current = collections.defaultdict(list), {}, None
    with open(path) as f:
        for line in f:
            header = _HLO_COMPUTATION.match(line)
            if header:
                current = header.group(1)
                continue
            match = _HLO_INSTRUCTION.match(line)
            if match and current:
                own = _HLO_METADATA.search(line)
                calls = _HLO_CALLS.findall(line)
                instructions[match.group(1)] = (own.group(1, 2) if own else None, calls)
                computations[current].append(match.group(1))
    return instructions, computations


def _resolve(name, instructions, computations, depth=0):
    """An instruction's metadata, else that of the first instruction with metadata it calls."""
    own, calls = instructions[name]
    if own or depth > 4:
        return own
    for computation in calls:
        for inner in computations.get(computation, ()):
            found = _resolve(inner, instructions, computations, depth + 1)
            if found:
                return found
    return None


def _hlo_metadata(dump_dir):
    """Maps (dump file, HLO instruction) to (TF op type, TF op name) for every dumped module."""
    metadata = {}
    for path in glob.glob(os.path.join(dump_dir, "*cpu_after_optimizations.txt")):
        instructions, computations = _parse_hlo(path)
        file = os.path.basename(path)
        for name in instructions:
            found = _resolve(name, instructions, computations)
            metadata[(file, name)] = found or ("", "")
    return metadata


def _self_times(events):
    """Durations (ps) minus those of counted events nested inside them, per line."""
    events = sorted(events, key=lambda e: (e[0], -e[1]))
    stack, result = [], []
    for start, duration, payload in events:
        while stack and start >= stack[-1][0] + stack[-1][1]:
            stack.pop()
        if stack:
            stack[-1][3][0] -= duration
        entry = [start, duration, payload, [duration]]
        stack.append(entry)
        result.append(entry)
    return [(payload, max(own[0], 0)) for _, _, payload, own in result]


def _op_times(logdir, metadata):
    """(category, op label) → self time in ms over the traced steps, and the step's wall time."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    (path,) = glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True)
    space = xplane_pb2.XSpace()
    with open(path, "rb") as f:
        space.ParseFromString(f.read())
    (plane,) = [p for p in space.planes if p.name == "/host:CPU"]
    names = {k: v.name for k, v in plane.event_metadata.items()}
    stat_names = {k: v.name for k, v in plane.stat_metadata.items()}
    modules = {os.path.basename(p).split(".")[1]: os.path.basename(p) for p in metadata["files"]}
    times, step_ps = collections.Counter(), 0
    for line in plane.lines:
        counted = []
        for event in line.events:
            name = names[event.metadata_id]
            stats = {stat_names[s.metadata_id]: s for s in event.stats}
            if name.startswith("EagerLocalExecute: __inference_one_step_on_data"):
                step_ps += event.duration_ps
            if "hlo_op" in stats:  # one XLA thunk; its module names the compiled function
                module = stat_names.get(stats["hlo_module"].ref_value, "")
                counted.append((event.offset_ps, event.duration_ps, ("hlo", name, module)))
            elif re.fullmatch(r"[^:\s]+:_?[A-Z]\w*", name):  # a TF executor op "scope/op:Type"
                counted.append((event.offset_ps, event.duration_ps, ("tf", name, "")))
        for (kind, name, module), ps in _self_times(counted):
            if kind == "tf":
                op_name, op_type = name.rsplit(":", 1)
                # oneDNN's kernels (x86): _MklNativeConv2D, _MklMatMul, ... are Conv2D, MatMul.
                op_type = re.sub(r"^_(MklNative|Mkl)?", "", op_type)
                key = (_category(op_type, op_name), f"{op_type} {op_name}")
            else:
                hlo = re.sub(r"(\.clone)+$", "", name)
                file = modules.get(module.split(".")[0], "")
                op_type, op_name = metadata["ops"].get((file, name), ("", ""))
                key = (_category(op_type, op_name, hlo, module), f"{hlo} ({op_type} {op_name})")
            times[key] += ps / 1e9
    return times, step_ps / 1e9


def _build(variant, batch_size, precision="float32"):
    """A BYOL model compiled as `variant` says, its synthetic views and a TargetEMA callback."""
    import keras
    import tensorflow as tf
    from keras_batch_norm import use_keras_batch_norm

    import byol_tf

    keras.mixed_precision.set_global_policy(
        "mixed_bfloat16" if precision == "bfloat16" else "float32"
    )
    jit_compile, keras_bn = VARIANTS[variant]
    if keras_bn:
        use_keras_batch_norm()
    encoder = byol_tf.core.networks.resnet(18, cifar_stem=True)
    model = byol_tf.BYOL(
        encoder,
        projection_dim=PROJECTION_DIM,
        hidden_dim=HIDDEN_DIM,
        image_shape=(IMAGE_SIZE, IMAGE_SIZE, 3),
    )
    model.compile(
        optimizer=byol_tf.LARS(byol_tf.WarmupCosine(1.0, 1000, 10)), jit_compile=jit_compile
    )
    shape = (batch_size, IMAGE_SIZE, IMAGE_SIZE, 3)
    views = {
        "view1": tf.random.stateless_uniform(shape, seed=(0, 1)),
        "view2": tf.random.stateless_uniform(shape, seed=(0, 2)),
    }
    callback = byol_tf.TargetEMA(base_tau=0.99, total_steps=1000)
    callback.set_model(model)
    callback.on_train_begin()
    return model, views, callback


def _step(model, views, callback):
    """One step as `fit` runs it.

    Returns:
        (train_on_batch wall seconds, TargetEMA callback wall seconds, train_on_batch CPU
        seconds of this process, all threads).
    """
    start, cpu = time.perf_counter(), time.process_time()
    model.train_on_batch(views)  # returns host values, so the step has finished
    middle, cpu = time.perf_counter(), time.process_time() - cpu
    callback.on_train_batch_end(0)  # τ schedule in Python + the compiled EMA update
    return middle - start, time.perf_counter() - middle, cpu


def _profile(parts, lanes, top):
    """Traces one step of `parts` (`_build`'s) with the TF profiler and sums op self times.

    Runs in the variant's process, after its timed rounds; XLA_FLAGS holds its HLO dump folder.

    Returns:
        {"wall_ms", "step_ms", "ema_ms", "lanes", "ops": [[category, op label, thread-ms], ...]
        (every op, slowest first)}.
    """
    import tensorflow as tf

    dump_dir = re.search(r"--xla_dump_to=(\S+)", os.environ.get("XLA_FLAGS", "")).group(1)
    files = glob.glob(os.path.join(dump_dir, "*cpu_after_optimizations.txt"))
    metadata = {"files": files, "ops": _hlo_metadata(dump_dir)}
    logdir = os.path.join(os.path.dirname(dump_dir), "trace")
    tf.profiler.experimental.start(logdir)
    wall, ema, _ = _step(*parts)
    tf.profiler.experimental.stop()
    times, step_ms = _op_times(logdir, metadata)
    ops = [[category, label, ms] for (category, label), ms in times.most_common()]
    return {"wall_ms": wall * 1e3, "step_ms": step_ms, "ema_ms": ema * 1e3, "lanes": lanes,
            "ops": ops, "top": top}  # fmt: skip


def build(variant, batch_size, threads, inter_op_threads, profile, top, precision="float32"):
    """One variant in this process (bench/harness): a round is one step as `fit` runs it.

    Returns:
        A `harness.Workload` whose round gives "seconds" (train_on_batch), "cpu_seconds" (its
        CPU time, all threads) and "ema_seconds" (the TargetEMA callback); with `profile`,
        its `finish` traces one more step (`_profile`).
    """
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(inter_op_threads)
    parts = _build(variant, batch_size, precision)

    def run():
        wall, ema, cpu = _step(*parts)
        return {"seconds": wall, "ema_seconds": ema, "cpu_seconds": cpu}

    # XLA thunks run on the intra-op pool; graph-mode ops on the inter-op threads.
    lanes = threads if VARIANTS[variant][0] else inter_op_threads
    finish = (lambda: {"profile": _profile(parts, lanes, top)}) if profile else None
    info = {"variant": variant, "precision": precision}
    return harness.Workload(run=run, info=info, finish=finish)


def print_breakdown(variant, profile):
    """Prints op time by type as a share of `lanes` × the traced wall time.

    `profile` is `_profile`'s: the traced step's `wall_ms` (train_on_batch), `step_ms` (the
    compiled step function inside it), `ema_ms` (the TargetEMA callback after it), `lanes` (the
    number of threads that run ops side by side: 1 for graph mode with one inter-op thread,
    the intra-op thread count under XLA) and the ops.

    Returns:
        {category: thread-ms}.
    """
    by_category = collections.Counter()
    for category, _, ms in profile["ops"]:
        by_category[category] += ms
    capacity = profile["lanes"] * (profile["wall_ms"] + profile["ema_ms"])
    # XLA:CPU hands convolutions and large dots to Eigen asynchronously: their work has no
    # trace event of its own, so it shows up here, together with idle threads.
    by_category["not in the trace (XLA async conv/dot, idle)"] = max(
        capacity - sum(by_category.values()), 0.0
    )
    python_ms = profile["wall_ms"] - profile["step_ms"]
    print(f"\n### {variant}: op time by type, one traced step\n")
    print(
        f"train_on_batch {profile['wall_ms']:.0f} ms wall, of which the step function "
        f"{profile['step_ms']:.0f} ms and Python/host work around it {python_ms:.0f} ms "
        f"({100 * python_ms / profile['wall_ms']:.1f} %); TargetEMA callback "
        f"{profile['ema_ms']:.1f} ms; shares of {profile['lanes']} thread(s) × wall\n"
    )
    print("| op type | thread-ms | share |\n|---|---:|---:|")
    for category, ms in by_category.most_common():
        print(f"| {category} | {ms:.0f} | {100 * ms / capacity:.1f} % |")
    if profile["top"]:
        print(f"\ntop {profile['top']} ops:")
        for category, label, ms in profile["ops"][: profile["top"]]:
            print(f"  {ms:8.1f} ms  [{category}] {label[:110]}")
    return dict(by_category)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch_size", type=int, default=32, help="images per view")
    parser.add_argument(
        "--variants", nargs="+", choices=list(VARIANTS), default=["xla", "graph"],
        help="byol_tf with jit_compile=True (xla) or False (graph); '-keras-bn': with Keras's "
        "op-by-op BatchNorm instead of the fused kernel (an A/B, bench/keras_batch_norm.py)",
    )  # fmt: skip
    parser.add_argument(
        "--precision", choices=["float32", "bfloat16"], default="float32",
        help="bfloat16: Keras's mixed_bfloat16 policy (float32 variables, bfloat16 compute)",
    )  # fmt: skip
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps (compilation)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved timed rounds")
    parser.add_argument(
        "--profile", nargs="*", default=None, help="variants to trace (default: all timed ones)"
    )
    parser.add_argument("--threads", type=int, default=2, help="TF intra-op threads")
    parser.add_argument(
        "--inter_op_threads", type=int, default=1,
        help="TF inter-op threads; 1 runs graph-mode ops one at a time, so op times add up",
    )  # fmt: skip
    parser.add_argument("--top", type=int, default=10, help="also list the N slowest ops")
    harness.add_report_flag(parser, "profile_step")
    return parser.parse_args(argv)


def contenders(args, workdir):
    """One `harness.Contender` per variant, each dumping its HLO into its own folder (it maps
    XLA thunks in the trace back to the TF ops they came from)."""
    traced = args.variants if args.profile is None else args.profile
    out = []
    for variant in args.variants:
        dump = os.path.join(workdir, variant, "hlo")
        env = dict(
            TF_CPP_MIN_LOG_LEVEL=os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"),
            XLA_FLAGS=f"{os.environ.get('XLA_FLAGS', '')} --xla_dump_to={dump}".strip(),
        )
        options = dict(variant=variant, batch_size=args.batch_size, threads=args.threads,
                       inter_op_threads=args.inter_op_threads, profile=variant in traced,
                       top=args.top, precision=args.precision)  # fmt: skip
        out.append(harness.Contender(
            variant, "profile_step:build", options, env=env, work=1,
            reference=args.variants[0],
        ))  # fmt: skip
    return out


def timing_table(outcomes, rows):
    """Prints median and fastest wall time, CPU time and the EMA's share per variant, then the
    per-round wall ratios against the first variant; returns the figures."""
    print("| variant | step ms | fastest ms | CPU ms | TargetEMA ms | EMA share of step |")
    print("|---|---:|---:|---:|---:|---:|")
    timing = {}
    for row in rows:
        rounds = outcomes[row["name"]].rounds
        if not rounds:
            print(f"| {row['name']} | failed | | | | |")
            continue
        wall = [r["seconds"] * 1e3 for r in rounds]
        summary = {
            "step_ms": statistics.median(wall), "fastest_ms": min(wall),
            "cpu_ms": statistics.median(r["cpu_seconds"] * 1e3 for r in rounds),
            "ema_ms": statistics.median(r["ema_seconds"] * 1e3 for r in rounds),
        }  # fmt: skip
        timing[row["name"]] = summary
        share = 100 * summary["ema_ms"] / (summary["step_ms"] + summary["ema_ms"])
        print(
            f"| {row['name']} | {summary['step_ms']:.0f} | {summary['fastest_ms']:.0f} | "
            f"{summary['cpu_ms']:.0f} | {summary['ema_ms']:.1f} | {share:.2f} % |"
        )
    for row in rows[1:]:
        if row["paired_ratio"] is not None:
            # Paired per round: neighbouring steps see about the same machine load.
            print(f"{row['name']} / {row['reference']}: per-round wall ratios median "
                  f"{1 / row['paired_ratio']:.3f}; medians {1 / row['ratio']:.3f}")  # fmt: skip
    return timing


def main(argv=None):
    args = parse_args(argv)
    start = harness.environment()
    print(harness.describe_environment(start))
    workdir = tempfile.mkdtemp(prefix="byol_profile_")
    schedule = harness.Schedule(rounds=args.rounds, warmup=args.warmup)
    outcomes = harness.run(contenders(args, workdir), schedule)
    rows = harness.summarise(outcomes)
    print(
        f"\nbatch {args.batch_size} per view, {args.rounds} interleaved rounds, each variant in "
        "its own process: median and fastest wall time, median CPU time (all threads)\n"
    )
    report = {"settings": vars(args), "timing": timing_table(outcomes, rows), "profile": {}}
    for name, outcome in outcomes.items():
        profile = outcome.info.get("profile")
        if profile:
            by_category = print_breakdown(name, profile)
            report["profile"][name] = {**profile, "thread_ms": by_category}
    print(f"\ntraces and HLO dumps: {workdir}")
    report["outcomes"] = harness.outcomes_json(outcomes)
    for outcome in report["outcomes"].values():
        outcome["info"].pop("profile", None)  # in report["profile"]
    harness.write_report("profile_step", report, args.json_out, start_env=start)


if __name__ == "__main__":
    main()
