"""Side-by-side timing for the benchmarks: fresh processes, interleaved rounds, a JSON report.

Machines that run benchmarks are shared and noisy, so every benchmark here times its
contenders the same way, and only ratios within one run are figures:

- Each contender runs in a process of its own, started by `multiprocessing`'s "spawn" (a fresh
  interpreter: no thread pool, allocator or compiled function is shared), with its own
  environment variables set before the interpreter starts (`TF_ENABLE_ONEDNN_OPTS`,
  `XLA_FLAGS`, thread counts: what frameworks read once, at import). Processes are built and
  warmed up one after the other, so that no build competes with another.
- Rounds are interleaved, A B C, A B C, ...: a change in the machine's load hits every
  contender alike. With `fresh_process_per_round` each round gets a new process (for
  contenders that keep working while idle, as tf.data's prefetching does).
- The load average is read before and after every round, the CPU's model and feature flags
  (`byol_tf.training.hardware`), the versions and the environment variables that change kernels are
  recorded, and the report, every round included, is written as JSON into bench/results/.

A contender is a `Contender`: the name of a function ("module:function", importable from
bench/) that its process calls to build a `Workload`, whose `run()` is one round. `run`
times the rounds and returns an `Outcome` per contender; `summarise` turns them into rows
with medians and ratios; `table` prints them; `write_report` writes the JSON.
"""

import sys

from harness.processes import (
    Contender,
    ContenderError,
    Outcome,
    Schedule,
    Workload,
    call_in_process,
    run,
)
from harness.report import (
    KERNEL_VARIABLES,
    REPO_ROOT,
    RESULTS_DIR,
    add_report_flag,
    default_path,
    describe_environment,
    environment,
    failure_line,
    load_average,
    outcomes_json,
    summarise,
    table,
    thread_env,
    write_report,
)

# The benchmarks measure the working tree's byol_tf, not a copy installed in the environment;
# spawned processes inherit this path.
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

__all__ = [
    "KERNEL_VARIABLES", "RESULTS_DIR", "Contender", "ContenderError", "Outcome", "Schedule",
    "Workload", "add_report_flag", "call_in_process", "default_path", "describe_environment",
    "environment", "failure_line", "load_average", "outcomes_json", "run", "summarise", "table",
    "thread_env", "write_report",
]  # fmt: skip
