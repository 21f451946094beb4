"""Internal: the checks of `BYOL`'s arguments, of its encoder's output and of `fit`'s views."""

import warnings

import keras
import numpy as np
import tensorflow as tf

from byol_tf.core.batches import CROPS, VIEW1


def check_arguments(
    encoder, projection_dim, hidden_dim, num_classes, augmentation, grouped_views
) -> None:
    """Raises a one-line `ValueError` naming the first of `BYOL`'s arguments out of its range."""
    if not isinstance(encoder, keras.Model):
        raise ValueError(
            "encoder must be a keras.Model mapping images to vectors. "
            f"Received: encoder={type(encoder).__name__}"
        )
    for arg, value in (("projection_dim", projection_dim), ("hidden_dim", hidden_dim)):
        if not isinstance(value, int) or value <= 0:
            raise ValueError(f"{arg} must be a positive int. Received: {arg}={value!r}")
    if num_classes is not None and (not isinstance(num_classes, int) or num_classes < 2):
        raise ValueError(f"num_classes must be an int >= 2. Received: num_classes={num_classes}")
    if augmentation is not None and not isinstance(augmentation, keras.layers.Layer):
        raise ValueError(
            "augmentation must be a keras layer mapping (crops, seeds) to two views, such "
            "as byol_tf.data.pipelines.train_step_augmentation(...). "
            f"Received: augmentation={type(augmentation).__name__}"
        )
    if grouped_views not in (True, False, "auto"):
        raise ValueError(
            f"grouped_views must be True, False or 'auto'. Received: {grouped_views!r}"
        )


def feature_dim(encoder, input_shape) -> int:
    """The width D of the features `[batch, D]` that `encoder` gives for `input_shape`.

    Raises:
        ValueError: one line naming the encoder, when it has several outputs or its output is
            not of rank 2 (a feature map: no global pooling at its end).
    """
    output = encoder.compute_output_shape(input_shape)
    if isinstance(output, dict) or (
        isinstance(output, (list, tuple)) and any(isinstance(d, (list, tuple)) for d in output)
    ):
        raise ValueError(
            f"encoder {encoder.name!r} has {len(output)} outputs; BYOL needs one, the features "
            f"[batch, D]. Received output shapes: {output}"
        )
    if len(output) != 2 or not isinstance(output[-1], int):
        raise ValueError(
            f"encoder {encoder.name!r} outputs shape {tuple(output)} for images of shape "
            f"{tuple(input_shape)}; BYOL needs features of rank 2, [batch, D] (end the encoder "
            "with a global pooling, e.g. keras.layers.GlobalAveragePooling2D)"
        )
    return output[-1]


# Views are normalised [0, 1] pixels: within ±1/std of 0, about ±5 for ImageNet's statistics.
# Views of [0, 255] pixels reach tens to hundreds.
_NORMALISED_LIMIT = 20.0


def _first_view(data):
    """The first view of a batch of view pairs (or its `TensorSpec`), else None (crops too)."""
    if isinstance(data, dict):
        return None if CROPS in data else data.get(VIEW1)
    if isinstance(data, (tuple, list)) and len(data) >= 2:
        return data[0]
    return None


def raw_pixel_views(data) -> bool:
    """Whether the views of `data` look like [0, 255] pixels rather than normalised ones.

    Uint8 views do; float views do when their largest magnitude exceeds any normalised
    pixel's. A `tf.data.Dataset` is judged by its element spec alone (reading a batch may
    fill a shuffle buffer), so only uint8 views count there.

    Args:
        data: `fit`'s `x`: view pairs as arrays or tensors, or a `tf.data.Dataset` of them.
    """
    if isinstance(data, tf.data.Dataset):
        view = _first_view(data.element_spec)
        return isinstance(view, tf.TensorSpec) and view.dtype == tf.uint8
    view = _first_view(data)
    if view is None or not hasattr(view, "dtype"):
        return False
    dtype = tf.as_dtype(view.dtype)
    if dtype == tf.uint8:
        return True
    if not dtype.is_floating:
        return False
    sample = np.abs(np.asarray(view[:256], np.float32))  # a few images say enough
    return sample.size > 0 and float(sample.max()) > _NORMALISED_LIMIT


def warn_if_raw_pixels(data, stacklevel=2) -> bool:
    """Warns when the views of `data` look like [0, 255] pixels (`raw_pixel_views`): the
    encoder would train on inputs it never sees normalised.

    Args:
        data: `fit`'s `x`.
        stacklevel: `warnings.warn`'s, counted from this function (2: its caller).

    Returns:
        Whether it warned.
    """
    if not raw_pixel_views(data):
        return False
    warnings.warn(
        "BYOL.fit: the views look like [0, 255] pixels (uint8, or floats far above any "
        "normalised pixel); BYOL trains on views of [0, 1] pixels normalised with a mean and "
        "std, as byol_tf.data.pretrain_dataset makes them. Divide by 255 and normalise them, "
        "or use pretrain_dataset.",
        UserWarning,
        stacklevel=stacklevel,
    )
    return True
