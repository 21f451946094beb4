"""DeepMind's official BYOL checkpoints (pickled Haiku parameters): reading them without
running code from the file (`reader`), the network they hold read from names and shapes
(`structure`), and their import as byol_tf networks, checkpoints and exports or as the start of a
run (`importer`).

May import every floor below it: `settings`, `views`, `core`, `data`, `runs`, `serving`.
"""

from byol_tf import submodules_on_first_use
from byol_tf.official.importer import import_checkpoint, initialize_from

__all__ = ["import_checkpoint", "initialize_from"]

__getattr__ = submodules_on_first_use(__name__)
