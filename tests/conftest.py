"""Shared test set-up: two logical CPU devices (for MirroredStrategy tests) and fixtures.

Helpers that tests import live in tests/helpers.py, not here.
"""

import os
import signal

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

# Collective ops of two CPU replicas block inter-op threads while they wait for each other;
# a 2-core machine's default pool (2 threads) can deadlock, so give it more.
try:
    tf.config.threading.set_inter_op_parallelism_threads(8)
except RuntimeError:  # TensorFlow already initialised
    pass
_cpus = tf.config.list_physical_devices("CPU")
try:
    tf.config.set_logical_device_configuration(
        _cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2
    )
except RuntimeError:  # devices already initialised by an earlier import
    pass

# Marked tests a bare `pytest` leaves out: they run only when `-m` names them
# (`pytest -m slow`, `pytest -m parity`, or scripts/test.sh --slow / --parity).
OFF_BY_DEFAULT = ("slow", "parity")


def pytest_collection_modifyitems(config, items):
    """Without `-m`, deselects the tests marked `slow` or `parity` (the default suite)."""
    if config.option.markexpr:
        return
    kept, dropped = [], []
    for item in items:
        off = any(item.get_closest_marker(name) for name in OFF_BY_DEFAULT)
        (dropped if off else kept).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


@pytest.fixture
def views():
    """A fixed batch of 8 view pairs of 8×8 RGB images with labels."""
    rng = np.random.default_rng(0)
    view1 = rng.normal(size=(8, 8, 8, 3)).astype("float32")
    view2 = (view1 + 0.3 * rng.normal(size=view1.shape)).astype("float32")
    labels = rng.integers(0, 3, size=8).astype("int32")
    return {"view1": view1, "view2": view2, "label": labels}


@pytest.fixture(autouse=True)
def _own_signal_handlers():
    """Restores SIGINT and SIGTERM handling after each test: a program's exit path run in-process
    (`byol_tf.cli.programs.interrupted` ignores Ctrl-C from then on) must not reach later tests of
    the same worker, whichever order they run in."""
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    yield
    for signum, handler in previous.items():
        signal.signal(signum, handler)


@pytest.fixture(autouse=True)
def _fresh_keras_state():
    keras.utils.clear_session()
    keras.utils.set_random_seed(0)
    yield
    keras.mixed_precision.set_global_policy("float32")


# --- runs and exports shared by the test modules (helpers.py builds them) ---------------------


@pytest.fixture(scope="session")
def one_step_run(tmp_path_factory):
    """A finished one-step train.py run (checkpoint, run_config.json, flags.txt, summary.json);
    tests copy it, never change it."""
    from absl.testing import flagsaver
    from helpers import QUICK

    import train

    model_dir = str(tmp_path_factory.mktemp("one_step_run") / "run")
    with flagsaver.flagsaver(**dict(QUICK, model_dir=model_dir)):
        assert train.main(["train.py"]) == 0
    return model_dir


@pytest.fixture
def finished_run(one_step_run, tmp_path):
    """A copy of the one-step run; on teardown, asserts every file in it is intact (flags.txt
    and flags_history.txt included: a refused invocation records nothing)."""
    import shutil

    from helpers import snapshot

    from byol_tf.runs import checkpoints

    model_dir = str(tmp_path / "run")
    shutil.copytree(one_step_run, model_dir)
    before = snapshot(model_dir)
    assert {"flags.txt", "flags_history.txt"} <= set(before)
    yield model_dir
    after = snapshot(model_dir)
    assert {k: after.get(k) for k in before} == before
    for _, path in checkpoints.list_checkpoints(model_dir):
        checkpoints.load_checkpoint(path, compile=False)


@pytest.fixture
def new_dir(tmp_path):
    """A fresh model_dir holding one unrelated file, which must survive untouched."""
    from byol_tf.runs import checkpoints

    model_dir = tmp_path / "new_run"
    model_dir.mkdir()
    (model_dir / "notes.txt").write_text("keep me")
    yield str(model_dir)
    assert (model_dir / "notes.txt").read_text() == "keep me"
    assert not checkpoints.list_checkpoints(str(model_dir))


@pytest.fixture(scope="session")
def tiny_export(tmp_path_factory):
    """The version folder of a tiny encoder's export (8×8 images, 4 features)."""
    from helpers import tiny_encoder

    from byol_tf.serving import export

    folder = str(tmp_path_factory.mktemp("tiny_export"))
    keras.utils.set_random_seed(0)
    return export.export_encoder(tiny_encoder(), folder, 8, (0.5,) * 3, (0.25,) * 3)
