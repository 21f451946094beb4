"""bench/harness: contenders in their own processes, interleaved rounds, ratios, the report."""

import json
import math
import os
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HERE = "test_bench_harness"  # this module, as the spawned processes import it


@pytest.fixture
def harness(monkeypatch):
    monkeypatch.syspath_prepend(os.path.join(ROOT, "bench"))
    monkeypatch.syspath_prepend(os.path.dirname(os.path.abspath(__file__)))
    import harness

    return harness


# Builds, run in the contenders' processes (spawned: they import this module by name).


def pid_and_clock(seconds=0.0, variable=None):
    """A round that sleeps `seconds` and says when it started and in which process."""
    from harness import Workload

    info = {"variable": os.environ.get(variable) if variable else None, "pid": os.getpid()}

    def run():
        started = time.monotonic()  # one clock for every process on the machine
        time.sleep(seconds)
        return {"pid": os.getpid(), "started": started}

    return Workload(run=run, info=info, finish=lambda: {"finished": True})


def own_seconds():
    """A round that reports its own time (the harness must keep it)."""
    return lambda: {"seconds": 0.5}


def hypotenuse(a, b):
    return math.hypot(a, b)


def broken():
    raise ValueError("cannot build this one")


def slow_build(seconds):
    time.sleep(seconds)
    return lambda: None


def test_rounds_are_interleaved_each_contender_in_its_own_process(harness):
    contenders = [
        harness.Contender("a", f"{HERE}:pid_and_clock", {"seconds": 0.05}, work=10),
        harness.Contender("b", f"{HERE}:pid_and_clock", {"seconds": 0.05}, work=10),
    ]
    outcomes = harness.run(contenders, harness.Schedule(rounds=3, warmup=1, pause=0), log=print)
    a, b = outcomes["a"], outcomes["b"]
    assert a.error is None and b.error is None
    starts = sorted(
        [(r["started"], "a") for r in a.rounds] + [(r["started"], "b") for r in b.rounds]
    )
    assert [name for _, name in starts] == ["a", "b"] * 3
    assert {r["pid"] for r in a.rounds} == {a.info["pid"]} != {os.getpid()}
    assert a.info["pid"] != b.info["pid"]
    for record in a.rounds:
        assert record["seconds"] >= 0.05 and record["cpu_seconds"] >= 0
        assert len(record["load_before"]) == 3 and len(record["load_after"]) == 3
    assert a.info["finished"] and a.info["peak_rss_mib"] > 1


def test_fresh_process_per_round_and_environment_set_before_start(harness, monkeypatch):
    monkeypatch.delenv("BENCH_HARNESS_TEST", raising=False)
    contender = harness.Contender(
        "a", f"{HERE}:pid_and_clock", {"variable": "BENCH_HARNESS_TEST"},
        env={"BENCH_HARNESS_TEST": "set"},
    )  # fmt: skip
    schedule = harness.Schedule(rounds=2, warmup=0, fresh_process_per_round=True, pause=0)
    (outcome,) = harness.run([contender], schedule, log=lambda line: None).values()
    assert outcome.error is None
    assert len({r["pid"] for r in outcome.rounds}) == 2
    assert outcome.info["variable"] == "set"
    assert "BENCH_HARNESS_TEST" not in os.environ  # the parent's environment is restored


@pytest.mark.slow  # waits out a contender's timeout: about 15 s
def test_a_failing_or_late_contender_is_reported_and_the_others_go_on(harness):
    lines = []
    contenders = [
        harness.Contender("bad", f"{HERE}:broken"),
        harness.Contender("late", f"{HERE}:slow_build", {"seconds": 120}),
        harness.Contender("good", f"{HERE}:own_seconds"),
    ]
    # 15 s: ample for a spawned interpreter to start on a loaded machine, far below 120.
    schedule = harness.Schedule(rounds=2, warmup=0, pause=0, timeout=15)
    outcomes = harness.run(contenders, schedule, log=lines.append)
    assert "ValueError: cannot build this one" in outcomes["bad"].error
    assert "timed out after 15 s" in outcomes["late"].error
    assert outcomes["good"].seconds() == [0.5, 0.5]  # the round's own time wins
    assert any(line == "bad: failed: ValueError: cannot build this one" for line in lines)


