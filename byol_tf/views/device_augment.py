"""Augmentation on the accelerator: the layer `BYOL`'s train step applies to crop batches."""

from typing import Any

import keras
import tensorflow as tf

from byol_tf.settings.choices import AUGMENT_ON
from byol_tf.views import augment
from byol_tf.views.image_ops import IMAGENET_MEAN, IMAGENET_STD


def check_augment_on(augment_on) -> None:
    """Raises a one-line `ValueError` unless `augment_on` is "host" or "device"."""
    if augment_on not in AUGMENT_ON:
        raise ValueError(
            f"augment_on must be one of {', '.join(AUGMENT_ON)}. "
            f"Received: augment_on={augment_on!r}"
        )


def default_augment_on(strategy=None) -> str:
    """Where augmentation runs unless told: "device" with a GPU or TPU, else "host".

    Args:
        strategy: the run's `tf.distribute.Strategy`, or None.

    Returns:
        "device" when `strategy` is a `TPUStrategy` or a GPU is visible, else "host".
    """
    if isinstance(strategy, tf.distribute.TPUStrategy) or tf.config.list_logical_devices("GPU"):
        return "device"
    return "host"


@keras.saving.register_keras_serializable(package="byol_tf")
class ViewAugmentation(keras.layers.Layer):
    """Flip, colour jitter, greyscale, blur, solarisation and normalisation of crop pairs.

    The device half of `augment_on="device"`: `byol_tf.data.pipelines.pretrain_dataset` decodes and
    crops on the host and yields `{"crops", "seeds"[, "label"]}`; `BYOL(augmentation=...)`
    turns those into views inside its (compiled) train step with this layer, each replica on
    its own shard. It runs `byol_tf.views.augment.augment_crops`, the code of host mode, so the
    distributions are the same; image i's views depend on its crops and seeds alone. Build it
    with `byol_tf.data.pipelines.train_step_augmentation` to match a `pretrain_dataset`.

    It computes in float32 whatever the dtype policy (the pixels' colour operations in
    float16 would quantise them); the encoder casts the views to its own dtype.

    Args:
        preset: "imagenet" or "small" (`byol_tf.views.augment.PRESETS`).
        overrides: `ViewConfig` overrides, as `two_views` takes them (e.g.
            `{"view2_solarize_prob": 0.0}`).
        mean: normalisation mean per channel.
        std: normalisation std per channel.
        **kwargs: `keras.layers.Layer` arguments (name, dtype, ...).

    Raises:
        ValueError: for an unknown preset or option, or a value out of range.
    """

    def __init__(
        self, preset="imagenet", overrides=None, mean=IMAGENET_MEAN, std=IMAGENET_STD, **kwargs
    ) -> None:
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        # Ranges come back from JSON as lists: tuples, as ViewConfig holds them.
        overrides = {
            key: tuple(value) if isinstance(value, (list, tuple)) else value
            for key, value in dict(overrides or {}).items()
        }
        augment.view_configs(preset, **overrides)  # refuses a bad option now, not when traced
        self.preset = preset
        self.overrides = overrides
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        # No state to create: built now, or `fit` under a strategy would try to build the model
        # by calling it on a crop batch.
        self.built = True

    def call(self, crops, seeds) -> tuple[tf.Tensor, tf.Tensor]:
        """Returns `(view1, view2)`, float32 [B, S, S, 3], from crops [B, 2, S, S, 3] (uint8
        or float in [0, 1]) and seeds int [B, 2, 2] (`byol_tf.views.augment.view_seeds`)."""
        return augment.augment_crops(
            crops, seeds, self.preset, mean=self.mean, std=self.std, **self.overrides
        )

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            {
                "preset": self.preset,
                "overrides": {
                    key: list(value) if isinstance(value, tuple) else value
                    for key, value in self.overrides.items()
                },
                "mean": list(self.mean),
                "std": list(self.std),
            }
        )
        return config
