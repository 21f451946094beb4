"""Known-answer tables for the learning-rate and τ schedules."""

import math

import keras
import numpy as np
import pytest

from byol_tf import WarmupConstant, WarmupCosine, cosine_tau


@pytest.mark.parametrize(
    "step, expected",
    [
        (0, 0.996),
        (500, 0.998),
        (1000, 1.0),
        (250, 1 - 0.004 * (math.cos(math.pi / 4) + 1) / 2),
        (2000, 1.0),
    ],
)
def test_cosine_tau_table(step, expected):
    assert cosine_tau(step, 1000, 0.996) == pytest.approx(expected, abs=1e-12)


def test_cosine_tau_uses_the_whole_run_not_one_epoch():
    # Halfway through a 10-epoch run of 100 steps/epoch τ is midway, not back at base.
    assert cosine_tau(500, 1000, 0.99) == pytest.approx(0.995)
    assert cosine_tau(100, 1000, 0.99) > 0.99


@pytest.mark.parametrize(
    "step, expected",
    [
        (0, 0.0),
        (5, 0.5),
        (10, 1.0),
        (55, 0.5),
        (100, 0.0),
        (150, 0.0),
        (32.5, 0.5 * (1 + math.cos(math.pi * 0.25))),
    ],
)
def test_warmup_cosine_table(step, expected):
    schedule = WarmupCosine(1.0, total_steps=100, warmup_steps=10)
    assert float(schedule(step)) == pytest.approx(expected, abs=1e-6)


def test_warmup_cosine_matches_numpy_reference_everywhere():
    base, total, warm = 0.4, 200, 20
    steps = np.arange(0, 230)
    ref = np.where(
        steps < warm,
        base * steps / warm,
        base * 0.5 * (1 + np.cos(np.pi * np.clip((steps - warm) / (total - warm), 0, 1))),
    )
    got = np.array([float(v) for v in WarmupCosine(base, total, warm)(steps)])
    np.testing.assert_allclose(got, ref, atol=1e-6)


def test_warmup_cosine_config_round_trip():
    schedule = WarmupCosine(0.3, 1000, 100)
    clone = keras.optimizers.schedules.deserialize(keras.optimizers.schedules.serialize(schedule))
    assert isinstance(clone, WarmupCosine)
    assert clone.get_config() == schedule.get_config()


@pytest.mark.parametrize("kwargs", [{"total_steps": 0}, {"total_steps": 10, "warmup_steps": 11}])
def test_warmup_cosine_rejects_bad_lengths(kwargs):
    with pytest.raises(ValueError, match="steps"):
        WarmupCosine(0.1, **kwargs)


def test_warmup_constant_matches_numpy_reference():
    base, warm = 0.25, 8
    steps = np.arange(0, 40)
    ref = np.where(steps < warm, base * steps / warm, base)
    got = np.array([float(v) for v in WarmupConstant(base, warm)(steps)])
    np.testing.assert_allclose(got, ref, atol=1e-7)
    assert float(WarmupConstant(base)(0)) == pytest.approx(base)


def test_warmup_constant_config_round_trip_and_bad_length():
    schedule = WarmupConstant(1e-3, 50)
    clone = keras.optimizers.schedules.deserialize(keras.optimizers.schedules.serialize(schedule))
    assert isinstance(clone, WarmupConstant)
    assert clone.get_config() == schedule.get_config()
    with pytest.raises(ValueError, match="warmup_steps"):
        WarmupConstant(0.1, -1)
