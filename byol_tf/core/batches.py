"""Internal: the structure of BYOL training batches: two views of the same images, labels
optional."""

from typing import Any

import tensorflow as tf

# The keys of a view batch (`pretrain_dataset()`): the two views of each image, and its label
# (-1 where there is none) when the source has labels.
VIEW1, VIEW2, LABEL = "view1", "view2", "label"
# The keys of a crop batch (`pretrain_dataset(augment_on="device")`): crop pairs and the
# per-image, per-view seeds of the augmentation the train step does (plus LABEL).
CROPS, SEEDS = "crops", "seeds"


def crop_batch(data) -> dict | None:
    """The crop batch `{"crops", "seeds"[, "label"]}` that `data` holds, or None.

    `data` may be wrapped in a tuple, as `train_on_batch` passes it.

    Raises:
        ValueError: for a dict with "crops" but no "seeds".
    """
    if isinstance(data, (tuple, list)):
        data = tuple(d for d in data if d is not None)
        return crop_batch(data[0]) if len(data) == 1 else None
    if not (isinstance(data, dict) and CROPS in data):
        return None
    if SEEDS not in data:
        raise ValueError(
            "A BYOL crop batch dict needs the keys 'crops' and 'seeds' (and optionally "
            f"'label'), as pretrain_dataset(augment_on='device') yields. Received keys: "
            f"{sorted(data)}"
        )
    return data


def unpack_views(data) -> tuple[Any, Any, Any]:
    """Splits a training batch into `(view1, view2, labels_or_None)`.

    Accepts `{"view1", "view2"[, "label"]}`, `(view1, view2)`, `(view1, view2, label)`,
    `((view1, view2), label)` and any of these wrapped in a 1-tuple (as `fit` passes arrays).

    Raises:
        ValueError: for any other structure.
    """
    if isinstance(data, dict):
        missing = {VIEW1, VIEW2} - set(data)
        if missing:
            raise ValueError(
                "A BYOL training batch dict needs the keys 'view1' and 'view2' (and optionally "
                f"'label'). Received keys: {sorted(data)}"
            )
        return data[VIEW1], data[VIEW2], data.get(LABEL)
    if isinstance(data, (tuple, list)):
        # train_on_batch(x) packs (x, None, None): drop the empty y / sample_weight slots.
        data = tuple(data)
        while data and data[-1] is None:
            data = data[:-1]
        if len(data) == 1:
            return unpack_views(data[0])
        if len(data) == 2 and isinstance(data[0], (tuple, list, dict)):
            view1, view2, _ = unpack_views(data[0])
            return view1, view2, data[1]
        if len(data) in (2, 3):
            return data[0], data[1], data[2] if len(data) == 3 else None
    raise ValueError(
        "A BYOL training batch must be (view1, view2), (view1, view2, label), "
        f"((view1, view2), label) or a dict with 'view1'/'view2'. Received: {type(data).__name__}"
    )


def image_shape_of(data) -> tuple[int, int, int] | None:
    """`(H, W, C)` of the first view in a dataset, batch or array structure, else None."""
    spec = data.element_spec if isinstance(data, tf.data.Dataset) else data
    crops = crop_batch(spec)
    if crops is not None:  # [B, 2, S, S, C]: two crops of each image
        shape = tuple(crops[CROPS].shape)[2:]
        return tuple(int(d) for d in shape) if len(shape) == 3 and None not in shape else None
    try:
        view1, _, _ = unpack_views(spec)
        shape = tuple(view1.shape)[1:]
    except (ValueError, AttributeError, TypeError):
        return None
    if len(shape) != 3 or any(d is None for d in shape):
        return None
    return tuple(int(d) for d in shape)
