"""Writes files in the official BYOL checkpoint format (deepmind-research byol/), for tests.

The official code (`byol/utils/checkpointing.py`) writes `dill.dump(dict(experiment_state=
_ByolExperimentState(online_params, target_params, online_state, target_state, opt_state),
step=step, rng=rng), protocol=2)`. `write` does the same with dill itself, with stand-in classes
at the module paths the 2020 files name: `byol.byol_experiment._ByolExperimentState`, Haiku's
mappings `haiku._src.data_structures.frozendict` (Haiku 0.0.2, reduced to `frozendict(dict)`) or
`FlatMapping` (later Haiku, reduced to `FlatMapping(dict)`), and the optimiser state of
`byol/utils/optimizers.py`'s LARS chain, `(AddWeightDecayState(), ScaleByLarsState(mu),
ScaleState())`, the last from `optax._src.transform`. Which dill writes depends on the
environment: 0.3.2 (the release of August 2020) in the pinned and parity legs, today's in the
newest leg.
"""

import collections
import contextlib
import json
import os
import sys
import types

import dill
import numpy as np

NAMES_FILE = os.path.join(os.path.dirname(__file__), "data", "official_res50x1_names.json")
_MISSING = object()
STATE_FIELDS = "online_params target_params online_state target_state opt_state"


def official_names():
    """`(params, state)`: `{module: {name: shape}}` of the official ResNet-50 ×1 network."""
    with open(NAMES_FILE) as handle:
        recorded = json.load(handle)
    return recorded["params"], recorded["state"]


def _placed(cls, module, name):
    """`cls` named as `module.name`, the path a 2020 file names it by."""
    cls.__module__, cls.__name__, cls.__qualname__ = module, name, name
    return cls


class _HaikuMapping(dict):
    """Haiku's immutable mappings reduce to `type(plain_dict)`."""

    def __reduce__(self):
        return type(self), (dict(self),)


FrozenDict = _placed(type("frozendict", (_HaikuMapping,), {}), "haiku._src.data_structures",
                     "frozendict")  # fmt: skip
FlatMapping = _placed(type("FlatMapping", (_HaikuMapping,), {}), "haiku._src.data_structures",
                      "FlatMapping")  # fmt: skip
MAPPINGS = {"frozendict": FrozenDict, "FlatMapping": FlatMapping, "dict": dict}
ExperimentState = _placed(
    collections.namedtuple("_ByolExperimentState", STATE_FIELDS), "byol.byol_experiment",
    "_ByolExperimentState",
)  # fmt: skip
AddWeightDecayState = _placed(
    collections.namedtuple("AddWeightDecayState", ""), "byol.utils.optimizers",
    "AddWeightDecayState",
)  # fmt: skip
ScaleByLarsState = _placed(
    collections.namedtuple("ScaleByLarsState", "mu"), "byol.utils.optimizers", "ScaleByLarsState"
)
ScaleState = _placed(collections.namedtuple("ScaleState", ""), "optax._src.transform", "ScaleState")


@contextlib.contextmanager
def _classes_in_place(*classes):
    """Makes each class importable at its module path while the file is written (dill writes
    a class by reference only when it finds it there), then undoes it. Modules that do not
    exist (`byol`, `optax`, and `haiku` outside the parity leg) are made empty for the time."""
    added, replaced = [], []

    def put(owner, name, value):
        replaced.append((owner, name, getattr(owner, name, _MISSING)))
        setattr(owner, name, value)

    for cls in classes:
        parts = cls.__module__.split(".")
        for i in range(1, len(parts) + 1):
            name = ".".join(parts[:i])
            if name not in sys.modules:
                sys.modules[name] = types.ModuleType(name)
                added.append(name)
            parent = sys.modules[".".join(parts[: i - 1])] if i > 1 else None
            if parent is not None and getattr(parent, parts[i - 1], None) is not sys.modules[name]:
                put(parent, parts[i - 1], sys.modules[name])
        put(sys.modules[cls.__module__], cls.__name__, cls)
    try:
        yield
    finally:
        for owner, name, value in reversed(replaced):
            if value is _MISSING:
                delattr(owner, name)
            else:
                setattr(owner, name, value)
        for name in added:
            del sys.modules[name]


def write(
    path, online_params, target_params, online_state, target_state, step=1000, frozen=True,
    mapping=None,
):  # fmt: skip
    """Writes the trees (`{module: {name: array}}`) as an official checkpoint at `path`, with
    dill, as `byol/utils/checkpointing.py` does.

    `mapping` is Haiku's mapping class: "frozendict", "FlatMapping" or "dict" (Haiku since
    2021); by default "frozendict", or "dict" when `frozen` is False.
    """
    cls = MAPPINGS[mapping or ("frozendict" if frozen else "dict")]

    def wrap(tree):
        return cls({k: cls({n: np.asarray(a) for n, a in v.items()}) for k, v in tree.items()})

    momentum = wrap({k: {n: np.zeros_like(a) for n, a in v.items()}
                     for k, v in online_params.items()})  # fmt: skip
    opt_state = (AddWeightDecayState(), ScaleByLarsState(momentum), ScaleState())
    state = ExperimentState(
        wrap(online_params), wrap(target_params), wrap(online_state), wrap(target_state), opt_state
    )
    rng = np.array([0, 42], np.uint32)  # jax.random.PRNGKey, as the official loop passes it
    content = dict(experiment_state=state, step=step, rng=rng)
    placed = [c for c in (cls, ExperimentState, AddWeightDecayState, ScaleByLarsState, ScaleState)
              if c is not dict]  # fmt: skip
    with _classes_in_place(*placed), open(path, "wb") as handle:
        dill.dump(content, handle, protocol=2)


