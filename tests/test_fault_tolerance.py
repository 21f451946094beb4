"""kill -9 at random points (in a step, in a checkpoint write), SIGTERM, rerun: finish exactly;
what a resumed run prints and records (progress, flags)."""

import contextlib
import datetime
import io
import os
import random
import re
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from absl.testing import flagsaver
from helpers import tiny_encoder
from test_end_to_end import TINY

import byol_tf
import train
from byol_tf.runs import checkpoints, run_folder, writer_lock

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EPOCHS, STEPS = 3, 4
FLAGS = [
    "--dataset=demo", "--image_size=28", "--width_multiplier=0.125", "--projection_dim=16",
    "--hidden_dim=32", "--batch_size=32", "--recipe=small_data", "--learning_rate=1.0",
    "--warmup_epochs=1", f"--epochs={EPOCHS}",
    f"--steps_per_epoch={STEPS}",
    "--knn_every_epochs=0", "--nodemo_baseline", "--checkpoint_every_steps=1",
    "--keep_checkpoints=20", "--log_every_steps=1", "--deterministic", "--seed=3",
]  # fmt: skip
KILLS = 5


def _start(model_dir, log, strategy, extra=()):
    command = [sys.executable, os.path.join(ROOT, "train.py"), *FLAGS, *extra]
    command += [f"--model_dir={model_dir}", f"--strategy={strategy}"]
    env = dict(os.environ, PYTHONUNBUFFERED="1", TF_CPP_MIN_LOG_LEVEL="3")
    with open(log, "w") as out:
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, env=env)


def _latest_step(model_dir):
    found = checkpoints.list_checkpoints(model_dir)
    return found[-1][0] if found else 0


def _writing(model_dir):
    folder = checkpoints.checkpoint_dir(model_dir)
    return os.path.isdir(folder) and any(n.endswith(".tmp.keras") for n in os.listdir(folder))


def _kill_at_random_point(process, model_dir, rng):
    """SIGKILLs `process` during a checkpoint write or in a step after a new checkpoint.

    Returns the kind of point, or None if the run finished first.
    """
    kind = rng.choice(["write", "step"])
    target = _latest_step(model_dir) + 1
    delay = rng.uniform(0.0, 0.4)
    while process.poll() is None:
        if kind == "write" and _writing(model_dir):
            break
        if kind == "step" and _latest_step(model_dir) >= target:
            time.sleep(delay)  # lands somewhere in the following step(s)
            break
        time.sleep(0.005)
    if process.poll() is not None:
        return None
    process.send_signal(signal.SIGKILL)
    process.wait()
    return kind


def _terminate_mid_epoch(process, model_dir, before):
    """SIGTERMs `process` after the first step of an epoch it trains; returns its exit code."""
    while process.poll() is None:
        latest = _latest_step(model_dir)
        if latest > before and latest % STEPS == 1:
            process.send_signal(signal.SIGTERM)
            break
        time.sleep(0.005)
    return process.wait(timeout=600)


def _check_checkpoints(model_dir, verified):
    """Every finished checkpoint loads, and holds the step, learning rate and τ of its name."""
    peak = 1.0 * 32 / 256  # --learning_rate × batch / 256
    schedule = byol_tf.WarmupCosine(peak, EPOCHS * STEPS, STEPS)
    for step, path in checkpoints.list_checkpoints(model_dir):
        if path in verified:
            continue
        model = checkpoints.load_checkpoint(path)  # raises ValueError if unreadable
        assert int(model.optimizer.iterations.numpy()) == step
        # τ is cosine_tau(iterations) in TargetEMA: the restored counter fixes it too.
        np.testing.assert_allclose(
            float(np.asarray(model.optimizer.learning_rate)), float(schedule(step)), rtol=1e-6
        )
        verified.add(path)


def _weights(model_dir):
    return checkpoints.load_checkpoint(checkpoints.latest_checkpoint(model_dir)).get_weights()


