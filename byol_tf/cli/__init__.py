"""The programs: train, evaluate, export and import (`byol-train`, ..., `train.py`,
`evaluate.py`), their absl flags generated from the settings classes, their entry points that
handle Ctrl-C from the first line (`programs`), the shared absl entry point and one-line errors
(`runner`), and a console without TensorFlow's start-up noise.

The top floor: may import everything; nothing in byol_tf imports it. This file imports nothing,
so that `byol_tf.cli.programs` starts with only the standard library loaded.
"""

from byol_tf import submodules_on_first_use

__getattr__ = submodules_on_first_use(__name__)
