"""Input pipelines: data sources (the offline demo set, arrays, image folders,
tensorflow-datasets), image decoding and its corrupt-file records, the checks that two splits
suit a labelled evaluation, and the tf.data pipelines (`pretrain_dataset`, `eval_dataset`).

May import `byol_tf.settings`, `byol_tf.views` and `byol_tf.core` (the batch structure).
"""

from byol_tf.data.pipelines import (
    eval_dataset,
    pretrain_dataset,
    source_info,
    steps_per_epoch,
    train_step_augmentation,
    whole_images,
)

__all__ = [
    "eval_dataset",
    "train_step_augmentation",
    "pretrain_dataset",
    "source_info",
    "steps_per_epoch",
    "whole_images",
]
