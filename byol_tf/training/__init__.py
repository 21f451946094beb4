"""A whole BYOL pretraining run: its plan resolved once from a `TrainConfig`, the optimisation
recipes, the distribution strategy, the callbacks (target EMA, checkpoints, guards, TensorBoard,
the kNN monitor), the monitor's baselines, the host's CPU, and `train(cfg)` itself.

May import every floor below it: `settings`, `views`, `core`, `data`, `runs`, `serving`,
`evaluation`, `official`.
"""

from byol_tf import submodules_on_first_use
from byol_tf.training.train_run import TrainingError, train

__all__ = ["TrainingError", "train"]

__getattr__ = submodules_on_first_use(__name__)