def _run_with_kills(tmp_path, strategy, extra=()):
    killed_dir, straight_dir = str(tmp_path / "killed"), str(tmp_path / "straight")
    # The uninterrupted reference runs alongside the killed one.
    reference = _start(straight_dir, str(tmp_path / "straight.log"), strategy, extra)
    rng, verified, kinds = random.Random(6), set(), []
    for attempt in range(KILLS + 2):  # five SIGKILLs, one SIGTERM, then the last run
        before = _latest_step(killed_dir)
        log = str(tmp_path / f"run{attempt}.log")
        process = _start(killed_dir, log, strategy, extra)
        kind = _kill_at_random_point(process, killed_dir, rng) if attempt < KILLS else None
        if attempt == KILLS:  # SIGTERM: checkpoint at the step boundary, exit 128 + 15
            assert _terminate_mid_epoch(process, killed_dir, before) == 143, open(log).read()
            stopped = re.search(r"Stopped by SIGTERM at step (\d+)", open(log).read())
            assert stopped and int(stopped.group(1)) == _latest_step(killed_dir)
            kind = "SIGTERM"
        elif kind is None:
            assert process.wait(timeout=600) == 0, open(log).read()[-2000:]
        kinds.append(kind)
        output = open(log).read()
        resumed = re.search(r"Resuming from .*ckpt-(\d+)\.keras \(step (\d+)\)", output)
        if before:  # each rerun continues from the newest checkpoint before it
            assert resumed and int(resumed.group(1)) == int(resumed.group(2)) == before, output
        _check_checkpoints(killed_dir, verified)
    assert reference.wait(timeout=600) == 0, open(str(tmp_path / "straight.log")).read()[-2000:]
    assert _latest_step(killed_dir) == EPOCHS * STEPS
    assert not _writing(killed_dir)  # saves remove the half-written files of killed ones
    assert None not in kinds[:-1], kinds  # every interruption landed before the end
    for a, b in zip(_weights(straight_dir), _weights(killed_dir), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_sigkill_five_times_then_resume_equals_an_uninterrupted_run(tmp_path):
    _run_with_kills(tmp_path, "auto")


@pytest.mark.slow
def test_sigkill_and_resume_under_mirrored_strategy(tmp_path):
    _run_with_kills(tmp_path, "mirrored")


@pytest.mark.slow
def test_sigkill_and_resume_with_augmentation_on_the_device(tmp_path):
    # Flip onwards inside the train step, from the seeds the input pipeline ships.
    _run_with_kills(tmp_path, "auto", ["--augment_on=device"])


def test_a_save_removes_half_written_files_of_killed_saves(tmp_path):
    model = byol_tf.BYOL(tiny_encoder(), projection_dim=8, hidden_dim=16)
    model.compile(optimizer=byol_tf.LARS(0.1))
    model.optimizer.build(model.trainable_variables)
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    (folder / ".ckpt-00000003.tmp.keras").write_bytes(b"killed mid-write")
    checkpoints.save_checkpoint(model, str(tmp_path), 4)
    assert os.listdir(folder) == ["ckpt-00000004.keras"]


@pytest.fixture(scope="module")
def resumed(tmp_path_factory):
    """A run of 3 epochs × 2 steps, cut back to step 3 (mid epoch 2) and resumed with another
    --log_every_steps: `(model_dir, what the resumed invocation printed)`."""
    model_dir = str(tmp_path_factory.mktemp("resumed") / "run")
    settings = dict(TINY, model_dir=model_dir, epochs=3, knn_every_epochs=0, demo_baseline=False)
    with flagsaver.flagsaver(**settings):
        assert train.main(["train.py"]) == 0
    for step, path in checkpoints.list_checkpoints(model_dir):
        if step > 3:
            os.remove(path)  # as if the run had been killed during step 4
    printed = io.StringIO()
    with flagsaver.flagsaver(**dict(settings, log_every_steps=2)):
        with contextlib.redirect_stdout(printed):
            assert train.main(["train.py"]) == 0
    return model_dir, printed.getvalue()


def test_resumed_progress_counts_the_epochs_of_the_whole_run(resumed):
    epochs = [line for line in resumed[1].splitlines() if line.startswith("Epoch ")]
    assert epochs == ["Epoch 2/3", "Epoch 3/3"]
    assert "Resuming from" in resumed[1] and "(step 3)" in resumed[1]


def test_flags_txt_holds_the_latest_flags_and_the_history_each_invocation(resumed):
    model_dir = resumed[0]
    with open(os.path.join(model_dir, "flags.txt")) as handle:
        lines = handle.read().splitlines()
    assert len(lines) == len(set(lines))  # one invocation's flags, not one per invocation
    assert [line for line in lines if line.startswith("--log_every_steps=")] == [
        "--log_every_steps=2"
    ]
    with open(os.path.join(model_dir, "flags_history.txt")) as handle:
        history = [line.split("\t") for line in handle.read().splitlines()]
    assert history[0][0].startswith("# ")
    assert [entry[0] for entry in history[1:]] == ["step 0", "step 3"]
    for _, started, _ in history[1:]:
        assert datetime.datetime.fromisoformat(started).tzinfo is not None
    first = history[1][2].split()
    assert first[0] == "set:" and f"--model_dir={model_dir}" in first
    assert "--epochs=3" in first and "--log_every_steps=1" in first
    assert history[2][2] == "changed: --log_every_steps=2"


# --- one writer per run folder, and Ctrl-C at any moment --------------------------------------


def _snapshot(folder):
    found = {}
    for base, _, names in os.walk(folder):
        for name in names:
            with open(os.path.join(base, name), "rb") as handle:
                found[os.path.relpath(os.path.join(base, name), folder)] = handle.read()
    return found


def test_train_on_a_folder_another_process_holds_exits_in_one_line_writing_nothing(tmp_path):
    model_dir = str(tmp_path / "run")
    holder = run_folder.write_dir(model_dir, chief=True)  # as a running train.py would
    before = _snapshot(model_dir)
    with flagsaver.flagsaver(**dict(TINY, model_dir=model_dir)):
        with pytest.raises(SystemExit) as error:
            train.main(["train.py"])
    message = str(error.value.code)
    assert "\n" not in message
    assert message.startswith(f"train.py: error: --model_dir={model_dir} is in use by another ")
    assert f"(pid {os.getpid()} on " in message
    assert _snapshot(model_dir) == before
    run_folder.remove_write_dir(holder, model_dir)


def _wait_for(predicate, process, timeout=300):
    deadline = time.time() + timeout
    while not predicate():
        assert process.poll() is None and time.time() < deadline, "never reached"
        time.sleep(0.005)


def _interrupt(process, log, times, gap=0.05):
    """Sends `times` SIGINTs `gap` s apart; returns the output's lines once `process` ends."""
    for _ in range(times):
        process.send_signal(signal.SIGINT)
        time.sleep(gap)
    assert process.wait(timeout=300) == 130, open(log).read()
    lines = open(log).read().splitlines()
    assert not [line for line in lines if "Traceback" in line or "Error" in line], lines
    return lines


def test_ctrl_c_while_tensorflow_loads_ends_in_one_line(tmp_path):
    model_dir, log = str(tmp_path / "run"), str(tmp_path / "log")
    process = _start(model_dir, log, "auto")
    time.sleep(1.0)
    lines = _interrupt(process, log, times=1)
    assert len(lines) == 1 and lines[0].startswith("train.py: interrupted (Ctrl-C)"), lines


@pytest.mark.parametrize("delay", [0.03, 0.08, 0.15, 0.25, 0.4])
def test_ctrl_c_in_the_first_moments_never_prints_a_traceback(tmp_path, delay):
    # Before Python sets up its own Ctrl-C handling, SIGINT ends the process by the signal
    # (no output at all); from then on, including while train.py imports its modules, one line
    # and status 130.
    model_dir, log = str(tmp_path / "run"), str(tmp_path / "log")
    process = _start(model_dir, log, "auto")
    time.sleep(delay)
    process.send_signal(signal.SIGINT)
    code = process.wait(timeout=300)
    lines = open(log).read().splitlines()
    if lines[:1] == ["Fatal Python error: init_import_site: Failed to import the site module"]:
        # On a loaded machine the signal can land while Python itself still starts up (its
        # `site` module runs the environment's .pth files): CPython reports that in its own
        # words, before any line of train.py runs. Nothing of the program may be in it.
        assert code == 1 and lines[-1] == "KeyboardInterrupt", (code, lines)
        assert not [line for line in lines if "train.py" in line or "byol_tf" in line], lines
        return
    assert not [line for line in lines if "Traceback" in line or "Error" in line], lines
    if code == -signal.SIGINT:
        assert lines == [], lines
    else:
        assert code == 130, (code, lines)
        assert len(lines) == 1 and lines[0].startswith("train.py: interrupted (Ctrl-C)"), lines


# Runs a program with its first import (`from byol_tf import programs`) held up until SIGINT
# arrives: what a loaded machine does by chance, here every time.
_SLOW_FIRST_IMPORT = """
import os, runpy, sys, time
marker = sys.argv[1]
class HoldUp:
    def find_spec(self, name, path=None, target=None):
        if name == "byol_tf.cli.programs":
            open(marker, "w").close()
            time.sleep(60)
        return None
sys.meta_path.insert(0, HoldUp())
sys.argv = sys.argv[2:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


@pytest.mark.parametrize("program", ["train.py", "evaluate.py"])
def test_ctrl_c_while_the_program_imports_its_entry_point_ends_in_one_line(tmp_path, program):
    marker, log = str(tmp_path / "importing"), str(tmp_path / "log")
    command = [sys.executable, "-c", _SLOW_FIRST_IMPORT, marker, os.path.join(ROOT, program)]
    with open(log, "w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
    _wait_for(lambda: os.path.exists(marker), process, timeout=60)
    lines = _interrupt(process, log, times=1)
    assert lines == [f"{program}: interrupted (Ctrl-C)."], lines


def test_ctrl_c_twice_during_start_up_ends_in_one_line_and_releases_the_folder(tmp_path):
    model_dir, log = str(tmp_path / "run"), str(tmp_path / "log")
    process = _start(model_dir, log, "auto")
    _wait_for(lambda: os.path.exists(os.path.join(model_dir, writer_lock.LOCK)), process)
    lines = _interrupt(process, log, times=2)
    assert lines[-1] == (
        f"train.py: interrupted (Ctrl-C); run the same command again to resume in {model_dir}."
    )
    assert not [line for line in lines[:-1] if "interrupted" in line]
    assert not os.path.exists(os.path.join(model_dir, writer_lock.LOCK))


@pytest.mark.slow
def test_ctrl_c_twice_during_training_leaves_no_half_written_checkpoint(tmp_path):
    model_dir, log = str(tmp_path / "run"), str(tmp_path / "log")
    process = _start(model_dir, log, "auto", ["--epochs=20"])
    _wait_for(lambda: _latest_step(model_dir) >= 1, process)
    lines = _interrupt(process, log, times=2, gap=0.2)
    stops = [line for line in lines if "interrupted" in line or line.startswith("Stopped by")]
    assert 1 <= len(stops) <= 2 and stops[-1] == lines[-1], lines
    assert not _writing(model_dir)
    assert not os.path.exists(os.path.join(model_dir, writer_lock.LOCK))
    checkpoints.load_checkpoint(checkpoints.latest_checkpoint(model_dir))


@pytest.mark.slow
def test_a_second_train_py_on_a_running_folder_is_refused(tmp_path):
    model_dir = str(tmp_path / "run")
    first = _start(model_dir, str(tmp_path / "first.log"), "auto", ["--epochs=20"])
    _wait_for(lambda: _latest_step(model_dir) >= 1, first)  # training
    second = _start(model_dir, str(tmp_path / "second.log"), "auto")
    assert second.wait(timeout=300) == 1
    output = open(str(tmp_path / "second.log")).read().splitlines()
    assert output[-1].startswith(f"train.py: error: --model_dir={model_dir} is in use by another")
    assert f"(pid {first.pid} on " in output[-1]
    _interrupt(first, str(tmp_path / "first.log"), times=1)
    history = open(os.path.join(model_dir, "flags_history.txt")).read().splitlines()
    assert len(history) == 2  # its header and the first process's line: the second wrote nothing


def _terminate(process, log):
    """SIGTERMs `process`; returns its exit status and output lines, checked for tracebacks."""
    process.send_signal(signal.SIGTERM)
    code = process.wait(timeout=300)
    lines = open(log).read().splitlines()
    assert not [line for line in lines if "Traceback" in line or "Error" in line], lines
    return code, lines


def _catches_sigterm(pid):
    """Whether process `pid` has a handler of its own for SIGTERM (Linux: /proc/<pid>/status)."""
    with open(f"/proc/{pid}/status") as handle:
        caught = next(line for line in handle if line.startswith("SigCgt:")).split()[1]
    return bool(int(caught, 16) >> (signal.SIGTERM - 1) & 1)


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads /proc")
@pytest.mark.parametrize("delay", [0.0, 0.3, 1.5])
def test_sigterm_during_start_up_ends_with_143_and_no_lock(tmp_path, delay):
    # train.py handles SIGTERM from its first lines on (before, in the few milliseconds of
    # Python's own start-up, the signal ends the process by the signal, having done nothing):
    # while its modules and TensorFlow load, and during start-up, one line and status 143.
    model_dir, log = str(tmp_path / "run"), str(tmp_path / "log")
    process = _start(model_dir, log, "auto")
    _wait_for(lambda: _catches_sigterm(process.pid), process)
    time.sleep(delay)
    code, lines = _terminate(process, log)
    assert code == 143 and lines[-1] == "train.py: terminated (SIGTERM).", (code, lines)
    assert not os.path.exists(os.path.join(model_dir, writer_lock.LOCK))


def test_sigterm_once_the_folder_is_locked_releases_it_and_leaves_no_new_folder(tmp_path):
    model_dir, log = str(tmp_path / "run"), str(tmp_path / "log")
    process = _start(model_dir, log, "auto")
    _wait_for(lambda: os.path.exists(os.path.join(model_dir, writer_lock.LOCK)), process)
    code, lines = _terminate(process, log)
    assert code == 143 and lines[-1] == "train.py: terminated (SIGTERM).", (code, lines)
    assert not os.path.exists(model_dir)  # nothing was written in it: removed with its lock


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_that_cuts_an_objects_init_short_ends_in_the_one_line_alone(signum):
    """SIGTERM (or Ctrl-C) landing inside an `__init__` leaves a half-built object whose
    `__del__` fails as it is collected (a `zipfile.ZipFile` opening the demo set, in the train
    program): the program still ends in its one line, with no "Exception ignored" traceback."""
    code = textwrap.dedent(f"""
        import os, signal, sys
        from byol_tf.cli import programs

        programs.end_on_sigterm("train.py")

        class HalfBuilt:
            def __init__(self):
                os.kill(os.getpid(), {int(signum)})  # the signal lands here, as in ZipFile
                self.ready = True

            def __del__(self):
                self.ready  # AttributeError: __init__ never got this far

        try:
            HalfBuilt()
        except KeyboardInterrupt:
            programs.interrupted(["train.py"])
    """)
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    line, status = {
        signal.SIGTERM: ("terminated (SIGTERM)", 143),
        signal.SIGINT: ("interrupted (Ctrl-C)", 130),
    }[signum]
    assert result.returncode == status, result.stderr
    assert result.stderr.splitlines() == [f"train.py: {line}."], result.stderr
