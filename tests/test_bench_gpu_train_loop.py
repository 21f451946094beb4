"""bench/gpu_train_loop.py (with train_loop_mode.py and gpu_monitor.py): its arguments, its
arithmetic, and a smoke run on the CPU."""

import json
import os
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "bench", "gpu_train_loop.py")
SMOKE = [
    "--encoder_depth=18",
    "--image_size=32",
    "--batch_size=4",
    "--num_images=16",
    "--warmup_steps=1",
    "--steps=2",
]


def _run(args, timeout):
    # The worktree's byol_tf first, and no GPU: the smoke run is a CPU run wherever it runs.
    path = os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p)
    env = dict(os.environ, PYTHONPATH=path, CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run(
        [sys.executable, SCRIPT, *args], capture_output=True, text=True, timeout=timeout, env=env
    )


@pytest.fixture
def bench_module(monkeypatch):
    monkeypatch.syspath_prepend(os.path.join(ROOT, "bench"))
    import gpu_train_loop

    return gpu_train_loop


@pytest.fixture
def mode_module(bench_module):
    import train_loop_mode

    return train_loop_mode


@pytest.fixture
def monitor_module(bench_module):
    import gpu_monitor

    return gpu_monitor


@pytest.mark.parametrize(
    "args, message",
    [
        (["--batch_size=0"], "expected a positive integer, got 0"),
        (["--steps=1"], "--steps must be at least 2"),
        (["--num_images=8", "--batch_size=16"], "--num_images=8 is below --batch_size=16"),
        (["--folder=/nonexistent/images"], "is not a directory"),
        (["--encoder_depth=101"], "invalid choice"),
    ],
)
def test_bad_arguments_end_in_one_error_line(args, message):
    result = _run(args, timeout=60)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gpu_train_loop.py: error: "), lines
    assert message in lines[0]


def test_rates_count_images_over_the_timed_window(bench_module, mode_module):
    # Batch ends at 0 (last warm-up step), 1, 2, 3, 5 s: four timed steps of 8 images.
    summary = mode_module.summarise_steps([10.0, 11.0, 12.0, 13.0, 15.0], 8)
    assert summary["images_per_s"] == pytest.approx(32 / 5)
    assert summary["images_per_s_second_half"] == pytest.approx(16 / 3)
    assert summary["step_ms_median"] == pytest.approx(1000)
    assert summary["step_ms"] == pytest.approx([1000, 1000, 1000, 2000])
    steady = dict(summary, mode="host", images_per_s_second_half=6.0)
    assert bench_module.steadiness_notes([steady]) == []
    assert "not steady" in bench_module.steadiness_notes([dict(summary, mode="host")])[0]


def test_a_failed_mode_is_told_in_one_line(bench_module):
    stderr = (
        'Traceback (most recent call last):\n  File "x.py", line 1, in <module>\n'
        "tensorflow.python.framework.errors_impl.InvalidArgumentError: Graph execution error:\n"
        "\nDetected at node Assert/Assert\n<stack traces unavailable>\n"
        "Error in user-defined function: assertion failed: [Cannot decode image file]\n"
        "\t [[IteratorGetNext]]\n"
    )
    line = bench_module.failure_line(stderr)
    assert line.startswith("tensorflow.python.framework.errors_impl.InvalidArgumentError")
    assert line.endswith("assertion failed: [Cannot decode image file]")
    assert bench_module.failure_line("ValueError: bad\n") == "ValueError: bad"
    assert bench_module.failure_line("killed\n") == "killed"


def test_gpu_monitor_without_nvidia_smi_says_not_available(monitor_module, monkeypatch):
    monkeypatch.setattr(monitor_module.shutil, "which", lambda name: None)
    monitor = monitor_module.GPUMonitor()
    monitor.start()
    monitor.stop()
    assert monitor.summary()["gpu_util_percent"] == "n/a"


def test_gpu_monitor_polls_nvidia_smi(monitor_module, monkeypatch, tmp_path):
    fake = tmp_path / "nvidia-smi"
    fake.write_text("#!/bin/sh\necho '57, 1234, NVIDIA H200'\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path), prepend=os.pathsep)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monitor = monitor_module.GPUMonitor()
    assert monitor.command[-1] == "--id=0"
    monitor.start()
    time.sleep(1.2)
    monitor.stop()
    summary = monitor.summary()
    assert summary["gpu_util_percent"] == 57 and summary["gpu_memory_used_mib"] == 1234
    assert 2 <= summary["gpu_samples"] <= 4
    assert monitor_module.query_gpu(monitor.command)[2] == "NVIDIA H200"


@pytest.mark.slow  # two child processes each compile a ResNet-18 BYOL step with XLA
def test_smoke_run_measures_both_modes(tmp_path):
    out = tmp_path / "loop.json"
    result = _run([*SMOKE, "--mode_timeout=600", f"--json_out={out}"], timeout=1300)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())
    modes = {entry["mode"]: entry for entry in report["modes"]}
    assert set(modes) == {"host", "device"}
    for entry in modes.values():
        assert entry["images_per_s"] > 0
        assert len(entry["step_ms"]) == 2
        assert entry["policy"] == "float32"  # no GPU: mixed precision off by default
        assert entry["gpu_util_percent"] == "n/a"  # the GPUs, if any, are hidden
    assert report["ratio_device_to_host"] > 0
    assert report["host"]["cpu"] and report["environment"]["cpu_model"]
    assert "| host |" in result.stdout and "| device |" in result.stdout
    assert "device / host images/s in this run" in result.stdout
