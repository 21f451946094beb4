"""BYOL (Bootstrap Your Own Latent) self-supervised pretraining for TensorFlow 2 / Keras 3."""

__version__ = "0.1.0"
