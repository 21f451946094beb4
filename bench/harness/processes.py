"""The harness's processes: contenders built in spawned interpreters, rounds interleaved."""

import contextlib
import dataclasses
import importlib
import multiprocessing
import os
import sys
import time
import traceback
from collections.abc import Callable, Mapping

from harness.report import failure_line, load_average


@dataclasses.dataclass(frozen=True)
class Contender:
    """One thing to time, built and run in a process of its own.

    Attributes:
        name: its key in the report.
        build: "module:function"; its process imports the module (from bench/) and calls the
            function with `options`, which returns a `Workload` or a plain callable (one round).
        options: keyword arguments of `build` (picklable).
        label: its text in the table (default: `name`).
        env: environment variables of its process, set before the interpreter starts; a value
            of None removes the variable.
        work: units of work per round (images, steps), for the rate.
        reference: the contender it is compared with; default: the run's reference.
    """

    name: str
    build: str
    options: Mapping = dataclasses.field(default_factory=dict)
    label: str = ""
    env: Mapping = dataclasses.field(default_factory=dict)
    work: float = 1.0
    reference: str | None = None

    @property
    def text(self):
        return self.label or self.name


@dataclasses.dataclass
class Workload:
    """What a contender's `build` returns, in its own process.

    Attributes:
        run: one round. It may return a dict of figures for the report; a dict holding
            "seconds" gives the round's time itself (a round that times part of its work),
            else the harness times the call.
        info: facts reported once per process, after the warm-up rounds (versions, a loss
            checked for being finite); `run` may add to it during the warm-up.
        finish: called when the process is stopped; its dict joins `info` (a profile taken
            after the timed rounds, say).
    """

    run: Callable
    info: dict = dataclasses.field(default_factory=dict)
    finish: Callable | None = None


@dataclasses.dataclass(frozen=True)
class Schedule:
    """How the rounds are run.

    Attributes:
        rounds: timed rounds per contender, interleaved.
        warmup: untimed rounds in each process before its timed ones (compilation, caches).
        fresh_process_per_round: a new process (built and warmed up again) for every round.
        pause: seconds between two rounds, so that the last contender's threads go idle.
        timeout: seconds a process may take from its start to the end of its first round,
            and for each later round; None waits for ever.
    """

    rounds: int = 3
    warmup: int = 1
    fresh_process_per_round: bool = False
    pause: float = 0.2
    timeout: float | None = None


@dataclasses.dataclass
class Outcome:
    """A contender's rounds (each a dict: seconds, cpu_seconds, load_before, load_after and
    the workload's figures), its info (with build_seconds, from the process's start to the
    end of its warm-up, and peak_rss_mib) and, if it failed, why."""

    contender: Contender
    rounds: list = dataclasses.field(default_factory=list)
    info: dict = dataclasses.field(default_factory=dict)
    error: str | None = None

    def seconds(self):
        return [entry["seconds"] for entry in self.rounds]


class ContenderError(RuntimeError):
    """A contender's process failed, crashed or ran out of time."""


def _peak_rss_mib():
    """Peak resident set size of this process in MiB (ru_maxrss: KiB on Linux, B on macOS)."""
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


@contextlib.contextmanager
def _environment(env):
    """Within the block, os.environ holds `env` (None removes a variable); restored after."""
    saved = {name: os.environ.get(name) for name in env}
    try:
        for name, value in env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = str(value)
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _resolve(path):
    module, _, function = path.partition(":")
    return getattr(importlib.import_module(module), function)


def _timed(workload):
    start, cpu = time.perf_counter(), time.process_time()
    figures = workload.run() or {}
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    return {"seconds": wall, "cpu_seconds": cpu, **figures}


def _child(build, options, warmup, conn):
    """A contender's process: build, warm up, then one round per "run" until "stop"."""
    try:
        workload = _resolve(build)(**options)
        if not isinstance(workload, Workload):
            workload = Workload(run=workload)
        for _ in range(warmup):
            workload.run()
        conn.send(("ready", workload.info))
        while conn.recv() == "run":
            conn.send(("round", _timed(workload)))
        final = workload.finish() if workload.finish else {}
        conn.send(("stopped", {**(final or {}), "peak_rss_mib": _peak_rss_mib()}))
    except Exception:  # noqa: BLE001 - the parent reports it and goes on without this one
        conn.send(("error", traceback.format_exc()))


