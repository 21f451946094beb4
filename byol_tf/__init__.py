"""BYOL (Bootstrap Your Own Latent) self-supervised pretraining for TensorFlow 2 / Keras 3."""

import importlib

__version__ = "0.1.0"

# Everything public is reachable from the package (`byol_tf.BYOL`, `byol_tf.data.pretrain_dataset`)
# and imported on first use: `import byol_tf` alone does not import TensorFlow, so the programs
# (byol_tf.cli) can set TensorFlow's logging before it loads, and `python -m byol_tf.<module>`
# runs a module that is not yet imported.
_MODULES = (
    "augment",
    "batches",
    "callbacks",
    "checkpoints",
    "choices",
    "config",
    "data",
    "decoding",
    "device_augment",
    "distribution",
    "eval_preprocess",
    "evaluation",
    "export",
    "fields",
    "image_ops",
    "losses",
    "model",
    "monitoring",
    "networks",
    "official",
    "optimizers",
    "program_settings",
    "protocols",
    "recipes",
    "rng",
    "run_dir",
    "run_plan",
    "schedules",
    "settings",
    "source_kinds",
    "sources",
    "splits",
    "training",
)
_CLASSES = {
    "BYOL": "model",
    "LARS": "optimizers",
    "TargetEMA": "callbacks",
    "WarmupConstant": "schedules",
    "WarmupCosine": "schedules",
    "cosine_tau": "schedules",
}


def __getattr__(name):
    if name in _MODULES:
        return importlib.import_module(f"byol_tf.{name}")
    if name in _CLASSES:
        return getattr(importlib.import_module(f"byol_tf.{_CLASSES[name]}"), name)
    raise AttributeError(f"module 'byol_tf' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_MODULES) | set(_CLASSES))


__all__ = [*_CLASSES, *_MODULES]
