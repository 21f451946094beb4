"""MirroredStrategy: 2 replicas with B/2 each equal 1 replica with B (synchronised BN)."""

import keras
import numpy as np
import tensorflow as tf
from helpers import tiny_encoder

import byol_tf


def _train(devices, views, steps=2):
    strategy = tf.distribute.MirroredStrategy(devices)
    keras.utils.set_random_seed(0)
    with strategy.scope():
        # An encoder of any image size: BYOL builds itself in fit, from the first batch,
        # inside the strategy's scope.
        encoder = tiny_encoder(image_size=None, sync_bn=True)
        model = byol_tf.BYOL(encoder, projection_dim=8, hidden_dim=16, synchronized_bn=True)
        assert not model.built
        model.compile(optimizer=byol_tf.LARS(0.5, weight_decay=1e-4, eta=0.02))
    data = tf.data.Dataset.from_tensors({"view1": views["view1"], "view2": views["view2"]})
    history = model.fit(
        data.repeat(), steps_per_epoch=steps, verbose=0, callbacks=[byol_tf.TargetEMA(0.9)]
    )
    return history.history["loss"][0], model


def _assert_close(a, b):
    """Relative difference of whole tensors, ‖a − b‖ ≤ 1e-4·‖b‖ (+1e-5 absolute).

    The absolute floor is for tensors that are ~0: a bias in front of BatchNorm has a true
    gradient of zero, so its value is float noise (norms ~1e-7) whose ratio means nothing.
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert np.linalg.norm(a - b) <= 1e-4 * np.linalg.norm(b) + 1e-5


def test_two_replicas_match_one_replica_with_the_same_global_batch(views):
    assert len(tf.config.list_logical_devices("CPU")) >= 2
    loss1, one = _train(["/cpu:0"], views)
    loss2, two = _train(["/cpu:0", "/cpu:1"], views)
    assert two.distribute_strategy.num_replicas_in_sync == 2
    _assert_close(loss1, loss2)
    for a, b in zip(one.weights, two.weights, strict=True):
        _assert_close(a.numpy(), b.numpy())


def test_heads_use_synchronized_batchnorm_by_default_with_several_replicas():
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        model = byol_tf.BYOL(tiny_encoder(), projection_dim=8, hidden_dim=16)
    assert model.synchronized_bn
    assert model.projector.get_layer("hidden_bn").synchronized
    assert not byol_tf.BYOL(tiny_encoder(), projection_dim=8, hidden_dim=16).synchronized_bn
