"""The harness's report: medians and ratios, the machine and versions, the JSON file."""

import contextlib
import datetime
import importlib.metadata
import json
import os
import pathlib
import platform
import re
import statistics
import subprocess

BENCH_DIR = pathlib.Path(__file__).resolve().parent.parent
REPO_ROOT = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
PACKAGES = (
    "tensorflow", "keras", "numpy", "torch", "torchvision", "byol-pytorch", "pillow",
    "matplotlib",
)  # fmt: skip
# Variables that change which kernels run, or on how many threads.
KERNEL_VARIABLES = (
    "TF_ENABLE_ONEDNN_OPTS", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "XLA_FLAGS",
    "TF_XLA_FLAGS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
    "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS", "CUDA_VISIBLE_DEVICES",
)  # fmt: skip


def load_average():
    """The 1, 5 and 15 minute load averages, or None where the system has none."""
    try:
        return [round(value, 2) for value in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def thread_env(threads):
    """Environment variables that hold OpenMP, MKL, OpenBLAS and TensorFlow's pools to
    `threads` threads (the frameworks' own settings still need setting in the process)."""
    names = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
             "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS")  # fmt: skip
    return {name: str(threads) for name in names}


def failure_line(text):
    """One line about why a process failed: its exception, with the most telling line of a
    message that goes on (TensorFlow's "Graph execution error:")."""
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    raised = [i for i, line in enumerate(lines) if re.match(r"[\w.]+(Error|Exception)\b", line)]
    if not raised:
        return lines[-1] if lines else "no output"
    line = lines[raised[-1]]
    if line.endswith(":"):
        rest = lines[raised[-1] + 1 :]
        detail = next((x for x in rest if re.search(r"failed|error", x, re.I)), "")
        line = f"{line} {detail}"
    return line[:400]


def _median(values):
    return statistics.median(values) if values else None


def summarise(outcomes, reference=None):
    """One row per contender: medians over rounds, the rate and the ratio to its reference.

    The ratio is the reference's median seconds per round over the contender's (above 1:
    faster), each normalised by its work; `paired_ratio` is the median of the same ratio taken
    round by round (neighbouring rounds see about the same load).

    Args:
        outcomes: `run`'s result.
        reference: the default reference contender's name (a contender's own `reference`
            wins); None or a failed reference gives no ratio.

    Returns:
        A list of dicts, in the order of `outcomes`.
    """
    rows = []
    for name, outcome in outcomes.items():
        contender, seconds = outcome.contender, outcome.seconds()
        median = _median(seconds)
        row = {
            "name": name, "label": contender.text, "rounds": len(seconds), "seconds": seconds,
            "median_seconds": median, "min_seconds": min(seconds, default=None),
            "max_seconds": max(seconds, default=None),
            "rate": contender.work / median if median else None,
            "reference": contender.reference or reference, "error": outcome.error,
        }  # fmt: skip
        row.update(_ratios(outcome, outcomes.get(row["reference"])))
        rows.append(row)
    return rows


def _ratios(outcome, base):
    """`ratio` and `paired_ratio` of `outcome` against `base` (an Outcome or None)."""
    if base is None or not base.rounds or not outcome.rounds:
        return {"ratio": None, "paired_ratio": None}
    own = [s / outcome.contender.work for s in outcome.seconds()]
    other = [s / base.contender.work for s in base.seconds()]
    paired = [b / a for a, b in zip(own, other, strict=False)]
    return {"ratio": _median(other) / _median(own), "paired_ratio": _median(paired)}


def _cell(value, spec, suffix=""):
    return "n/a" if value is None else f"{format(value, spec)}{suffix}"


