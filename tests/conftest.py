"""Shared test set-up: two logical CPU devices (for MirroredStrategy tests) and fixtures.

Helpers that tests import live in tests/helpers.py, not here.
"""

import os

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


@pytest.fixture
def views():
    """A fixed batch of 8 view pairs of 8×8 RGB images with labels."""
    rng = np.random.default_rng(0)
    view1 = rng.normal(size=(8, 8, 8, 3)).astype("float32")
    view2 = (view1 + 0.3 * rng.normal(size=view1.shape)).astype("float32")
    labels = rng.integers(0, 3, size=8).astype("int32")
    return {"view1": view1, "view2": view2, "label": labels}


@pytest.fixture(autouse=True)
def _fresh_keras_state():
    keras.utils.clear_session()
    keras.utils.set_random_seed(0)
    yield
    keras.mixed_precision.set_global_policy("float32")
