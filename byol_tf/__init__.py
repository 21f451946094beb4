"""BYOL (Bootstrap Your Own Latent) self-supervised pretraining for TensorFlow 2 / Keras 3."""

import importlib

from byol_tf.callbacks import TargetEMA
from byol_tf.model import BYOL
from byol_tf.optimizers import LARS
from byol_tf.schedules import WarmupConstant, WarmupCosine, cosine_tau

__version__ = "0.1.0"

# Every public module is reachable as an attribute of the package (`byol_tf.data.pretrain_dataset`)
# and imported on first use, so `python -m byol_tf.<module>` runs a module not yet imported.
_MODULES = (
    "augment",
    "batches",
    "callbacks",
    "checkpoints",
    "config",
    "data",
    "decoding",
    "distribution",
    "evaluation",
    "export",
    "image_ops",
    "losses",
    "model",
    "networks",
    "optimizers",
    "rng",
    "schedules",
    "source_kinds",
    "sources",
    "training",
)


def __getattr__(name):
    if name in _MODULES:
        return importlib.import_module(f"byol_tf.{name}")
    raise AttributeError(f"module 'byol_tf' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_MODULES))

__all__ = [
    "BYOL",
    "LARS",
    "TargetEMA",
    "WarmupConstant",
    "WarmupCosine",
    "cosine_tau",
    *_MODULES,
]
