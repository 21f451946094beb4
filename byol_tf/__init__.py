"""BYOL (Bootstrap Your Own Latent) self-supervised pretraining for TensorFlow 2 / Keras 3.

The package is built in floors; each may import only the floors below it (tests/test_package.py
checks this on every import, at module level or inside a function):

1. `settings`: what a run is asked to do, as plain data (no TensorFlow).
2. `views`: image operations and BYOL's two view distributions.
3. `core`: the BYOL model, networks, loss, target network, optimisers and schedules.
4. `data`: data sources and tf.data pipelines.
5. `runs`: a run's folder, its only owner: lock, run_config.json, checkpoints, paths.
6. `serving`: SavedModel export and loading.
7. `evaluation`: features, kNN, the linear probes, fine-tuning, `evaluate(cfg)`.
8. `official`: DeepMind's official checkpoints.
9. `training`: a whole pretraining run, `train(cfg)`.
10. `cli`: the programs and their flags.

docs/layout.md says what each module holds.
"""

import importlib
import importlib.util
import warnings
from collections.abc import Callable
from types import ModuleType
from typing import Any

__version__ = "0.2.0"

# The floors, lowest first (tests/test_package.py reads this order).
FLOORS = (
    "settings",
    "views",
    "core",
    "data",
    "runs",
    "serving",
    "evaluation",
    "official",
    "training",
    "cli",
)
# The names the README leads with, reachable from the package and imported on first use:
# `import byol_tf` alone does not import TensorFlow, so the programs can set TensorFlow's logging
# before it loads.
_NAMES = {
    "BYOL": "core.model",
    "LARS": "core.optimizers",
    "AdamW": "core.optimizers",
    "TargetEMA": "training.callbacks",
    "WarmupConstant": "core.schedules",
    "WarmupCosine": "core.schedules",
    "cosine_tau": "core.schedules",
    "TrainConfig": "settings.train_config",
    "train": "training.train_run",
    "evaluate": "evaluation.evaluate_run",
}
# Modules of the flat layout of version 0.1, by their new place: `byol_tf.networks` still
# works, with a DeprecationWarning naming the new module.
_MOVED = {
    "augment": "views.augment",
    "callbacks": "training.callbacks",
    "checkpoints": "runs.checkpoints",
    "device_augment": "views.device_augment",
    "distribution": "training.distribution",
    "export": "serving.export",
    "hardware": "training.hardware",
    "losses": "core.losses",
    "model": "core.model",
    "monitoring": "training.monitoring",
    "networks": "core.networks",
    "optimizers": "core.optimizers",
    "program_settings": "settings.program_configs",
    "recipes": "training.recipes",
    "run_dir": "runs.run_folder",
    "run_plan": "training.run_plan",
    "schedules": "core.schedules",
    "sources": "data.sources",
    "splits": "data.splits",
    "view_presets": "settings.view_presets",
}


def submodules_on_first_use(package: str) -> Callable[[str], ModuleType]:
    """A module `__getattr__` for `package` (a floor) that imports its module `name` on first
    use, so that `byol_tf.core.networks.resnet` works after `import byol_tf` alone, as the names
    in the README do; an unknown name is an `AttributeError`."""

    def __getattr__(name: str) -> ModuleType:  # noqa: N807  (the module attribute hook's own name)
        full = f"{package}.{name}"
        if name.startswith("__") or importlib.util.find_spec(full) is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return importlib.import_module(full)

    return __getattr__


def __getattr__(name: str) -> Any:
    if name in FLOORS:
        return importlib.import_module(f"byol_tf.{name}")
    if name in _NAMES:
        return getattr(importlib.import_module(f"byol_tf.{_NAMES[name]}"), name)
    if name in _MOVED:
        warnings.warn(
            f"byol_tf.{name} is now byol_tf.{_MOVED[name]} (docs/layout.md)",
            DeprecationWarning,
            stacklevel=2,
        )
        return importlib.import_module(f"byol_tf.{_MOVED[name]}")
    raise AttributeError(f"module 'byol_tf' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(FLOORS) | set(_NAMES))


__all__ = [*_NAMES, *FLOORS]
