"""The process-wide settings a run sets (seeds, op determinism, the mixed-precision policy) and
gives back when it ends, so that `train` called from Python leaves its caller's process as it
found it."""

import contextlib
import random
from collections.abc import Iterator

import keras
import numpy as np
import tensorflow as tf

# TensorFlow's own getter and undo of `tf.config.experimental.enable_op_determinism` (the
# public API has neither; tests/test_training.py checks both are there).
from tensorflow.python.framework import config as tf_framework_config

from byol_tf.settings.train_config import TrainConfig


@contextlib.contextmanager
def process_settings(cfg: TrainConfig) -> Iterator[None]:
    """Sets the run's seed (Python, NumPy, TensorFlow, Keras), op determinism and mixed-precision
    policy for the `with` block, and gives the process its own back on the way out, so that a
    `train` call from Python leaves the caller's random state, determinism and policy as they
    were (a second run in the same process starts from the same place as the first)."""
    saved_python, saved_numpy = random.getstate(), np.random.get_state()
    saved_seed = tf.compat.v1.random.get_seed(None)[0]  # the global seed, None when unset
    saved_policy = keras.mixed_precision.global_policy()
    saved_determinism = tf_framework_config.is_op_determinism_enabled()
    try:
        keras.utils.set_random_seed(cfg.seed)
        if cfg.deterministic:
            tf.config.experimental.enable_op_determinism()
        keras.mixed_precision.set_global_policy(cfg.mixed_precision)
        yield
    finally:
        keras.mixed_precision.set_global_policy(saved_policy)
        if not saved_determinism:
            tf_framework_config.disable_op_determinism()
        tf.random.set_seed(saved_seed)
        random.setstate(saved_python)
        np.random.set_state(saved_numpy)
