"""Writes files in the official BYOL checkpoint format (deepmind-research byol/), for tests.

The official code pickles (with dill, protocol 2) `dict(experiment_state=_ByolExperimentState(
online_params, target_params, online_state, target_state, opt_state), step, rng)`, where the
named tuple is `byol.byol_experiment._ByolExperimentState` and Haiku 0.0.x mappings are
`haiku._src.data_structures.frozendict`. Neither package exists here: stand-in classes carry
those paths, and a pickler names them as the real classes would be named in the file.
"""

import collections
import json
import os
import pickle

import numpy as np

NAMES_FILE = os.path.join(os.path.dirname(__file__), "data", "official_res50x1_names.json")


def official_names():
    """`(params, state)`: `{module: {name: shape}}` of the official ResNet-50 ×1 network."""
    with open(NAMES_FILE) as handle:
        recorded = json.load(handle)
    return recorded["params"], recorded["state"]


class ExperimentState(
    collections.namedtuple(
        "_ByolExperimentState",
        "online_params target_params online_state target_state opt_state",
    )
):
    official_path = ("byol.byol_experiment", "_ByolExperimentState")


class FrozenDict(dict):
    """Haiku 0.0.x's `frozendict`, which pickles as `frozendict(plain_dict)`."""

    official_path = ("haiku._src.data_structures", "frozendict")

    def __reduce__(self):
        return type(self), (dict(self),)


class _Pickler(pickle._Pickler):  # the Python pickler: its save can be overridden
    """Names the stand-in classes by their `official_path` (whatever dispatch table dill may
    have installed in the Python pickler)."""

    def save(self, obj, save_persistent_id=True):
        path = obj.__dict__.get("official_path") if isinstance(obj, type) else None
        if path is None:
            return super().save(obj, save_persistent_id)
        memo = self.memo.get(id(obj))
        if memo is not None:
            self.write(self.get(memo[0]))
            return None
        self.write(pickle.GLOBAL + f"{path[0]}\n{path[1]}\n".encode())
        self.memoize(obj)
        return None


def write(path, online_params, target_params, online_state, target_state, step=1000, frozen=True):
    """Writes the trees (`{module: {name: array}}`) as an official checkpoint at `path`."""
    wrap = (lambda tree: FrozenDict({k: FrozenDict(v) for k, v in tree.items()})) if frozen else (
        lambda tree: tree
    )
    state = ExperimentState(
        wrap(online_params), wrap(target_params), wrap(online_state), wrap(target_state),
        (wrap({"momentum": {"w": np.zeros(2, np.float32)}}),),
    )  # fmt: skip
    content = {"experiment_state": state, "step": step, "rng": np.array([0, 42], np.uint32)}
    with open(path, "wb") as handle:
        _Pickler(handle, protocol=2).dump(content)


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


def official_shapes(depth=50, width=1.0, hidden=4096, projection=256, classes=1000):
    """`(params, state)` shapes of the official network, named as Haiku names them.

    Written from the official code's structure (byol/utils/networks.py over Haiku's
    ResNet BlockV1), for a width that may be below 1 (every channel count times `width`).
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

    stem = int(64 * width)
    conv(f"res_net{depth}/~/initial_conv", 7, 3, stem)
    norm(f"res_net{depth}/~/initial_batchnorm", stem)
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
