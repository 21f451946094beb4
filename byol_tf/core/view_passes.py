"""Internal: the two views of a training batch and their passes through BYOL's networks."""

from typing import Any

import tensorflow as tf

from byol_tf.core import networks
from byol_tf.core.batches import CROPS, LABEL, SEEDS, VIEW1, crop_batch, unpack_views


def view_shape(input_shape) -> tuple[int | None, ...]:
    """`(batch, H, W, C)` of one view, from the input shape `fit` passes to `build`: such a
    shape, or a dict or pair of them (a crop batch's `[B, 2, H, W, C]` crops, or two views)."""
    if isinstance(input_shape, dict) and CROPS in input_shape:
        crops = tuple(input_shape[CROPS])  # [B, 2, H, W, C]
        input_shape = (crops[0], *crops[2:])
    elif isinstance(input_shape, dict):
        input_shape = input_shape[VIEW1]
    if isinstance(input_shape, (tuple, list)) and isinstance(input_shape[0], (tuple, list)):
        input_shape = input_shape[0]
    return tuple(input_shape)


def views_of(data, augmentation) -> tuple[Any, Any, Any]:
    """`(view1, view2, labels_or_None)` of a batch: its views, or those `augmentation` draws
    from its crops.

    Args:
        data: a batch of view pairs (`byol_tf.core.batches.unpack_views`) or a crop batch
            (`byol_tf.core.batches.crop_batch`).
        augmentation: the layer mapping `(crops, seeds)` to two views, or None.

    Raises:
        ValueError: for a crop batch without `augmentation`, or a batch of another structure.
    """
    crops = crop_batch(data)
    if crops is None:
        return unpack_views(data)
    if augmentation is None:
        raise ValueError(
            "The batches hold crops (pretrain_dataset(augment_on='device')) but this BYOL "
            "model has no augmentation: pass augmentation=byol_tf.data.train_step_augmentation"
            "(...) to BYOL(...), with the pretrain_dataset's source, image_size and options."
        )
    view1, view2 = augmentation(crops[CROPS], crops[SEEDS])
    return view1, view2, crops.get(LABEL)


def grouped(grouped_views, nets) -> bool:
    """Whether `nets` forward both views as one batch with per-view statistics.

    Args:
        grouped_views: `BYOL`'s option: True, False or "auto" (True when every BatchNorm
            layer of `nets` is a `networks.GroupedBatchNormalization`).
        nets: Keras models.

    Raises:
        ValueError: for True when a BatchNorm layer of `nets` is a plain one.
    """
    if grouped_views == "auto":
        return all(networks.supports_batch_groups(net) for net in nets)
    if grouped_views and not all(networks.supports_batch_groups(n) for n in nets):
        raise ValueError(
            "grouped_views=True needs every BatchNorm layer to be a "
            "byol_tf.core.networks.GroupedBatchNormalization (byol_tf.core.networks' networks "
            "are); this encoder has plain BatchNormalization layers. Use "
            "grouped_views='auto' or False."
        )
    return bool(grouped_views)


def forward_views(view1, view2, nets, groups=None) -> dict[str, tf.Tensor]:
    """Runs `nets` (`{output name: model}`, applied in order) on both views, in training mode.

    Args:
        view1: [B, H, W, C] images.
        view2: [B, H, W, C] images.
        nets: `{output name: model}`.
        groups: None: one pass per view, each on its own BatchNorm statistics (the official
            code); 2: both views as one batch of 2B images whose BatchNorm layers normalise
            each view with that view's statistics (`networks.batch_groups`); 1: one batch,
            statistics over all 2B images (`BYOL(joint_views=True)`).

    Returns:
        `{f"{name}_view{i}": output}` for every network and both views, e.g.
        `projection_view1` (the official code's naming).
    """
    if groups:
        x = tf.concat([view1, view2], axis=0)
        outputs = {}
        with networks.batch_groups(groups):
            for name, net in nets.items():
                x = net(x, training=True)
                outputs[f"{name}_view1"], outputs[f"{name}_view2"] = tf.split(x, 2, axis=0)
        return outputs
    outputs = {}
    for i, x in enumerate((view1, view2), start=1):
        for name, net in nets.items():
            x = net(x, training=True)
            outputs[f"{name}_view{i}"] = x
    return outputs