def random_trees(params_shapes, state_shapes, seed=0, scale=None):
    """Random parameters and BatchNorm statistics of the given shapes, as official trees.

    Convolution and linear weights have std 1/sqrt(fan_in) (activations keep their scale);
    BatchNorm scale, offset, mean and variance are random (variance positive).
    """
    rng = np.random.default_rng(seed)
    params = {}
    for module, values in params_shapes.items():
        params[module] = {}
        for name, shape in values.items():
            if name == "w":
                fan_in = int(np.prod(shape[:-1]))
                value = rng.normal(0, scale or 1 / np.sqrt(fan_in), shape)
            elif name == "scale":
                value = rng.uniform(0.5, 1.5, shape)
            else:  # b, offset
                value = rng.normal(0, 0.1, shape)
            params[module][name] = value.astype(np.float32)
    state = {}
    for module, values in state_shapes.items():
        shape = values["average"]
        if module.endswith("var_ema"):
            average = rng.uniform(0.5, 2.0, shape)
        else:
            average = rng.normal(0, 0.5, shape)
        state[module] = {
            "average": average.astype(np.float32),
            "hidden": (average * 0.9).astype(np.float32),  # any value: inference reads average
            "counter": np.array(7, np.int32),
        }
    return params, state


def official_shapes(
    depth=50, width=1.0, hidden=4096, projection=256, classes=1000, stem=None, stem_suffix=""
):  # fmt: skip
    """`(params, state)` shapes of the official network, named as Haiku names them.

    Written from the official code's structure (byol/utils/networks.py over Haiku's
    ResNet BlockV1), for a width that may be below 1 (every channel count times `width`).
    `stem`: the stem's channels, when not 64 × `width` (the official code before 2020-08-17);
    `stem_suffix`: "_1" names the stem as Haiku names a re-created module (`initial_conv_1`).
    """
    blocks = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3), 200: (3, 24, 36, 3)}
    params, state = {}, {}

    def conv(name, k, cin, cout):
        params[name] = {"w": [k, k, cin, cout]}

    def norm(name, channels, rank=4):
        shape = [1] * (rank - 1) + [channels]
        params[name] = {"offset": shape, "scale": shape}
        for ema in ("mean_ema", "var_ema"):
            state[f"{name}/~/{ema}"] = {"average": shape, "counter": [], "hidden": shape}

    stem = stem or int(64 * width)
    conv(f"res_net{depth}/~/initial_conv{stem_suffix}", 7, 3, stem)
    norm(f"res_net{depth}/~/initial_batchnorm{stem_suffix}", stem)
    cin = stem
    for group, count in enumerate(blocks[depth]):
        channels = int(256 * width) * 2**group
        for block in range(count):
            prefix = f"res_net{depth}/~/block_group_{group}/~/block_{block}/~/"
            if block == 0:
                conv(prefix + "shortcut_conv", 1, cin, channels)
                norm(prefix + "shortcut_batchnorm", channels)
            conv(prefix + "conv_0", 1, cin, channels // 4)
            norm(prefix + "batchnorm_0", channels // 4)
            conv(prefix + "conv_1", 3, channels // 4, channels // 4)
            norm(prefix + "batchnorm_1", channels // 4)
            conv(prefix + "conv_2", 1, channels // 4, channels)
            norm(prefix + "batchnorm_2", channels)
            cin = channels
    for head, fan_in in (("projector", cin), ("predictor", projection)):
        params[f"{head}/linear"] = {"b": [hidden], "w": [fan_in, hidden]}
        norm(f"{head}/batch_norm", hidden, rank=2)
        params[f"{head}/linear_1"] = {"w": [hidden, projection]}
    params["classifier"] = {"b": [classes], "w": [cin, classes]}
    return params, state


def tiny_trees():
    """`(online_params, target_params, online_state, target_state)`: a few modules with
    distinct float32 and int32 values, for reading files back exactly."""

    def values(offset, *shape):
        return (np.arange(np.prod(shape), dtype=np.float32).reshape(shape) + offset) / 7

    def params(offset):
        return {
            "res_net50/~/initial_conv": {"w": values(offset, 7, 7, 3, 2)},
            "projector/~/linear": {"w": values(offset + 1, 2, 3), "b": values(offset + 2, 3)},
        }

    def state(offset):
        ema = {"average": values(offset, 1, 1, 1, 2), "hidden": values(offset + 1, 1, 1, 1, 2),
               "counter": np.array(9, np.int32)}  # fmt: skip
        return {"res_net50/~/initial_batchnorm/~/mean_ema": ema}

    return params(0), params(100), state(10), state(110)


if __name__ == "__main__":  # python tests/official_format.py OUT.pkl [frozendict|FlatMapping|dict]
    write(sys.argv[1], *tiny_trees(), step=1234, mapping=(sys.argv[2:] or ["frozendict"])[0])
