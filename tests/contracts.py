"""Shared test contracts: the behaviour every member of a family must have.

Three families share one: the encoders byol_tf builds (`encoder_contract`), the callbacks of a
BYOL run (`callback_contract`) and the evaluation protocols (`protocol_contract`). A test
module applies a contract to each member (tests/test_encoder_contract.py,
test_callback_contract.py, test_protocol_contract.py); a new member gets the whole contract by
being added to its list. Each contract is a sequence of checks, each also callable on its own
(the tests of a contract break one check at a time on purpose), and each fails with an
`AssertionError` whose message starts with the check's name.
"""

import functools
import warnings

import keras
import numpy as np
import tensorflow as tf
from helpers import tiny_encoder

import byol_tf
from byol_tf.core import optimizers

# --- encoders --------------------------------------------------------------------------------

BATCH = 4


def _images(image_size, channels, seed=0, batch=BATCH):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(batch, image_size, image_size, channels)).astype("float32")


def _values(variables):
    return [np.array(v.numpy()) for v in variables]


def _built(build_encoder, seed):
    keras.utils.set_random_seed(seed)
    return build_encoder()


def check_encoder_output(build_encoder, features, image_size=32, channels=3):
    """`[batch, features]` float32, in training and in inference mode."""
    encoder = _built(build_encoder, 0)
    x = _images(image_size, channels)
    for training in (False, True):
        y = encoder(x, training=training)
        assert tuple(y.shape) == (BATCH, features), (
            f"output: shape {tuple(y.shape)}, expected {(BATCH, features)} (training={training})"
        )
        assert y.dtype == tf.float32, f"output: dtype {y.dtype}, expected float32"
        assert np.all(np.isfinite(y.numpy())), "output: not finite"


def check_encoder_seeds(build_encoder):
    """The same seed gives the same weights; another seed gives other kernels."""
    first = _values(_built(build_encoder, 1).weights)
    again = _values(_built(build_encoder, 1).weights)
    other = _values(_built(build_encoder, 2).weights)
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True)), (
        "seeds: the same seed built different weights"
    )
    differ = [not np.array_equal(a, b) for a, b in zip(first, other, strict=True) if a.ndim > 1]
    assert differ and all(differ), "seeds: another seed built the same kernels"


def check_encoder_round_trip(build_encoder, folder, image_size=32, channels=3):
    """A `.keras` save and load gives the same inference outputs (moving statistics moved
    first, so that they have to travel too)."""
    encoder = _built(build_encoder, 0)
    encoder(_images(image_size, channels, seed=1) * 3 + 1, training=True)  # moves BN statistics
    path = str(folder / "encoder.keras")
    encoder.save(path)
    loaded = keras.saving.load_model(path)
    x = _images(image_size, channels, seed=2)
    expected = encoder(x, training=False).numpy()
    np.testing.assert_array_equal(
        loaded(x, training=False).numpy(), expected, err_msg="round trip: outputs differ"
    )


def _target_pairs(model):
    """(target, online) trainable parameters of the encoders, matched by structure."""
    pairs = zip(model.target_encoder.weights, model.encoder.weights, strict=True)
    return [(t, o) for t, o in pairs if o.trainable]


def check_encoder_in_byol(build_encoder, image_size=32, channels=3):
    """Inside `BYOL`, one train step changes the online encoder and leaves the target's
    parameters as they were; `update_target(0.0)` then copies the online parameters."""
    encoder = _built(build_encoder, 0)
    model = byol_tf.BYOL(encoder, projection_dim=8, hidden_dim=16)
    # Eagerly: the same train_step, without tracing a ResNet's graph (5 s on 2 cores).
    model.compile(optimizer=keras.optimizers.SGD(0.1), run_eagerly=True)
    pairs = _target_pairs(model)
    assert pairs, "byol: the encoder has no trainable parameters"
    online_before = _values([o for _, o in pairs])
    target_before = _values([t for t, _ in pairs])
    view1 = _images(image_size, channels, seed=3)
    view2 = view1 + 0.3 * _images(image_size, channels, seed=4)
    model.train_on_batch({"view1": view1, "view2": view2})
    online_after = _values([o for _, o in pairs])
    assert any(
        not np.array_equal(a, b) for a, b in zip(online_before, online_after, strict=True)
    ), "byol: a train step left the online encoder unchanged"
    target_after = _values([t for t, _ in pairs])
    assert all(
        np.array_equal(a, b) for a, b in zip(target_before, target_after, strict=True)
    ), "byol: a train step changed the target encoder before any EMA"
    model.update_target(0.0)
    for target, online in pairs:
        np.testing.assert_array_equal(
            target.numpy(), online.numpy(), err_msg=f"byol: update_target(0.0) left {target.path}"
        )


