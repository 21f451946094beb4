"""--strategy=multi_worker: two worker processes on 127.0.0.1 equal one process (same batch)."""

import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time

import numpy as np
import pytest

from byol_tf import checkpoints, distribution

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = [
    "--dataset=demo",
    "--image_size=28",
    "--width_multiplier=0.125",
    "--projection_dim=16",
    "--hidden_dim=32",
    "--batch_size=32",
    "--epochs=2",
    "--steps_per_epoch=2",
    "--checkpoint_every_steps=1",
    "--keep_checkpoints=10",
    "--knn_every_epochs=0",
    "--nodemo_baseline",
    "--deterministic",
]
TIMEOUT_S = 900  # per launch; a loaded 2-core machine needs minutes to trace and compile


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _env(tf_config=None):
    # Collective ops block inter-op threads while they wait for the other worker; on a 2-core
    # machine the default pool (one thread per core) can deadlock, so give it more.
    env = dict(
        os.environ, CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="2", TF_NUM_INTEROP_THREADS="8"
    )
    env.pop("TF_CONFIG", None)
    if tf_config is not None:
        env["TF_CONFIG"] = json.dumps(tf_config)
    return env


def _launch(model_dirs, strategy):
    """Runs one train.py per model_dir (a cluster when several); returns their outputs.

    When one process fails or the time is up, the others are killed at once (they would wait
    for it forever).
    """
    cluster = [f"127.0.0.1:{port}" for port in _free_ports(len(model_dirs))]
    processes, logs = [], []
    for index, model_dir in enumerate(model_dirs):
        tf_config = None
        if len(model_dirs) > 1:
            tf_config = {
                "cluster": {"worker": cluster},
                "task": {"type": "worker", "index": index},
            }
        command = [sys.executable, "train.py", *TINY, f"--strategy={strategy}"]
        logs.append(tempfile.TemporaryFile("w+"))
        processes.append(
            subprocess.Popen(
                [*command, f"--model_dir={model_dir}"],
                cwd=ROOT,
                env=_env(tf_config),
                stdout=logs[-1],
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    deadline = time.monotonic() + TIMEOUT_S
    try:
        while time.monotonic() < deadline:
            codes = [process.poll() for process in processes]
            if all(code == 0 for code in codes) or any(code for code in codes):
                break
            time.sleep(1)
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
            process.wait()
    outputs = []
    for process, log in zip(processes, logs, strict=True):
        log.seek(0)
        outputs.append(log.read())
        log.close()
        assert process.returncode == 0, outputs[-1][-3000:]
    return outputs


def _weights(model_dir):
    path = checkpoints.latest_checkpoint(model_dir)
    return [w.numpy() for w in checkpoints.load_checkpoint(path, compile=False).weights]


def _assert_close(a, b):
    """‖a − b‖ ≤ 1e-4·‖b‖ + 1e-5 per tensor (as tests/test_distribution.py)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert np.linalg.norm(a - b) <= 1e-4 * np.linalg.norm(b) + 1e-5


def test_is_chief_reads_the_cluster_from_tf_config(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert distribution.is_chief()
    cluster = {"worker": ["a:1", "b:1"]}
    for task, chief in ((("worker", 0), True), (("worker", 1), False)):
        config = {"cluster": cluster, "task": {"type": task[0], "index": task[1]}}
        monkeypatch.setenv("TF_CONFIG", json.dumps(config))
        assert distribution.is_chief() is chief
    config = {"cluster": dict(cluster, chief=["c:1"]), "task": {"type": "worker", "index": 0}}
    monkeypatch.setenv("TF_CONFIG", json.dumps(config))
    assert not distribution.is_chief()


def _losses(output):
    """The running losses Keras printed, step by step."""
    return [float(v) for v in re.findall(r"(?<!probe_)loss: ([0-9.]+)", output)]


def _checkpoint(model_dir, step):
    return dict(checkpoints.list_checkpoints(model_dir))[step]


@pytest.mark.slow
def test_two_workers_equal_one_process_write_from_the_chief_only_and_resume(tmp_path):
    """Two workers with 16 images each against one process with 32.

    Same data, initialisation and synchronised BatchNorm statistics: after the first update
    every kernel and BatchNorm moving statistic agrees per tensor, and the losses agree to
    1e-4 over the run. The weights then drift apart (1e-3 relative on kernels after 4 steps):
    most likely float rounding: synchronised BN computes the variance as E[x^2] - E[x]^2 over
    the workers, the single process two-pass moments, and lr 0.125 amplifies it; the
    BatchNorm offsets, which LARS does not normalise, show it first.
    """
    single, chief, other = (str(tmp_path / name) for name in ("single", "chief", "other"))
    (single_out,) = _launch([single], "auto")
    chief_out, _ = _launch([chief, other], "multi_worker")
    assert [s for s, _ in checkpoints.list_checkpoints(chief)] == [1, 2, 3, 4]
    first = checkpoints.load_checkpoint(_checkpoint(single, 2), compile=False).weights
    got = checkpoints.load_checkpoint(_checkpoint(chief, 2), compile=False).weights
    for a, b in zip(got, first, strict=True):
        if a.ndim > 1 or "moving" in a.path:
            _assert_close(a.numpy(), b.numpy())
    expected_losses = _losses(single_out)
    assert len(expected_losses) >= 4
    np.testing.assert_allclose(_losses(chief_out), expected_losses, rtol=1e-4)
    # The second worker wrote nothing into its model_dir (its files went to a temporary folder).
    assert not os.path.exists(other) or not os.listdir(other)

    # Resume from step 2 with a shared model_dir (as on shared storage): the same weights as
    # the uninterrupted two-worker run.
    expected = _weights(chief)
    for step, path in checkpoints.list_checkpoints(chief):
        if step > 2:
            os.remove(path)
    outputs = _launch([chief, chief], "multi_worker")
    assert all("step 2" in output for output in outputs)
    assert [s for s, _ in checkpoints.list_checkpoints(chief)] == [1, 2, 3, 4]
    for a, b in zip(_weights(chief), expected, strict=True):
        _assert_close(a, b)
