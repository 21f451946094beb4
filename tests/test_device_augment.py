"""augment_on="device": the same views as host mode, per image, with XLA, replicas and resume."""

import json
import math
import os
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from absl import flags
from absl.testing import flagsaver
from helpers import tiny_encoder

import byol_tf
from byol_tf.core import networks
from byol_tf.data import pipelines
from byol_tf.runs import checkpoints
from byol_tf.training import run_plan
from byol_tf.views import augment

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import train  # noqa: E402

FLAGS = flags.FLAGS
FLAGS.mark_as_parsed()
FAST = dict(jit_compile=False)  # the pipeline's XLA compilation changes nothing (test_augment)
IDENTITY = dict(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))  # views stay in [0, 1]
QUIET = dict(jitter_prob=0.0, greyscale_prob=0.0, blur_prob=0.0, solarize_prob=0.0, flip_prob=0.0)
WHOLE = dict(crop_area=(1.0, 1.0), crop_aspect=(1.0, 1.0))
N = 4000  # frequencies within 4 standard errors: a false failure about once in 16,000 runs


def _batch(source, size, seed, augment_on, overrides=None, batch=None):
    """The first batch of `pretrain_dataset` on `source` as host mode or device mode yields it,
    with the views drawn (device mode: by `train_step_augmentation`, as the train step does)."""
    options = dict(augment_overrides=overrides)
    src = pipelines.sources.source(source, **IDENTITY)
    ds = pipelines.pretrain_dataset(
        src, batch or len(source[0]), size, seed, augment_on=augment_on, **options, **FAST
    )
    element = next(iter(ds))
    if augment_on == "device":
        layer = pipelines.train_step_augmentation(src, size, **options)
        element["view1"], element["view2"] = layer(element["crops"], element["seeds"])
    return element