def test_ratios_compare_time_per_unit_of_work_with_the_reference(harness):
    ref = harness.Outcome(harness.Contender("ref", "x:y", work=100))
    ref.rounds = [{"seconds": s} for s in (2.0, 4.0, 3.0)]
    fast = harness.Outcome(harness.Contender("fast", "x:y", work=200))
    fast.rounds = [{"seconds": s} for s in (2.0, 2.0, 3.0)]
    failed = harness.Outcome(harness.Contender("failed", "x:y"), error="ValueError: no")
    rows = harness.summarise({"ref": ref, "fast": fast, "failed": failed}, reference="ref")
    by_name = {row["name"]: row for row in rows}
    assert by_name["ref"]["ratio"] == 1.0 and by_name["ref"]["rate"] == pytest.approx(100 / 3)
    # fast: 0.01 s per unit (median of 0.01, 0.01, 0.015) against the reference's 0.03.
    assert by_name["fast"]["ratio"] == pytest.approx(3.0)
    # Round by round: 0.02 / 0.01, 0.04 / 0.01, 0.03 / 0.015.
    assert by_name["fast"]["paired_ratio"] == pytest.approx(2.0)
    assert by_name["failed"]["ratio"] is None and by_name["failed"]["rounds"] == 0
    text = harness.table(rows)
    assert "| fast | 2.000 | 2.000 | 100.0 | 3.00× (ref) | 2.00× | 3 |" in text
    assert "| failed | failed |" in text


def test_report_names_the_cpu_and_holds_every_round(harness, tmp_path):
    outcome = harness.Outcome(harness.Contender("a", "x:y", env={"TF_ENABLE_ONEDNN_OPTS": "0"}))
    outcome.rounds = [{"seconds": 1.0, "load_before": [0.1, 0.2, 0.3]}]
    path = harness.write_report(
        "unit", {"outcomes": harness.outcomes_json({"a": outcome})}, tmp_path / "r" / "x.json"
    )
    report = json.loads(path.read_text())
    environment = report["environment"]
    assert report["benchmark"] == "unit"
    assert environment["cpu"].startswith(environment["cpu_model"])
    assert isinstance(environment["native_bfloat16"], bool)
    assert "TF_ENABLE_ONEDNN_OPTS" in environment["variables"]
    assert report["outcomes"]["a"]["env"] == {"TF_ENABLE_ONEDNN_OPTS": "0"}
    assert report["outcomes"]["a"]["rounds"][0]["seconds"] == 1.0
    default = harness.default_path("train_step")
    assert default.parent == harness.RESULTS_DIR and default.name.startswith("train_step-")


def test_call_in_process_returns_the_result_or_raises_with_the_traceback(harness):
    assert harness.call_in_process(f"{HERE}:hypotenuse", {"a": 3.0, "b": 4.0}) == 5.0
    with pytest.raises(harness.ContenderError, match="cannot build this one"):
        harness.call_in_process(f"{HERE}:broken")


def test_failure_line_takes_the_exception_and_its_telling_detail(harness):
    text = (
        "Traceback (most recent call last):\n"
        "tensorflow.python.framework.errors_impl.InvalidArgumentError: Graph execution error:\n"
        "\nDetected at node Assert\nassertion failed: [Cannot decode image file]\n"
    )
    line = harness.failure_line(text)
    assert line.startswith("tensorflow.python.framework.errors_impl.InvalidArgumentError")
    assert line.endswith("assertion failed: [Cannot decode image file]")
    assert harness.failure_line("killed\n") == "killed"
    assert harness.failure_line("") == "no output"
