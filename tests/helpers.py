"""Helpers shared by the test modules: tiny models and data the tests make themselves."""

import keras


def tiny_encoder(image_size=8, channels=3, filters=4, sync_bn=False, name="tiny"):
    """Conv → BN → ReLU → global pool: the smallest encoder with BatchNorm."""
    inputs = keras.Input((image_size, image_size, channels))
    x = keras.layers.Conv2D(filters, 3, padding="same", name="conv")(inputs)
    x = keras.layers.BatchNormalization(synchronized=sync_bn, name="bn")(x)
    x = keras.layers.ReLU()(x)
    outputs = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, outputs, name=name)
