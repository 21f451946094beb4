"""Input pipelines: data sources (the offline demo set, arrays, image folders,
tensorflow-datasets) resolved once into a `Source` (`source`), image decoding and the record of
the files each source skipped, the checks that two splits suit a labelled evaluation, and the
tf.data pipelines (`pretrain_dataset`, `eval_dataset`).

May import `byol_tf.settings`, `byol_tf.views` and `byol_tf.core` (the batch structure).
"""

from byol_tf import submodules_on_first_use
from byol_tf.data.pipelines import (
    eval_dataset,
    pretrain_dataset,
    source_info,
    steps_per_epoch,
    train_step_augmentation,
    whole_images,
)
from byol_tf.data.source_kinds import Source, SourceInfo
from byol_tf.data.sources import source

__all__ = [
    "Source",
    "SourceInfo",
    "eval_dataset",
    "pretrain_dataset",
    "source",
    "source_info",
    "steps_per_epoch",
    "train_step_augmentation",
    "whole_images",
]

__getattr__ = submodules_on_first_use(__name__)
