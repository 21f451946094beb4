"""BYOL (Bootstrap Your Own Latent) self-supervised pretraining for TensorFlow 2 / Keras 3."""

import importlib

__version__ = "0.1.0"

# The public API: these modules and the classes below, reachable from the package
# (`byol_tf.BYOL`, `byol_tf.data.pretrain_dataset`) and imported on first use: `import byol_tf`
# alone does not import TensorFlow, so the programs (byol_tf.cli) can set TensorFlow's logging
# before it loads, and `python -m byol_tf.<module>` runs a module that is not yet imported.
_PUBLIC_MODULES = (
    "augment",  # the two views (`two_views`) and their halves
    "callbacks",  # TargetEMA, checkpoints, kNN monitor, guards, TensorBoard
    "checkpoints",  # checkpoint files of a run
    "data",  # the tf.data pipelines
    "device_augment",  # `ViewAugmentation`: the views drawn in the train step
    "evaluation",  # features, kNN, linear evaluations, fine-tuning
    "export",  # SavedModel export and loading
    "hardware",  # the CPU's model and features
    "losses",
    "model",  # `BYOL`
    "monitoring",  # the kNN monitor's plan, the baselines that cost nothing
    "networks",  # ResNet encoders, MLP heads
    "official",  # the official checkpoints: import, `--init_from`
    "optimizers",  # LARS, AdamW
    "program_settings",  # the settings of evaluate, export and import
    "recipes",  # the optimisation recipes
    "run_plan",  # a run's plan, built once
    "schedules",  # learning-rate and τ schedules
    "settings",  # `TrainConfig`
    "sources",  # resolving a data source
    "training",  # a whole run, `train`
    "view_presets",  # `ViewConfig` and the view presets
)
# Internals: importable (`byol_tf.rng`) for tests and tools, but not part of the API; each
# says so in the first line of its docstring, and may change without notice.
_INTERNAL_MODULES = (
    "batches",
    "choices",
    "config",
    "decoding",
    "distribution",
    "eval_preprocess",
    "fields",
    "image_ops",
    "model_checks",
    "official_architecture",
    "official_pickle",
    "programs",
    "protocols",
    "rng",
    "run_config",
    "run_dir",
    "run_lock",
    "source_kinds",
    "splits",
    "target_network",
    "view_passes",
)
_MODULES = _PUBLIC_MODULES + _INTERNAL_MODULES
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
    return sorted(set(globals()) | set(_PUBLIC_MODULES) | set(_CLASSES))


__all__ = [*_CLASSES, *_PUBLIC_MODULES]