def _all_layers(model):
    for layer in getattr(model, "layers", ()):
        yield layer
        yield from _all_layers(layer)


def check_encoder_lars_exclusions(build_encoder):
    """LARS leaves every BatchNorm γ/β and every bias out of weight decay, and decays every
    other trainable variable (the kernels); byol_tf.core.optimizers decides per variable."""
    encoder = _built(build_encoder, 0)
    exempt = set()
    for layer in _all_layers(encoder):
        if isinstance(layer, keras.layers.BatchNormalization):
            exempt.update(id(v) for v in (layer.gamma, layer.beta) if v is not None)
        bias = getattr(layer, "bias", None)
        if bias is not None:
            exempt.add(id(bias))
    assert any(isinstance(x, keras.layers.BatchNormalization) for x in _all_layers(encoder)), (
        "lars: the encoder has no BatchNorm"
    )
    optimizer = optimizers.LARS()
    variables = encoder.trainable_variables
    optimizer.build(variables)
    decayed = dict(zip((id(v) for v in variables), optimizer._decay_flags, strict=True))
    for variable in variables:
        expected = id(variable) not in exempt
        assert decayed[id(variable)] == expected, (
            f"lars: {variable.path} (shape {tuple(variable.shape)}) is "
            f"{'decayed' if decayed[id(variable)] else 'excluded'}, expected "
            f"{'decayed' if expected else 'excluded'}"
        )


def encoder_contract(build_encoder, features, folder, image_size=32, channels=3):
    """Every check of an encoder's contract.

    Args:
        build_encoder: a function of no arguments returning a new encoder (a `keras.Model`
            from `[batch, H, W, C]` images to `[batch, features]`); its weights must follow
            Keras's global seed (`keras.utils.set_random_seed`).
        features: the output width the builder documents.
        folder: a `pathlib.Path` for the `.keras` file.
        image_size: side of the test images.
        channels: channels of the test images.
    """
    check_encoder_output(build_encoder, features, image_size, channels)
    check_encoder_seeds(build_encoder)
    check_encoder_round_trip(build_encoder, folder, image_size, channels)
    check_encoder_in_byol(build_encoder, image_size, channels)
    check_encoder_lars_exclusions(build_encoder)


# --- callbacks -------------------------------------------------------------------------------

CALLBACK_STEPS = 2
HOOKS = (
    ("on_train_begin", ()),
    ("on_epoch_begin", (0,)),
    ("on_train_batch_begin", (0,)),
    ("on_train_batch_end", (0,)),
    ("on_epoch_end", (0,)),
    ("on_train_end", ()),
)
_WITHOUT_EMA = "BYOL.fit without a byol_tf.TargetEMA"


def _views():
    rng = np.random.default_rng(0)
    view1 = rng.normal(size=(8, 8, 8, 3)).astype("float32")
    view2 = (view1 + 0.3 * rng.normal(size=view1.shape)).astype("float32")
    return {"view1": view1, "view2": view2}


def tiny_byol():
    """A compiled BYOL of the tiny encoder (8×8 images), the same weights at every call."""
    keras.utils.set_random_seed(0)
    model = byol_tf.BYOL(tiny_encoder(8), projection_dim=4, hidden_dim=8)
    # Eagerly: the callbacks see the same fit, without a graph traced per test.
    model.compile(optimizer=keras.optimizers.SGD(0.05), run_eagerly=True)
    return model


