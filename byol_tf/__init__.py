"""BYOL (Bootstrap Your Own Latent) self-supervised pretraining for TensorFlow 2 / Keras 3."""

from byol_tf import losses, networks
from byol_tf.callbacks import TargetEMA
from byol_tf.model import BYOL
from byol_tf.optimizers import LARS
from byol_tf.schedules import WarmupConstant, WarmupCosine, cosine_tau

__version__ = "0.1.0"

__all__ = [
    "BYOL",
    "LARS",
    "TargetEMA",
    "WarmupConstant",
    "WarmupCosine",
    "cosine_tau",
    "losses",
    "networks",
]
