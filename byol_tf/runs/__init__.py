"""A training run's folder (`model_dir`), its only owner: where each file lives (checkpoints,
`run_config.json`, flags, summary, TensorBoard and export folders), the lock that keeps one
writer per folder, what `run_config.json` holds, and atomic checkpoints with their recovery.

May import `byol_tf.settings` and `byol_tf.core` (the classes a checkpoint holds).
"""

from byol_tf import submodules_on_first_use

__getattr__ = submodules_on_first_use(__name__)