class _Process:
    """The parent's handle on one contender's process."""

    def __init__(self, contender, schedule, context):
        self.timeout = schedule.timeout
        started = time.monotonic()
        self.deadline = None if self.timeout is None else started + self.timeout
        self.conn, child = context.Pipe()
        args = (contender.build, dict(contender.options), schedule.warmup, child)
        with _environment(contender.env):  # the spawned interpreter starts with it
            self.process = context.Process(target=_child, args=args, daemon=True)
            self.process.start()
        child.close()
        self.info = self._receive()
        self.info["build_seconds"] = round(time.monotonic() - started, 2)
        # The first round may take what the build and warm-up left of the timeout.
        self.first_round_allowance = None
        if self.timeout is not None:
            self.first_round_allowance = self.timeout - (time.monotonic() - started)
        self.rounds_done = 0

    def _receive(self):
        wait = None if self.deadline is None else max(self.deadline - time.monotonic(), 0)
        if wait is not None and not self.conn.poll(wait):
            self.kill()
            raise ContenderError(f"timed out after {self.timeout:g} s")
        try:
            kind, payload = self.conn.recv()
        except EOFError:
            self.process.join(10)
            code = self.process.exitcode
            raise ContenderError(f"its process ended without a word (exit status {code})") from None
        if kind == "error":
            self.process.join(10)
            raise ContenderError(payload)
        return payload

    def _allow(self, seconds):
        self.deadline = None if seconds is None else time.monotonic() + seconds

    def round(self):
        self._allow(self.timeout if self.rounds_done else self.first_round_allowance)
        self.conn.send("run")
        figures = self._receive()
        self.rounds_done += 1
        return figures

    def stop(self):
        self._allow(self.timeout)
        self.conn.send("stop")
        try:
            return self._receive()
        finally:
            self.process.join(10)

    def kill(self):
        if self.process.is_alive():
            self.process.kill()
        self.process.join(10)


def _round(process):
    before = load_average()
    figures = process.round()
    return {**figures, "load_before": before, "load_after": load_average()}


def _merge_info(outcome, info):
    peak = max(info.get("peak_rss_mib", 0.0), outcome.info.get("peak_rss_mib", 0.0))
    outcome.info.update(info)
    if peak:
        outcome.info["peak_rss_mib"] = peak


def _say(log, outcome, index, rounds, record=None):
    name = outcome.contender.text
    if record is None:
        log(f"{name}: failed: {failure_line(outcome.error)}")
        return
    load = record["load_after"][0] if record["load_after"] else "n/a"
    log(f"round {index + 1}/{rounds}: {name}: {record['seconds']:.3f} s (load {load})")


def run(contenders, schedule=Schedule(), log=print):
    """Times `contenders` in interleaved rounds, each in its own process(es).

    A contender whose process fails (while building, warming up or in a round), crashes or
    runs out of time is reported through `log` and left out of the later rounds; the others
    go on.

    Args:
        contenders: a sequence of `Contender`, with distinct names.
        schedule: the `Schedule`.
        log: prints one line (progress and failures); `lambda line: None` silences it.

    Returns:
        `{name: Outcome}` in the order of `contenders`.
    """
    context = multiprocessing.get_context("spawn")
    outcomes = {c.name: Outcome(c) for c in contenders}
    processes = {}
    try:
        if not schedule.fresh_process_per_round:
            for outcome in outcomes.values():
                _start(outcome, schedule, context, processes, log)
        for index in range(schedule.rounds):
            for outcome in outcomes.values():
                if outcome.error is None:
                    _one_round(outcome, index, schedule, context, processes, log)
                    time.sleep(schedule.pause)
    finally:
        for name, process in processes.items():
            _stop(outcomes[name], process)
    return outcomes


def _start(outcome, schedule, context, processes, log):
    try:
        process = _Process(outcome.contender, schedule, context)
    except ContenderError as error:
        outcome.error = str(error)
        _say(log, outcome, 0, schedule.rounds)
        return None
    _merge_info(outcome, process.info)
    processes[outcome.contender.name] = process
    if not schedule.fresh_process_per_round:
        seconds = process.info["build_seconds"]
        log(f"{outcome.contender.text}: built and warmed up in {seconds:.0f} s")
    return process


def _one_round(outcome, index, schedule, context, processes, log):
    name = outcome.contender.name
    process = processes.get(name) or _start(outcome, schedule, context, processes, log)
    if process is None:
        return
    try:
        record = _round(process)
    except ContenderError as error:
        outcome.error = str(error)
        processes.pop(name).kill()
        _say(log, outcome, index, schedule.rounds)
        return
    outcome.rounds.append(record)
    _say(log, outcome, index, schedule.rounds, record)
    if schedule.fresh_process_per_round:
        _stop(outcome, processes.pop(name))


def _stop(outcome, process):
    try:
        _merge_info(outcome, process.stop())
    except (ContenderError, OSError) as error:
        outcome.error = outcome.error or f"while stopping: {error}"
        process.kill()


def _call_child(function, kwargs, conn):
    try:
        conn.send(("result", _resolve(function)(**kwargs)))
    except Exception:  # noqa: BLE001 - raised again in the parent
        conn.send(("error", traceback.format_exc()))


def call_in_process(function, kwargs=None, env=None, timeout=None):
    """`function(**kwargs)` ("module:function") in a fresh spawned process; its result.

    Raises:
        ContenderError: when it raises (the traceback is the message), crashes or times out.
    """
    context = multiprocessing.get_context("spawn")
    conn, child = context.Pipe()
    with _environment(env or {}):
        process = context.Process(target=_call_child, args=(function, kwargs or {}, child))
        process.start()
    child.close()
    try:
        if not conn.poll(timeout):
            raise ContenderError(f"{function} timed out after {timeout:g} s")
        kind, payload = conn.recv()
    except EOFError:
        raise ContenderError(f"{function} ended without a word") from None
    finally:
        if process.is_alive():
            process.kill()
        process.join(10)
    if kind == "error":
        raise ContenderError(payload)
    return payload