def _fit(model, callbacks):
    data = tf.data.Dataset.from_tensors(_views()).repeat()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_WITHOUT_EMA)
        model.fit(data, epochs=1, steps_per_epoch=CALLBACK_STEPS, verbose=0, callbacks=callbacks)


def _state(model):
    """`(online, target)` values: every online variable (heads and BatchNorm statistics
    included), and the target parameters the EMA moves."""
    online = model.encoder.weights + model.projector.weights + model.predictor.weights
    targets = [
        t
        for target, source in ((model.target_encoder, model.encoder),
                               (model.target_projector, model.projector))  # fmt: skip
        for t, o in zip(target.weights, source.weights, strict=True)
        if o.trainable
    ]
    return _values(online), _values(targets)


def _same(a, b):
    return all(np.allclose(x, y, rtol=1e-6, atol=1e-7) for x, y in zip(a, b, strict=True))


class _Watched(keras.callbacks.Callback):
    """Runs `inner`'s hooks and records what each did to the weights: the online network
    must never change in a hook, the target only where `moves_target`."""

    def __init__(self, inner, moves_target):
        super().__init__()
        self.inner, self.moves_target = inner, getattr(inner, "moves_target", False)
        self.declared = moves_target
        self.target_moves = 0

    def set_model(self, model):
        super().set_model(model)
        self.inner.set_model(model)

    def set_params(self, params):
        super().set_params(params)
        self.inner.set_params(params)

    def _run(self, hook, *args, **kwargs):
        online, target = _state(self.model)
        getattr(self.inner, hook)(*args, **kwargs)
        online_after, target_after = _state(self.model)
        assert _same(online, online_after), f"weights: {hook} changed the online network"
        if not _same(target, target_after):
            assert self.declared, f"weights: {hook} moved the target"
            self.target_moves += 1


for _hook, _ in HOOKS:
    setattr(_Watched, _hook, functools.partialmethod(_Watched._run, _hook))


@functools.cache
def _reference_states():
    """The states after the first and the second `fit` without callbacks."""
    model = tiny_byol()
    _fit(model, [])
    first = _state(model)
    _fit(model, [])
    return first, _state(model)


def check_callback_in_fit(make_callback, folder, moves_target=False):
    """Runs in `BYOL.fit` for two steps, then in a second `fit` (as a resumed run does); no
    hook changes the online network, and only a callback meant to move the target moves it.
    Besides, a callback that does not move the target leaves the weights where a run without
    it would have them (it changes nothing else the training depends on)."""
    reference = _reference_states()
    model = tiny_byol()
    callback = make_callback(folder)
    watched = _Watched(callback, moves_target)
    for which, expected in zip(("first", "second"), reference, strict=True):
        _fit(model, [watched])
        if not moves_target:
            assert _same(_state(model)[0] + _state(model)[1], expected[0] + expected[1]), (
                f"weights: the run's weights differ from a run without the callback ({which} fit)"
            )
    if moves_target:
        assert watched.target_moves, "weights: the callback meant to move the target left it"
    return model, callback


def check_callback_logs_none(callback):
    """Each hook of a callback that has run in `fit` accepts `logs=None` without changing the
    model's weights."""
    model = callback.model
    before = _state(model)
    for hook, args in HOOKS:
        try:
            getattr(callback, hook)(*args, logs=None)
        except Exception as error:  # any exception breaks the contract
            message = f"logs=None: {hook} raised {type(error).__name__}: {error}"
            raise AssertionError(message) from error
    after = _state(model)
    assert _same(before[0] + before[1], after[0] + after[1]), "logs=None: a hook changed weights"


def callback_contract(make_callback, folder, moves_target=False):
    """Every check of a callback's contract.

    Args:
        make_callback: a function of a folder (`pathlib.Path`, for what the callback writes)
            returning a new callback.
        folder: that folder.
        moves_target: whether the callback is meant to move the target network (`TargetEMA`).
    """
    _, callback = check_callback_in_fit(make_callback, folder, moves_target)
    check_callback_logs_none(callback)


# --- evaluation protocols --------------------------------------------------------------------

