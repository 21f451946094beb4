"""Tests of the paper's linear protocol (`linear_eval_official`), of the crop-and-flip training
input it shares with fine-tuning, and of fine-tuning's crops."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import tiny_encoder

from byol_tf import augment, evaluation


def coloured_images(n, size=8, num_classes=3, seed=0):
    """Images whose class is the brightest channel (linearly separable by mean colour), with
    per-pixel noise: `(images float32 [n, size, size, 3], labels int32 [n])`."""
    rng = np.random.default_rng(seed)
    labels = (np.arange(n) % num_classes).astype("int32")
    images = rng.normal(scale=0.3, size=(n, size, size, 3)) + 2.0 * np.eye(3)[labels][:, None, None]
    return images.astype("float32"), labels


def batches(images, labels, batch_size=32):
    return tf.data.Dataset.from_tensor_slices((images, labels)).batch(batch_size)


def colour_encoder(size=8):
    """BatchNorm (inference: moving statistics) then global average pooling: the mean colour."""
    inputs = keras.Input((size, size, 3))
    x = keras.layers.BatchNormalization(name="bn")(inputs)
    return keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x), name="colour")


def test_encoder_weights_and_batchnorm_statistics_are_unchanged():
    encoder = tiny_encoder()
    bn = encoder.get_layer("bn")
    bn.moving_mean.assign(np.full(4, 0.3, "float32"))  # away from the initial 0 / 1, so that
    bn.moving_variance.assign(np.full(4, 2.0, "float32"))  # training-mode BN would move them
    before = [w.copy() for w in encoder.get_weights()]
    images, labels = coloured_images(96)
    result = evaluation.linear_eval_official(
        encoder, batches(images, labels), batches(images[:30], labels[:30]), 3,
        epochs=2, batch_size=16, learning_rates=(0.1, 1.0),
    )  # fmt: skip
    assert result["protocol"] == "linear_official" and 0.0 <= result["top1"] <= 1.0
    for old, new in zip(before, encoder.get_weights(), strict=True):
        np.testing.assert_array_equal(old, new)


def test_learns_separable_data_and_chooses_rate_on_held_out_part_only():
    train_x, train_y = coloured_images(300, seed=1)
    test_x, test_y = coloured_images(90, seed=2)
    kwargs = {"epochs": 4, "batch_size": 32, "learning_rates": (0.001, 0.5, 4.0), "seed": 3}
    honest = evaluation.linear_eval_official(
        colour_encoder(), batches(train_x, train_y), batches(test_x, test_y), 3, **kwargs
    )
    assert honest["top1"] >= 0.95 and honest["val_top1"] >= 0.95 and honest["top5"] == 1.0
    assert honest["learning_rate"] in (0.5, 4.0)  # 0.001 barely moves the classifier
    assert honest["val_top1_by_learning_rate"]["0.001"] < honest["val_top1"]
    assert honest["peak_learning_rate"] == pytest.approx(honest["learning_rate"] * 32 / 256)
    assert (honest["num_train"], honest["num_validation"], honest["num_test"]) == (300, 30, 90)
    # Scrambled test labels change the test score, not the choice made on the held-out part.
    scrambled_y = np.random.default_rng(0).permutation(test_y)
    scrambled = evaluation.linear_eval_official(
        colour_encoder(), batches(train_x, train_y), batches(test_x, scrambled_y), 3, **kwargs
    )
    chosen = ("learning_rate", "val_top1", "val_top1_by_learning_rate")
    assert {k: scrambled[k] for k in chosen} == {k: honest[k] for k in chosen}
    assert scrambled["top1"] < 0.7


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
        train, test = batches(train_x, train_y), batches(train_x[:8], train_y[:8])
        return evaluation.linear_eval_official(encoder, train, test, 3, **kwargs)

    tf.config.run_functions_eagerly(True)  # so that the encoder sees the training views
    try:
        first = run()
        views = np.concatenate(seen)
        again = run()
    finally:
        tf.config.run_functions_eagerly(False)
    sources = np.concatenate([train_x, train_x[:, :, ::-1]])
    copies = [np.any(np.all(np.isclose(v, sources, atol=1e-5), axis=(1, 2, 3))) for v in views]
    steps = (first["num_train"] - first["num_validation"]) // 16 + first["num_train"] // 16
    # Held-out and test images are seen as they are; every training view is a new crop.
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
        ({"epochs": 0}, "epochs must be an int >= 1"),
        ({"crop_fraction": 1.5}, "crop_fraction must be in"),
        ({"train_dataset": np.zeros(3)}, "train_dataset must be a tf.data.Dataset"),
    ],
)
def test_rejects_bad_arguments_naming_them(kwargs, message):
    images, labels = coloured_images(12)
    args = {"train_dataset": batches(images, labels), "test_dataset": batches(images, labels)}
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        evaluation.linear_eval_official(tiny_encoder(), num_classes=3, **args)


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
