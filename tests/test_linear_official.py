"""Tests of the paper's linear protocol (`linear_eval_official`), of the crop-and-flip training
input it shares with fine-tuning, and of fine-tuning's crops."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import tiny_encoder

from byol_tf import data, evaluation
from byol_tf.evaluation import linear_official
from byol_tf.views import augment, image_ops

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
# What the protocol reads of the training split: its classes and normalisation statistics.
INFO = data.SourceInfo(num_examples=None, num_classes=3, class_names=None, mean=MEAN, std=STD)


def coloured_images(n, size=8, num_classes=3, seed=0):
    """Images in [0, 1] whose class is the brightest channel (linearly separable by mean
    colour), with per-pixel noise: `(images float32 [n, size, size, 3], labels int32 [n])`."""
    rng = np.random.default_rng(seed)
    labels = (np.arange(n) % num_classes).astype("int32")
    noise = rng.normal(scale=0.1, size=(n, size, size, 3))
    images = np.clip(0.2 + noise + 0.6 * np.eye(3)[labels][:, None, None], 0, 1)
    return images.astype("float32"), labels


def batches(images, labels, batch_size=32):
    return tf.data.Dataset.from_tensor_slices((images, labels)).batch(batch_size)


def normalised_batches(images, labels, batch_size=32):
    """Test images as the protocol expects them: normalised."""
    return batches((images - np.float32(0.5)) / np.float32(0.25), labels, batch_size)


def colour_encoder(size=8):
    """BatchNorm (inference: moving statistics) then global average pooling: the mean colour."""
    inputs = keras.Input((size, size, 3))
    x = keras.layers.BatchNormalization(name="bn")(inputs)
    return keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x), name="colour")


def evaluate(encoder, train, test, **kwargs):
    return evaluation.linear_eval_official(encoder, train, test, INFO, **kwargs)


def test_encoder_weights_and_batchnorm_statistics_are_unchanged():
    encoder = tiny_encoder()
    bn = encoder.get_layer("bn")
    bn.moving_mean.assign(np.full(4, 0.3, "float32"))  # away from the initial 0 / 1, so that
    bn.moving_variance.assign(np.full(4, 2.0, "float32"))  # training-mode BN would move them
    before = [w.copy() for w in encoder.get_weights()]
    images, labels = coloured_images(96)
    result = evaluate(
        encoder, batches(images, labels), normalised_batches(images[:30], labels[:30]),
        epochs=2, batch_size=16, learning_rates=(0.1, 1.0),
    )  # fmt: skip
    assert result["protocol"] == "linear_official" and 0.0 <= result["top1"] <= 1.0
    for old, new in zip(before, encoder.get_weights(), strict=True):
        np.testing.assert_array_equal(old, new)


def record_training(monkeypatch):
    """Records the example count and rates of every `_train_heads` call."""
    calls = []
    train_heads = linear_official._train_heads

    def recording(encoder, examples, count, rates, *args):
        calls.append((count, tuple(rates)))
        return train_heads(encoder, examples, count, rates, *args)

    monkeypatch.setattr(linear_official, "_train_heads", recording)
    return calls


def test_paper_selection_chooses_the_one_working_rate_on_the_held_out_part_without_retraining(
    monkeypatch,
):
    calls = record_training(monkeypatch)
    train_x, train_y = coloured_images(300, seed=1)
    test_x, test_y = coloured_images(90, seed=2)
    # Only 1.0 works: 1e-6 and 1e-5 leave the classifier near its random start.
    kwargs = {"epochs": 3, "batch_size": 32, "learning_rates": (1e-6, 1.0, 1e-5), "seed": 3}
    honest = evaluate(
        colour_encoder(), batches(train_x, train_y), normalised_batches(test_x, test_y), **kwargs
    )
    assert honest["selection"] == "paper" and honest["learning_rate"] == 1.0
    assert honest["top1"] >= 0.95 and honest["val_top1"] >= 0.95 and honest["top5"] == 1.0
    by_rate = honest["val_top1_by_learning_rate"]
    assert by_rate["1e-06"] < 0.8 and by_rate["1e-05"] < 0.8
    assert honest["peak_learning_rate"] == pytest.approx(1.0 * 32 / 256)
    counts = (honest["num_train"], honest["num_fit"], honest["num_validation"], honest["num_test"])
    assert counts == (300, 270, 30, 90)
    # One training of all the rates on train minus the held-out part; none on all of train.
    assert calls == [(270, (1e-6, 1.0, 1e-5))]
    # Scrambled test labels change the test score, not the choice made on the held-out part.
    scrambled_y = np.random.default_rng(0).permutation(test_y)
    scrambled = evaluate(
        colour_encoder(),
        batches(train_x, train_y),
        normalised_batches(test_x, scrambled_y),
        **kwargs,
    )
    chosen = ("learning_rate", "val_top1", "val_top1_by_learning_rate")
    assert {k: scrambled[k] for k in chosen} == {k: honest[k] for k in chosen}
    assert scrambled["top1"] < 0.7


def test_held_out_part_is_capped_at_max_validation_examples():
    train_x, train_y = coloured_images(120, seed=1)
    result = evaluate(
        colour_encoder(), batches(train_x, train_y), normalised_batches(train_x[:9], train_y[:9]),
        epochs=1, batch_size=32, learning_rates=(1.0,), max_validation_examples=6,
    )  # fmt: skip
    assert (result["num_validation"], result["num_fit"]) == (6, 114)


def test_official_selection_trains_one_rate_on_all_of_train(monkeypatch):
    calls = record_training(monkeypatch)
    train_x, train_y = coloured_images(96, seed=1)
    result = evaluate(
        colour_encoder(), batches(train_x, train_y), normalised_batches(train_x[:9], train_y[:9]),
        selection="official", epochs=2, batch_size=32,
    )  # fmt: skip
    assert calls == [(96, (0.2,))]
    assert result["learning_rate"] == 0.2 and result["val_top1"] is None
    assert (result["num_fit"], result["num_validation"]) == (96, 0)
    with pytest.raises(ValueError, match="one learning rate"):
        evaluate(
            colour_encoder(), batches(train_x, train_y), normalised_batches(train_x, train_y),
            selection="official", learning_rates=(0.1, 0.2),
        )  # fmt: skip


@pytest.mark.parametrize(
    "step, base, batch, expected",
    [
        (0, 0.2, 4096, 3.2),  # the official configuration: 0.2 · 4096 / 256 at the start
        (500, 0.2, 4096, 1.6),  # half-way: half of it
        (250, 0.2, 4096, 3.2 * (1 + np.cos(np.pi / 4)) / 2),
        (1000, 0.2, 4096, 0.0),
        (1500, 0.2, 4096, 0.0),  # past the end: held at 0
        (0, 0.4, 64, 0.1),
    ],
)
def test_learning_rate_is_base_times_batch_over_256_with_cosine_decay(step, base, batch, expected):
    rate = linear_official.learning_rate(step, base, batch, total_steps=1000)
    np.testing.assert_allclose(float(rate), expected, atol=1e-6)


def test_crop_and_flip_crops_flips_and_is_deterministic():
    images = tf.constant(np.random.default_rng(0).normal(size=(16, 12, 12, 3)), tf.float32)
    views = augment.crop_and_flip(images, 5, 8)
    assert views.shape == (16, 8, 8, 3)
    np.testing.assert_array_equal(views, augment.crop_and_flip(images, 5, 8))
    assert not np.allclose(views, augment.crop_and_flip(images, 6, 8))
    # Whole-image "crops" at the same side are the images or their mirrors: flips are drawn
    # per image, about half of them.
    whole = augment.crop_and_flip(images, 5, crop_area=(1, 1), crop_aspect=(1, 1)).numpy()
    pairs = list(zip(whole, images.numpy(), strict=True))
    same = [np.allclose(w, x, atol=1e-5) for w, x in pairs]
    mirrored = [np.allclose(w, x[:, ::-1], atol=1e-5) for w, x in pairs]
    assert all(s != m for s, m in zip(same, mirrored, strict=True)) and 3 <= sum(mirrored) <= 13
    # Random-resized crops differ from the whole image resized, mirrored or not.
    resized = tf.image.resize(images, [8, 8], "bicubic").numpy()
    for view, full in zip(views.numpy(), resized, strict=True):
        assert not np.allclose(view, full, atol=0.05) and not np.allclose(view, full[:, ::-1])
    # Bicubic overshoot is clipped to each channel's range in the batch.
    axes = (0, 1, 2)
    assert np.all(views.numpy().min(axes) >= images.numpy().min(axes))
    assert np.all(views.numpy().max(axes) <= images.numpy().max(axes))
    with pytest.raises(ValueError, match="crop_area"):
        augment.crop_and_flip(images, 0, crop_area=(0.5, 0.1))


def test_training_views_are_crops_and_the_run_is_reproducible():
    train_x, train_y = coloured_images(64, seed=4)
    seen = []

    def encoder(images):  # a plain callable (like a SavedModel's), recording what it sees
        seen.append(np.asarray(images))
        return tf.reduce_mean(images, axis=[1, 2])

    def run():
        kwargs = {"epochs": 1, "batch_size": 16, "learning_rates": (0.5,), "seed": 7}
        train, test = batches(train_x, train_y), normalised_batches(train_x[:8], train_y[:8])
        return evaluate(encoder, train, test, image_size=8, **kwargs)

    tf.config.run_functions_eagerly(True)  # so that the encoder sees the training views
    try:
        first = run()
        views = np.concatenate(seen)
        again = run()
    finally:
        tf.config.run_functions_eagerly(False)
    normalised = (train_x - 0.5) / 0.25
    sources = np.concatenate([normalised, normalised[:, :, ::-1]])
    copies = [np.any(np.all(np.isclose(v, sources, atol=1e-5), axis=(1, 2, 3))) for v in views]
    steps = first["num_fit"] // 16
    # Held-out and test images are seen as they are (whole at 8 px); every training view is
    # a new crop.
    assert len(copies) - sum(copies) == steps * 16
    assert sum(copies) == first["num_validation"] + first["num_test"]
    assert again == first
    np.testing.assert_array_equal(np.concatenate(seen)[len(views) :], views)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"learning_rates": ()}, "learning_rates must be non-empty"),
        ({"validation_fraction": 1.0}, r"validation_fraction must be in \(0, 1\)"),
        ({"crop_sampler": "uniform"}, "crop_sampler must be one of"),
        ({"selection": "best"}, "selection must be one of"),
        ({"epochs": 0}, "epochs must be an int >= 1"),
        ({"crop_fraction": 1.5}, "crop_fraction must be in"),
        ({"max_validation_examples": 0}, "max_validation_examples must be an int >= 1"),
        ({"train_dataset": np.zeros(3)}, "train_dataset must be a tf.data.Dataset"),
        ({"info": (MEAN, STD)}, "info must be a SourceInfo or Source. Received: tuple"),
    ],
)
def test_rejects_bad_arguments_naming_them(kwargs, message):
    images, labels = coloured_images(12)
    args = {"train_dataset": batches(images, labels), "test_dataset": batches(images, labels)}
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        evaluation.linear_eval_official(tiny_encoder(), **{"info": INFO, **args})


def test_the_training_splits_classes_and_statistics_come_from_its_info_or_source():
    demo = data.source("demo", mean=MEAN)
    assert linear_official._split_info(demo) == (10, MEAN, demo.info.std)
    assert linear_official._split_info(demo.info) == (10, MEAN, demo.info.std)
    imagenet = (None, image_ops.IMAGENET_MEAN, image_ops.IMAGENET_STD)
    assert linear_official._split_info(None) == imagenet


def test_finetune_trains_on_random_resized_crops(monkeypatch):
    images, labels = coloured_images(48)
    captured = {}

    def fake_fit(self, x, **kwargs):
        captured["data"], captured["steps"] = x, kwargs["steps_per_epoch"]

    monkeypatch.setattr(keras.Model, "fit", fake_fit)
    encoder = tiny_encoder()
    evaluation.finetune(
        encoder, batches(images, labels, 16), batches(images, labels, 16), 3,
        epochs=1, batch_size=8, seed=1,
    )  # fmt: skip
    assert captured["steps"] == 6  # 48 examples, batches of 8
    seen = np.concatenate([x for x, _ in captured["data"].take(12).as_numpy_iterator()])
    assert seen.shape == (96, 8, 8, 3)
    sources = np.concatenate([images, images[:, :, ::-1]])
    copies = [np.any(np.all(np.isclose(view, sources, atol=1e-4), axis=(1, 2, 3))) for view in seen]
    assert not any(copies)  # crops, not the images or their mirrors
    # Two epochs' batches differ (the crops are drawn per step).
    assert not np.allclose(np.sort(seen[:48], axis=0), np.sort(seen[48:], axis=0))
