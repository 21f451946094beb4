"""--strategy=multi_worker: two worker processes on 127.0.0.1 equal one process (same batch).

Run as a script, this module is train.py with a one-convolution encoder (see `_main`).
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import numpy as np
import pytest

from byol_tf.runs import checkpoints
from byol_tf.training import distribution

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = [
    "--dataset=demo",
    "--image_size=8",
    "--projection_dim=16",
    "--hidden_dim=32",
    "--batch_size=32",
    "--epochs=1",
    "--steps_per_epoch=4",
    "--warmup_epochs=0",  # with warm-up the first step has learning rate 0 and changes nothing
    # LARS (Adam's normalised steps magnify the replicas' float rounding beyond the tolerance).
    "--recipe=small_data",
    "--learning_rate=0.3",
    "--base_tau=0.996",
    "--checkpoint_every_steps=2",
    "--keep_checkpoints=10",
    "--knn_every_epochs=0",
    "--nodemo_baseline",
    "--deterministic",
]
# Per launch. A launch takes 15 to 45 s on this project's 2-core machine; the limit allows for a
# loaded one and makes a hung collective (a worker waiting for a dead one) fail, not hang CI.
TIMEOUT_S = 300
KEEP = "BYOL_TF_TEST_KEEP"  # where a non-chief worker copies its files before deleting them


def _tiny_encoder(
    depth,
    width_multiplier,
    cifar_stem,
    input_shape,
    synchronized_bn,
    name,
    zero_init_residual=False,
    kernel_initializer="he_normal",
):
    """Stands in for `networks.resnet` (same signature): conv → BatchNorm → ReLU → pool.

    BatchNorm is synchronised even with one replica, so that one process computes the
    statistics with the formula of two workers (E[x²] − E[x]² of all-reduced sums).
    """
    import keras

    from byol_tf.core import networks

    inputs = keras.Input(input_shape)
    x = keras.layers.Conv2D(
        4, 3, padding="same", use_bias=False, name="conv",
        kernel_initializer=networks.make_initializer(kernel_initializer),
    )(inputs)  # fmt: skip
    x = keras.layers.BatchNormalization(synchronized=True, name="bn")(x)
    x = keras.layers.ReLU(name="relu")(x)
    outputs = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inputs, outputs, name=name)


def _main():
    """train.py with `_tiny_encoder`, synchronised BatchNorm in the heads too, no XLA.

    A tiny encoder because tracing the ResNet-18 costs each process tens of seconds, and its
    float rounding flips ReLUs (see the test). A non-chief worker copies its write folder to
    `$BYOL_TF_TEST_KEEP` (when set) before deleting it, so that the test can read its weights.
    """
    import functools
    import runpy

    sys.path.insert(0, ROOT)
    from byol_tf.training import run_plan, train_run

    run_plan.networks.resnet = _tiny_encoder
    run_plan.BYOL = functools.partial(run_plan.BYOL, synchronized_bn=True)
    # Without XLA the augmentation skips a compilation that costs more than the training.
    run_plan.pipelines.pretrain_dataset = functools.partial(
        run_plan.pipelines.pretrain_dataset, jit_compile=False
    )
    remove = train_run.remove_write_dir

    def keep_then_remove(path, model_dir):
        if os.environ.get(KEEP) and os.path.abspath(path) != os.path.abspath(model_dir):
            shutil.copytree(path, os.environ[KEEP])
        remove(path, model_dir)

    train_run.remove_write_dir = keep_then_remove
    sys.argv[0] = os.path.join(ROOT, "train.py")
    runpy.run_path(sys.argv[0], run_name="__main__")


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _start(model_dir, tmp_dir, tf_config=None, keep=None, extra=()):
    """Starts `_main` (train.py) training into `model_dir`; returns (process, log file)."""
    # Collective ops block inter-op threads while they wait for the other worker; on a 2-core
    # machine the default pool (one thread per core) can deadlock, so give it more.
    env = dict(
        os.environ,
        CUDA_VISIBLE_DEVICES="",
        TF_CPP_MIN_LOG_LEVEL="2",
        TF_NUM_INTEROP_THREADS="8",
        TMPDIR=str(tmp_dir),
    )
    for name, value in (("TF_CONFIG", tf_config and json.dumps(tf_config)), (KEEP, keep)):
        env.pop(name, None)
        if value:
            env[name] = str(value)
    command = [sys.executable, os.path.abspath(__file__), *TINY, *extra]
    command += [f"--model_dir={model_dir}"]
    strategy = "multi_worker" if tf_config else "auto"
    log = tempfile.TemporaryFile("w+")
    process = subprocess.Popen(
        [*command, f"--strategy={strategy}"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
    )
    return process, log


def _workers(model_dirs, tmp_dir, keep=None, extra=()):
    """Starts a cluster of one worker per model_dir on 127.0.0.1; worker 1 keeps its files."""
    cluster = [f"127.0.0.1:{port}" for port in _free_ports(len(model_dirs))]
    started = []
    for index, model_dir in enumerate(model_dirs):
        tf_config = {"cluster": {"worker": cluster}, "task": {"type": "worker", "index": index}}
        started.append(_start(model_dir, tmp_dir, tf_config, keep if index else None, extra))
    return started


def _wait(started):
    """Waits for all processes; returns their outputs.

    When one process fails or the time is up, the others are killed at once (they would wait
    for it forever).
    """
    processes = [process for process, _ in started]
    deadline = time.monotonic() + TIMEOUT_S
    try:
        while time.monotonic() < deadline:
            codes = [process.poll() for process in processes]
            if all(code == 0 for code in codes) or any(code for code in codes):
                break
            time.sleep(0.2)
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
            process.wait()
    outputs = []
    for _, log in started:
        log.seek(0)
        outputs.append(log.read())
        log.close()
    codes = [process.returncode for process in processes]
    assert codes == [0] * len(processes), "\n".join(
        f"process {index} (exit {code}):\n{output[-2000:]}"
        for index, (code, output) in enumerate(zip(codes, outputs, strict=True))
    )
    return outputs


def _weights(model_dir, step=None):
    found = dict(checkpoints.list_checkpoints(model_dir))
    path = found[max(found) if step is None else step]
    return [w.numpy() for w in checkpoints.load_checkpoint(path, compile=False).weights]


def _assert_close(a, b):
    """‖a − b‖ ≤ 1e-4·‖b‖ + 1e-5 per tensor (as tests/test_distribution.py)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert np.linalg.norm(a - b) <= 1e-4 * np.linalg.norm(b) + 1e-5