NUM_CLASSES = 3


def separable_features(n, seed=0, dim=8):
    """`(features float32 [n, dim], labels int32 [n])`: class c is a cluster around 3·e_c."""
    rng = np.random.default_rng(seed)
    labels = (np.arange(n) % NUM_CLASSES).astype("int32")
    features = 3 * np.eye(dim)[labels] + 0.2 * rng.normal(size=(n, dim))
    return features.astype("float32"), labels


def separable_images(n, seed=0, size=8):
    """`(images float32 [n, size, size, 3] in [0, 1], labels int32 [n])`: the class is the
    brightest channel, with per-pixel noise (separable by the mean colour)."""
    rng = np.random.default_rng(seed)
    labels = (np.arange(n) % NUM_CLASSES).astype("int32")
    noise = rng.normal(scale=0.1, size=(n, size, size, 3))
    images = np.clip(0.2 + noise + 0.6 * np.eye(3)[labels][:, None, None], 0, 1)
    return images.astype("float32"), labels


def _splits(inputs, train_size=48, test_size=24):
    make = separable_features if inputs == "features" else separable_images
    return make(train_size, seed=0), make(test_size, seed=1)


def check_protocol_scores(run_protocol, inputs, min_top1=1.0):
    """"top1" and "top5" in [0, 1], top1 ≤ top5, and top1 ≥ `min_top1` on separable data."""
    train, test = _splits(inputs)
    result = run_protocol(train, test, NUM_CLASSES, 0)
    assert {"top1", "top5"} <= set(result), f"scores: keys {sorted(result)}"
    top1, top5 = result["top1"], result["top5"]
    assert 0 <= top1 <= top5 <= 1, f"scores: top1={top1}, top5={top5}"
    assert top1 >= min_top1, f"scores: top1={top1} < {min_top1} on separable data"
    return result


def check_protocol_seed(run_protocol, inputs, result=None):
    """The same seed gives the same result."""
    train, test = _splits(inputs)
    first = result or run_protocol(train, test, NUM_CLASSES, 0)
    again = run_protocol(train, test, NUM_CLASSES, 0)
    assert again == first, f"seed: {again} != {first}"


def _one_line_error(call, names, check):
    try:
        call()
    except ValueError as error:
        message = str(error)
        assert "\n" not in message, f"{check}: the error is not one line: {message!r}"
        assert any(name in message for name in names), (
            f"{check}: the error names none of {names}: {message!r}"
        )
        return
    raise AssertionError(f"{check}: accepted")


def check_protocol_refuses_label_length(run_protocol, inputs, names):
    """Test labels one shorter than the test inputs: a one-line ValueError naming `names`."""
    train, (x, y) = _splits(inputs)
    _one_line_error(
        lambda: run_protocol(train, (x, y[:-1]), NUM_CLASSES, 0), names, "label length"
    )


def check_protocol_refuses_class_count(run_protocol, inputs, names=("num_classes",)):
    """A class count below the largest label + 1: a one-line ValueError naming it."""
    train, test = _splits(inputs)
    _one_line_error(
        lambda: run_protocol(train, test, NUM_CLASSES - 1, 0), names, "class count"
    )


def protocol_contract(run_protocol, inputs, label_names, min_top1=1.0, class_count=True):
    """Every check of an evaluation protocol's contract.

    Args:
        run_protocol: `run_protocol((train_x, train_y), (test_x, test_y), num_classes, seed)`
            returning the protocol's result dict.
        inputs: "features" (x is `[N, D]` features) or "images" (x is `[N, 8, 8, 3]` images in
            [0, 1]).
        label_names: the argument names a refusal of labels of the wrong length may name.
        min_top1: the bound on top-1 for linearly separable data.
        class_count: run the class-count check (False where a strict xfail test runs it).
    """
    result = check_protocol_scores(run_protocol, inputs, min_top1)
    check_protocol_seed(run_protocol, inputs, result)
    check_protocol_refuses_label_length(run_protocol, inputs, label_names)
    if class_count:
        check_protocol_refuses_class_count(run_protocol, inputs)
