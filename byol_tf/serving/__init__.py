"""SavedModel export of a pretrained encoder for TensorFlow Serving, its metadata file, and
loading an export back.

May import `byol_tf.settings`, `byol_tf.views` (the serving crops), `byol_tf.core` and
`byol_tf.runs` (the checkpoint an export is made from).
"""

from byol_tf import submodules_on_first_use
from byol_tf.serving.export import export_checkpoint, export_encoder, load_exported

__all__ = ["export_checkpoint", "export_encoder", "load_exported"]

__getattr__ = submodules_on_first_use(__name__)