def _final_loss(model_dir):
    with open(os.path.join(model_dir, "summary.json")) as handle:
        return json.load(handle)["final"]["loss"]


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


def _assert_workers_match(chief, kept, single, steps):
    """The workers' final weights are identical; the chief's equal single's at `steps`."""
    found = dict(checkpoints.list_checkpoints(chief))
    weights = {step: _weights(chief, step) for step in {*steps, max(found)}}
    for a, b in zip(_weights(kept), weights[max(found)], strict=True):
        np.testing.assert_array_equal(a, b)
    for step in steps:
        for a, b in zip(weights[step], _weights(single, step), strict=True):
            _assert_close(a, b)


@pytest.mark.slow  # two processes of TensorFlow; the cluster reading is tested fast above
def test_two_workers_resume_one_process_checkpoint_equal_it_and_only_the_chief_writes(tmp_path):
    """Two workers resuming a one-process run's step-2 checkpoint end where that run ends.

    One process trains 4 steps on batches of 32. Two workers, each with its own --model_dir
    holding that run's step-2 checkpoint (as a shared mount would), resume it with 16 images
    each: their weights are identical, and every weight (online, target, BatchNorm statistics,
    probe) equals the single run's at step 4 per tensor (measured: ≤ 1e-6 relative where
    ‖b‖ > 1e-3, 0.2 % of the tolerance; same data and BatchNorm formula). Only the chief writes.

    Why the tiny encoder, measured on the demo's ResNet-18 at 0.125 width, the network of the
    earlier version of this test, whose weights drifted ~1e-3 apart: its float32 gradients differ
    from float64 ones by ~1e-2 (median per tensor), and any change in the order of float
    operations (the synchronised BN formula in one process, or the 16 + 16 split) changes them
    by ~1e-3 from the first step: rounding moves a few of its ~10⁶ ReLU inputs across 0, each
    flipping one term of the backward sums. With softplus instead of ReLU, float32 agrees with
    float64 to ~1e-5, and a 1e-5 input perturbation changes the float64 gradients by 1e-4
    instead of 1e-2. So no float32 run of that network matches another summation order to 1e-4;
    LARS, the BN formula and the multi-worker code play no part. One conv layer has few ReLU
    inputs near 0, no depth for rounding to grow through, and traces in seconds.
    """
    single, chief, other = (tmp_path / name for name in ("single", "chief", "other"))
    kept, tmp_dir = tmp_path / "kept", tmp_path / "tmp"
    tmp_dir.mkdir()
    _wait([_start(single, tmp_dir)])
    for model_dir in (chief, other):
        os.makedirs(checkpoints.checkpoint_dir(model_dir))
        shutil.copy(
            dict(checkpoints.list_checkpoints(single))[2], checkpoints.checkpoint_dir(model_dir)
        )
        shutil.copy(single / "run_config.json", model_dir)
    outputs = _wait(_workers([chief, other], tmp_dir, keep=kept))
    assert all("(step 2)" in output for output in outputs)
    assert [s for s, _ in checkpoints.list_checkpoints(chief)] == [2, 4]
    # The second worker added nothing to its model_dir, and deleted its temporary folder.
    assert [s for s, _ in checkpoints.list_checkpoints(other)] == [2]
    assert sorted(os.listdir(other)) == ["checkpoints", "run_config.json"]
    assert not [p for p in tmp_dir.iterdir() if p.name.startswith("byol_tf_worker_")]
    _assert_workers_match(chief, kept, single, steps=[4])


