"""What a run is asked to do, as plain data: `TrainConfig` (train.py), the settings of the
evaluate, export and import programs, the view presets of the paper's Table 6, the names of every
enumerated choice and the numbers of the evaluation protocols.

The ground floor: nothing here imports TensorFlow or any other part of byol_tf, so the programs
can read and check their flags before TensorFlow loads.
"""

from byol_tf import submodules_on_first_use
from byol_tf.settings.program_configs import EvalConfig, ExportConfig, ImportConfig
from byol_tf.settings.train_config import TrainConfig
from byol_tf.settings.view_presets import PRESETS, ViewConfig, view_configs

__all__ = [
    "PRESETS",
    "EvalConfig",
    "ExportConfig",
    "ImportConfig",
    "TrainConfig",
    "ViewConfig",
    "view_configs",
]

__getattr__ = submodules_on_first_use(__name__)
