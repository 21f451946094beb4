"""A run sets the process's seeds, op determinism and mixed-precision policy, and gives them
back."""

import random

import keras
import numpy as np
import tensorflow as tf

from byol_tf.settings.train_config import TrainConfig
from byol_tf.training import process_settings as settings_module
from byol_tf.training.process_settings import process_settings


def _state():
    return (
        random.getstate(),
        np.random.get_state()[1].tolist(),
        keras.mixed_precision.global_policy().name,
        settings_module.tf_framework_config.is_op_determinism_enabled(),
    )


def test_a_run_sets_its_settings_inside_and_gives_the_process_its_own_back():
    random.seed(7)
    np.random.seed(7)
    tf.random.set_seed(11)
    keras.mixed_precision.set_global_policy("float32")
    before = _state()
    cfg = TrainConfig(seed=3, deterministic=True, mixed_precision="mixed_bfloat16")
    with process_settings(cfg):
        assert keras.mixed_precision.global_policy().name == "mixed_bfloat16"
        assert settings_module.tf_framework_config.is_op_determinism_enabled()
        assert tf.compat.v1.random.get_seed(None)[0] == 3
        inside = random.random()
    assert _state() == before
    assert tf.compat.v1.random.get_seed(None)[0] == 11
    random.seed(3)
    assert random.random() == inside  # the run's own seed was in force


def test_settings_are_given_back_when_the_run_fails():
    keras.mixed_precision.set_global_policy("float32")
    before = _state()
    try:
        with process_settings(TrainConfig(mixed_precision="mixed_float16", deterministic=True)):
            raise KeyboardInterrupt
    except KeyboardInterrupt:
        pass
    assert _state() == before


def test_tensorflows_determinism_getter_and_undo_are_there():
    """The private TensorFlow functions `process_settings` relies on (the public API has
    neither): a TensorFlow without them fails here first."""
    config = settings_module.tf_framework_config
    assert callable(config.is_op_determinism_enabled)
    assert callable(config.disable_op_determinism)