def _colour(n, size, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def _assert_frequency(observed, p, n=N):
    tolerance = 4 * math.sqrt(max(p * (1 - p), 1e-12) / n) + 1e-9
    assert abs(observed - p) <= tolerance, f"{observed:.4f}, expected {p} ± {tolerance:.4f}"


def test_device_mode_yields_uint8_crops_and_per_image_per_view_seeds():
    x = _colour(8, 12)
    element = _batch((x, np.arange(8)), 10, 0, "device")
    assert element["crops"].dtype == tf.uint8 and element["crops"].shape == (8, 2, 10, 10, 3)
    seeds = element["seeds"].numpy()
    assert seeds.dtype == np.int64 and seeds.shape == (8, 2, 2)
    assert len({tuple(s) for s in seeds.reshape(16, 2)}) == 16  # no image or view shares one
    host = _batch((x, np.arange(8)), 10, 0, "host")
    np.testing.assert_array_equal(element["label"], host["label"])


def test_device_views_are_host_views_of_the_same_seed_up_to_uint8_rounding(tmp_path):
    """Fixed-size images (cropped in the pipeline) and files (cropped at decode time)."""
    x = _colour(16, 20)
    for i, image in enumerate(x[:8]):
        tf.io.write_file(str(tmp_path / f"{i}.png"), tf.io.encode_png(image))
    for source, count in (((x,), 16), (str(tmp_path), 8)):
        host = _batch(source, 12, 5, "host", batch=count)
        device = _batch(source, 12, 5, "device", batch=count)
        for key in ("view1", "view2"):
            difference = np.abs(host[key].numpy() - device[key].numpy())
            # Crops rounded to 1/255 move a pixel by ~1/510, more where jitter amplifies it.
            assert difference.mean() < 2e-3 and np.quantile(difference, 0.99) < 1e-2
        assert np.abs(host["view1"].numpy() - host["view2"].numpy()).mean() > 0.05


def _ramps(n, size):
    """Images whose red channel rises left to right and green top to bottom (4 per pixel)."""
    ramp = np.arange(size, dtype=np.uint8) * 4
    image = np.stack(np.broadcast_arrays(ramp[None, :], ramp[:, None], np.uint8(0)), axis=-1)
    return np.broadcast_to(image, (n, size, size, 3)).copy()


def _flipped(view):
    return view[:, 0, 0, 0] > view[:, 0, -1, 0]


def _grey(view):
    return np.abs(view - view.mean(axis=-1, keepdims=True)).max(axis=(1, 2, 3)) < 1e-5


def _solarised(view):
    return np.abs(view - (1 - 179 / 255)).max(axis=(1, 2, 3)) < 2e-3


@pytest.mark.parametrize(
    "images, overrides, detect, expected",
    [
        (_ramps(N, 4), dict(QUIET, **WHOLE, flip_prob=0.5), _flipped, (0.5, 0.5)),
        (_colour(N, 4), dict(QUIET, **WHOLE, greyscale_prob=0.2), _grey, (0.2, 0.2)),
        (
            np.full((N, 4, 4, 3), 179, np.uint8),
            dict(QUIET, view2_solarize_prob=0.2),
            _solarised,
            (0.0, 0.2),
        ),
    ],
    ids=["flip", "greyscale", "solarisation"],
)
def test_device_mode_draws_each_operation_as_often_as_host_mode(
    images, overrides, detect, expected
):
    # Different seeds: the two modes are compared as distributions, not draw for draw.
    host = _batch((images,), 4, 1, "host", overrides)
    device = _batch((images,), 4, 2, "device", overrides)
    for key, p in zip(("view1", "view2"), expected, strict=True):
        for mode in (host, device):
            _assert_frequency(detect(mode[key].numpy()).mean(), p)


def _crop_boxes(views, size):
    """Width and height in source pixels of bilinear crops of `_ramps` (exact for a ramp)."""
    pixels = views * 255.0 / 4.0
    scale = size / (size - 1)  # the first and last output pixels sample (S - 1) / S of the crop
    widths = (pixels[:, 0, -1, 0] - pixels[:, 0, 0, 0]) * scale
    heights = (pixels[:, -1, 0, 1] - pixels[:, 0, 0, 1]) * scale
    return widths, heights


def _ks(a, b):
    """Two-sample Kolmogorov–Smirnov distance."""
    points = np.sort(np.concatenate([a, b]))
    cdf = lambda x: np.searchsorted(np.sort(x), points, side="right") / len(x)  # noqa: E731
    return np.abs(cdf(a) - cdf(b)).max()


def test_device_mode_crop_area_and_aspect_are_distributed_as_in_host_mode():
    size, source = 8, 64
    images = (_ramps(N, source),)
    overrides = dict(QUIET, resize_method="bilinear", crop_area=(0.08, 1.0))
    host = _batch(images, size, 3, "host", overrides)["view1"].numpy()
    crops = _batch(images, size, 4, "device", overrides)["crops"].numpy()[:, 0] / 255.0
    stats = []
    for views in (host, crops):
        widths, heights = _crop_boxes(views, size)
        area, aspect = widths * heights / source**2, widths / heights
        assert area.min() > 0.08 - 0.01 and area.max() < 1 + 0.01
        assert aspect.min() > 3 / 4 - 0.03 and aspect.max() < 4 / 3 + 0.03
        assert area.std() > 0.15  # spread over the range, not one crop for all
        stats.append((area, aspect))
    # 0.05 is above the 99.9 % two-sample bound for 4,000 draws each (0.044).
    assert _ks(stats[0][0], stats[1][0]) < 0.05 and _ks(stats[0][1], stats[1][1]) < 0.05


def test_images_of_one_batch_do_not_share_parameters():
    same = np.repeat(_colour(1, 16), 12, axis=0)
    # Whole-image crops, so that only the draws after the crop (always a jitter) tell views apart.
    views = _batch((same,), 16, 0, "device", dict(WHOLE, jitter_prob=1.0))
    for key in ("view1", "view2"):
        flat = views[key].numpy().reshape(12, -1)
        distances = np.abs(flat[:, None] - flat[None]).max(axis=-1)
        assert (distances[~np.eye(12, dtype=bool)] > 1e-3).all()
    assert np.abs(views["view1"].numpy() - views["view2"].numpy()).max(axis=(1, 2, 3)).min() > 1e-3


def test_an_images_views_do_not_depend_on_the_rest_of_its_batch():
    """What lets each replica augment its own shard: the views of images 4..7 alone are
    their views in the whole batch."""
    element = _batch((_colour(8, 12),), 12, 0, "device")
    layer = pipelines.train_step_augmentation(
        pipelines.sources.source((_colour(8, 12),), **IDENTITY), 12
    )
    shard = layer(element["crops"][4:], element["seeds"][4:])
    for whole, part in zip((element["view1"], element["view2"]), shard, strict=True):
        np.testing.assert_array_equal(whole.numpy()[4:], part.numpy())


def test_xla_compiled_device_augmentation_equals_eager():
    element = _batch((_colour(8, 32),), 24, 1, "device")
    # The imagenet preset: blur in both views, solarisation in view 2.
    layer = byol_tf.views.device_augment.ViewAugmentation("imagenet")
    eager = layer(element["crops"], element["seeds"])
    compiled = tf.function(layer, jit_compile=True)(element["crops"], element["seeds"])
    for e, c in zip(eager, compiled, strict=True):
        np.testing.assert_allclose(e.numpy(), c.numpy(), atol=2e-3)


def _crop_batches(batch=8):
    x = np.random.default_rng(0).integers(0, 256, (32, 8, 8, 3), dtype=np.uint8)
    ds = pipelines.pretrain_dataset((x,), batch, 8, 0, augment_on="device", **FAST)
    return ds, pipelines.train_step_augmentation((x,), 8)


def _fit(model, steps, ds, jit=False, **compile_args):
    model.compile(optimizer=byol_tf.LARS(0.3, eta=0.02), jit_compile=jit, **compile_args)
    return model.fit(ds, steps_per_epoch=steps, verbose=0, callbacks=[byol_tf.TargetEMA(0.9)])


def test_device_mode_training_under_xla_equals_training_without():
    ds, layer = _crop_batches()
    results = []
    for jit in (False, True):
        keras.utils.set_random_seed(0)
        model = byol_tf.BYOL(tiny_encoder(), projection_dim=8, hidden_dim=16, augmentation=layer)
        _fit(model, 3, ds, jit)
        results.append([v.numpy() for v in model.weights])
    for a, b in zip(*results, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_device_mode_trains_under_mixed_precision_with_float32_views():
    keras.mixed_precision.set_global_policy("mixed_float16")
    ds, layer = _crop_batches()
    model = byol_tf.BYOL(tiny_encoder(), projection_dim=8, hidden_dim=16, augmentation=layer)
    assert model.encoder.layers[1].compute_dtype == "float16"
    element = next(iter(ds))
    view1, _ = model.augmentation(element["crops"], element["seeds"])
    assert view1.dtype == tf.float32
    history = _fit(model, 2, ds, jit=True)
    assert np.isfinite(history.history["loss"]).all()


@pytest.mark.slow  # test_distribution's two-replica equality stays in the default suite
def test_two_replicas_augment_their_own_shards_and_match_one_replica():
    """As tests/test_distribution.py (same network and shapes), on crop batches."""
    ds, layer = _crop_batches()
    weights = []
    for devices in (["/cpu:0"], ["/cpu:0", "/cpu:1"]):
        strategy = tf.distribute.MirroredStrategy(devices)
        keras.utils.set_random_seed(0)
        with strategy.scope():
            model = byol_tf.BYOL(
                tiny_encoder(sync_bn=True), projection_dim=8, hidden_dim=16,
                synchronized_bn=True, augmentation=layer,
            )  # fmt: skip
            _fit(model, 2, ds)
        weights.append([v.numpy() for v in model.weights])
        # Each replica draws the views of its own half of the batch.
        element = next(iter(strategy.experimental_distribute_dataset(ds)))
        shards = strategy.run(lambda e: layer(e["crops"], e["seeds"])[0], args=(element,))
        local = tf.concat(strategy.experimental_local_results(shards), axis=0)
        whole = layer(*[next(iter(ds))[key] for key in ("crops", "seeds")])[0]
        np.testing.assert_array_equal(local.numpy(), whole.numpy())
    for a, b in zip(*weights, strict=True):
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        assert np.linalg.norm(a - b) <= 1e-4 * np.linalg.norm(b) + 1e-5


def test_crop_batches_without_an_augmentation_get_a_clear_error():
    ds, _ = _crop_batches()
    model = byol_tf.BYOL(tiny_encoder(), projection_dim=8, hidden_dim=16)
    model.compile(optimizer=byol_tf.LARS(0.1))
    with pytest.raises(
        ValueError, match="pass augmentation=byol_tf.data.train_step_augmentation"
    ):
        model.train_on_batch(next(iter(ds)))
    with pytest.raises(ValueError, match="augment_on must be one of host, device"):
        pipelines.pretrain_dataset("demo", 8, 8, augment_on="gpu")


def test_view_augmentation_survives_saving_with_the_model(tmp_path):
    ds, layer = _crop_batches()
    model = byol_tf.BYOL(tiny_encoder(), projection_dim=8, hidden_dim=16, augmentation=layer)
    model.compile(optimizer=byol_tf.LARS(0.1))
    model.optimizer.build(model.trainable_variables)
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    element = next(iter(ds))
    for a, b in zip(
        model.augmentation(element["crops"], element["seeds"]),
        loaded.augmentation(element["crops"], element["seeds"]),
        strict=True,
    ):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def _tiny_resnet(depth, width_multiplier, cifar_stem, input_shape, synchronized_bn, name, **_):
    """Stands in for `networks.resnet` so that a train.main run takes seconds."""
    return tiny_encoder(input_shape[0], sync_bn=synchronized_bn, name=name)


TINY = dict(
    dataset="demo", image_size=8, projection_dim=8, hidden_dim=16, batch_size=16, epochs=1,
    steps_per_epoch=3, knn_every_epochs=0, demo_baseline=False, checkpoint_every_steps=1,
    keep_checkpoints=10, log_every_steps=1, deterministic=True,
)  # fmt: skip


def _train(model_dir, capsys, **overrides):
    with flagsaver.flagsaver(**dict(TINY, model_dir=model_dir, **overrides)):
        code = train.main(["train.py"])
    return code, capsys.readouterr()


def _weights(path):
    return [w.numpy() for w in checkpoints.load_checkpoint(path).weights]


def test_device_mode_run_resumes_exactly_keeps_its_choice_and_refuses_a_switch(
    tmp_path, capsys, monkeypatch
):
    monkeypatch.setattr(networks, "resnet", _tiny_resnet)
    model_dir = str(tmp_path / "run")
    code, out = _train(model_dir, capsys, augment_on="device")
    assert code == 0
    assert "Augmentation on the device, in the train step (--augment_on=device)." in out.out
    with open(os.path.join(model_dir, "run_config.json")) as handle:
        assert json.load(handle)["augment_on"] == "device"
    straight = _weights(checkpoints.latest_checkpoint(model_dir))
    for step, path in checkpoints.list_checkpoints(model_dir):
        if step > 1:
            os.remove(path)  # as if the run had been killed right after step 1

    with pytest.raises(SystemExit, match="--augment_on: device -> host"):
        _train(model_dir, capsys, augment_on="host")

    code, out = _train(model_dir, capsys)  # unset: the run's own choice, on any machine
    assert code == 0 and "(--augment_on=device, as the run being resumed)" in out.out
    assert "(step 1)" in out.out
    for a, b in zip(straight, _weights(checkpoints.latest_checkpoint(model_dir)), strict=True):
        np.testing.assert_array_equal(a, b)


def test_augment_on_defaults_to_the_host_without_an_accelerator():
    assert not tf.config.list_logical_devices("GPU")
    assert byol_tf.views.device_augment.default_augment_on() == "host"
    cfg = byol_tf.settings.train_config.TrainConfig()
    resolved, line = run_plan.resolve_augment_on(cfg, {}, tf.distribute.get_strategy())
    assert resolved.augment_on == "host"
    assert line == "Augmentation on the host (--augment_on=host: no GPU or TPU is visible)."
    # A run folder from before --augment_on augmented on the host.
    assert run_plan.resolve_augment_on(cfg, {"epochs": 1}, None)[0].augment_on == "host"
    assert augment.view_seeds(0, 3).shape == (3, 2, 2)
