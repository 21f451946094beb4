"""Bad inputs to the Python API: encoders BYOL cannot use, views of [0, 255] pixels."""

import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import FAST

import byol_tf
from byol_tf.data import pipelines


def _conv(name, pool, two_outputs=False):
    inputs = keras.Input((8, 8, 3))
    maps = keras.layers.Conv2D(4, 3, padding="same")(inputs)
    features = keras.layers.GlobalAveragePooling2D()(maps) if pool else maps
    return keras.Model(inputs, [features, maps] if two_outputs else features, name=name)


def test_byol_refuses_an_encoder_without_pooling_in_one_line():
    with pytest.raises(ValueError) as error:
        byol_tf.BYOL(_conv("no_pool", pool=False), projection_dim=4, hidden_dim=8)
    assert str(error.value) == (
        "encoder 'no_pool' outputs shape (None, 8, 8, 4) for images of shape (None, 8, 8, 3); "
        "BYOL needs features of rank 2, [batch, D] (end the encoder with a global pooling, e.g. "
        "keras.layers.GlobalAveragePooling2D)"
    )


def test_byol_refuses_an_encoder_of_two_outputs_naming_it():
    with pytest.raises(ValueError, match=r"^encoder 'two' has 2 outputs; BYOL needs one, the "):
        byol_tf.BYOL(_conv("two", pool=True, two_outputs=True), projection_dim=4, hidden_dim=8)


def _fit_warnings(x, fits=1):
    model = byol_tf.BYOL(_conv("tiny", pool=True), projection_dim=4, hidden_dim=8)
    model.compile(optimizer="sgd")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(fits):
            model.fit(x, epochs=1, verbose=0, callbacks=[byol_tf.TargetEMA(0.99)])
    found = [w for w in caught if "[0, 255] pixels" in str(w.message)]
    assert all(w.filename == __file__ for w in found)  # the line that called fit
    return [str(w.message) for w in found]


_PIXELS = np.random.default_rng(0).integers(0, 256, (4, 8, 8, 3)).astype(np.uint8)


@pytest.mark.parametrize(
    "views",
    [
        {"view1": _PIXELS, "view2": _PIXELS},
        {"view1": _PIXELS.astype("float32"), "view2": _PIXELS.astype("float32")},
        tf.data.Dataset.from_tensors({"view1": _PIXELS, "view2": _PIXELS}),
    ],
    ids=["uint8", "float_0_255", "uint8_dataset"],
)
def test_fit_warns_once_on_views_of_0_255_pixels(views):
    found = _fit_warnings(views, fits=2)
    assert len(found) == 1 and found[0].startswith("BYOL.fit: the views look like [0, 255]")


def test_fit_says_nothing_of_normalised_views():
    views = (_PIXELS / 255.0 - 0.45) / 0.225
    assert _fit_warnings({"view1": views, "view2": views[::-1]}) == []


@pytest.mark.parametrize(
    "images, warned",
    [(_PIXELS.astype("float32"), True), (_PIXELS / 255.0, False), (_PIXELS, False)],
    ids=["float_0_255", "float_0_1", "uint8"],
)
def test_pretrain_dataset_warns_on_float_images_of_0_255(images, warned, monkeypatch):
    class CheckedError(Exception):
        """The source is read after the check: the pipeline itself is not needed here."""

    def resolve(*args):
        raise CheckedError

    monkeypatch.setattr(pipelines.sources, "source", resolve)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(CheckedError):
            pipelines.pretrain_dataset((images,), 2, 8, **FAST)
    found = [str(w.message) for w in caught if "clip to white" in str(w.message)]
    assert all(w.filename == __file__ for w in caught if "clip to white" in str(w.message))
    assert found == (
        ["pretrain_dataset: the float images of the source reach 255; float images are read as "
         "[0, 1] pixels (uint8 ones as [0, 255]), so these views would clip to white. Divide "
         "them by 255, or pass them as uint8."]
        if warned else []
    )  # fmt: skip