@pytest.mark.slow
@pytest.mark.parametrize("augment_on", ["host", "device"])
def test_two_workers_from_scratch_equal_one_process_and_resume_exactly(tmp_path, augment_on):
    """As above from step 0, then a resume: bitwise the uninterrupted two-worker run.

    Steps 2 and 4 and the logged loss are compared with the single run; the resume from step 2
    shares one model_dir between the workers. With `--augment_on=device` each worker's
    replica augments its own half of the batch in the train step.
    """
    extra = [f"--augment_on={augment_on}"]
    single, chief, other = (tmp_path / name for name in ("single", "chief", "other"))
    kept, tmp_dir = tmp_path / "kept", tmp_path / "tmp"
    tmp_dir.mkdir()
    # The reference runs beside the cluster: on 2 cores it costs little extra time.
    _wait(
        [
            _start(single, tmp_dir, extra=extra),
            *_workers([chief, other], tmp_dir, keep=kept, extra=extra),
        ]
    )
    assert [s for s, _ in checkpoints.list_checkpoints(chief)] == [2, 4]
    assert not other.exists()
    _assert_workers_match(chief, kept, single, steps=[2, 4])
    np.testing.assert_allclose(_final_loss(chief), _final_loss(single), rtol=1e-4)

    expected = _weights(chief)
    for step, path in checkpoints.list_checkpoints(chief):
        if step > 2:
            os.remove(path)
    outputs = _wait(_workers([chief, chief], tmp_dir, extra=extra))
    assert all("(step 2)" in output for output in outputs)
    assert [s for s, _ in checkpoints.list_checkpoints(chief)] == [2, 4]
    for a, b in zip(_weights(chief), expected, strict=True):
        np.testing.assert_array_equal(a, b)  # --deterministic: a resume is exact


if __name__ == "__main__":
    _main()