def table(rows, unit="images", per="round"):
    """The rows as a markdown table: median time, rate, ratio to the reference, load."""
    lines = [
        f"| contender | median s / {per} | fastest s | {unit}/s | vs reference "
        "| per-round ratio (median) | rounds |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        if row["error"] and not row["rounds"]:
            lines.append(f"| {row['label']} | failed | | | | | 0 |")
            continue
        reference = f" ({row['reference']})" if row["ratio"] is not None else ""
        lines.append(
            f"| {row['label']} | {_cell(row['median_seconds'], '.3f')} "
            f"| {_cell(row['min_seconds'], '.3f')} | {_cell(row['rate'], '.1f')} "
            f"| {_cell(row['ratio'], '.2f', '×')}{reference} "
            f"| {_cell(row['paired_ratio'], '.2f', '×')} | {row['rounds']} |"
        )
    return "\n".join(lines)


def _versions():
    versions = {"python": platform.python_version()}
    for package in PACKAGES:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions[package] = importlib.metadata.version(package)
    return versions


def _git_commit():
    try:
        result = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "describe", "--always", "--dirty"],
            capture_output=True, text=True, timeout=10, check=False,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() or None


def environment():
    """The machine and software a report was measured on (no framework is imported).

    Returns:
        A dict: cpu (one line), cpu_model, cpu_features (those that matter for speed),
        cpu_flags (all), native_bfloat16, cores, usable_cores, platform, versions (installed
        packages), variables (`KERNEL_VARIABLES`, None when unset), load_average, time (UTC)
        and the repository's commit.
    """
    from byol_tf.training import hardware

    features = hardware.cpu_features()
    usable = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    return {
        "cpu": hardware.describe(),
        "cpu_model": hardware.cpu_model(),
        "cpu_features": [f for f in hardware.RELEVANT_FEATURES if f in features],
        "cpu_flags": sorted(features),
        "native_bfloat16": hardware.native_bfloat16(features),
        "cores": os.cpu_count(),
        "usable_cores": None if usable is None else len(usable),
        "platform": platform.platform(),
        "versions": _versions(),
        "variables": {name: os.environ.get(name) for name in KERNEL_VARIABLES},
        "load_average": load_average(),
        "time": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "commit": _git_commit(),
    }


def describe_environment(env):
    """The environment as a few printable lines."""
    versions = ", ".join(f"{k} {v}" for k, v in env["versions"].items())
    variables = ", ".join(f"{k}={v}" for k, v in env["variables"].items() if v is not None)
    return "\n".join([
        f"CPU: {env['cpu']}; {env['cores']} cores ({env['usable_cores']} usable)",
        f"versions: {versions}",
        f"variables: {variables or 'none set (TF_ENABLE_ONEDNN_OPTS, XLA_FLAGS, ...: defaults)'}",
        f"load average (1, 5, 15 min): {env['load_average']}; commit {env['commit']}",
    ])  # fmt: skip


def default_path(name):
    """bench/results/<name>-<UTC date>-<time>.json: a new file for every run."""
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%d-%H%M%S")
    return RESULTS_DIR / f"{name}-{stamp}.json"


def add_report_flag(parser, name):
    """Adds `--json_out` (default: a new file in bench/results/) to an argparse parser."""
    parser.add_argument(
        "--json_out",
        default=None,
        help=f"where to write the JSON report (default: bench/results/{name}-<date>-<time>.json)",
    )


def outcomes_json(outcomes):
    """Every contender's settings, rounds, info and error, for the report."""
    return {
        name: {
            "label": o.contender.text,
            "build": o.contender.build,
            "options": dict(o.contender.options),
            "env": dict(o.contender.env),
            "work": o.contender.work,
            "rounds": o.rounds,
            "info": o.info,
            "error": o.error,
        }  # fmt: skip
        for name, o in outcomes.items()
    }


def write_report(name, payload, path=None, env=None, start_env=None):
    """Writes `{"benchmark", "environment", "environment_at_start", **payload}` as JSON.

    Args:
        name: the benchmark's name (the default file name starts with it).
        payload: a JSON-serialisable dict (settings, rows, `outcomes_json(...)`, ...).
        path: the file; default `default_path(name)`. Its folder is created.
        env: the environment at the end; default `environment()` now.
        start_env: the environment at the start, if taken (its load average, mostly).

    Returns:
        The path written.
    """
    path = pathlib.Path(path) if path else default_path(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    report = {"benchmark": name, "environment": env or environment()}
    if start_env is not None:
        report["environment_at_start"] = start_env
    report.update(payload)
    path.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"report: {_shown(path)}")
    return path


def _shown(path):
    try:
        return str(path.resolve().relative_to(pathlib.Path.cwd()))
    except ValueError:
        return str(path)
