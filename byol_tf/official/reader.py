"""Internal: reads DeepMind's official BYOL checkpoints (Haiku pickles) without running code from
them.

The official code (deepmind-research, `byol/utils/checkpointing.py`) saves a dill pickle of
`dict(experiment_state=_ByolExperimentState(online_params, target_params, online_state,
target_state, opt_state), step, rng)`. Parameters are Haiku mappings from module names
(`res_net50/~/block_group_0/~/block_0/~/conv_0`, `projector/~/linear`, `classifier`) to arrays
(`w`, `b`, `scale`, `offset`); BatchNorm statistics are the `average` of the states
`.../mean_ema` and `.../var_ema`. docs/official_weights.md describes the format and the reading.
"""

import collections
import os
import pickle
import re
from typing import Any

import numpy as np

_STATE_FIELDS = ("online_params", "target_params", "online_state", "target_state", "opt_state")
# What an official checkpoint is, as the one-line errors about a file name it.
EXPECTED_FORMAT = (
    "an official BYOL checkpoint (a pickle of dict(experiment_state=..., step=..., rng=...) "
    "as deepmind-research byol/utils/checkpointing.py writes, e.g. pretrain_res50x1.pkl)"
)


class CheckpointFormatError(ValueError):
    """A file that is not an official BYOL checkpoint, or one that cannot be read safely."""


def _mapping(*args, **kwargs):
    """Stand-in for Haiku's immutable mappings (`frozendict`, `FlatMapping`): a plain dict."""
    return dict(*args, **kwargs)


def _encode(text, encoding="latin1"):
    """Stand-in for `_codecs.encode`, which protocol-2 pickles use to hold bytes (array data)."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"unexpected bytes encoding {encoding!r}")
    return text.encode("latin1")


# NumPy's array builders, taken from NumPy's own reductions: no module is imported by name, so
# NumPy 1.x files (`numpy.core.*`) and NumPy 2 files (`numpy._core.*`) read under either.
_RECONSTRUCT = np.zeros(()).__reduce__()[0]
_SCALAR = np.float32(0).__reduce__()[0]
_MULTIARRAY = (
    "numpy.core.multiarray",
    "numpy._core.multiarray",
    "numpy.core._multiarray_umath",
    "numpy._core._multiarray_umath",
)
_NUMPY = {
    **{(module, "_reconstruct"): _RECONSTRUCT for module in _MULTIARRAY},
    **{(module, "scalar"): _SCALAR for module in _MULTIARRAY},
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


def _array(builder, args, state, *unused):
    """Stand-in for dill's `_create_array` (and JAX's `_reconstruct_array`): the NumPy array
    that `builder(*args)` and `__setstate__(state)` make, when `builder` is NumPy's."""
    del unused  # an array subclass's `__dict__` (dill) or its device layout (JAX)
    if builder is not _RECONSTRUCT:
        raise pickle.UnpicklingError("an array not built by numpy's _reconstruct")
    array = builder(*args)
    array.__setstate__(state)
    return array


class _Record(tuple):
    """Stand-in for a named tuple (the experiment state, the optimiser's states): its fields,
    as a tuple; the subclasses `_namedtuple` makes carry the field names in `_fields`."""

    _fields = ()

    def __new__(cls, *fields):
        return super().__new__(cls, fields)


def _namedtuple(name, fields, *unused):
    """Stand-in for dill's `_create_namedtuple(name, fields, module[, defaults])`: an inert
    record class with those field names; nothing is imported."""
    del unused
    if not isinstance(name, str) or not all(isinstance(f, str) for f in fields):
        raise pickle.UnpicklingError("a named tuple without a name and field names")
    return type(re.sub(r"\W", "_", name) or "record", (_Record,), {"_fields": tuple(fields)})


_ExperimentState = _namedtuple("_ByolExperimentState", _STATE_FIELDS)


class _Module(str):
    """What dill's `_import_module(name)` stands for: the module's name; nothing imported."""


# The only attributes `dill._get_attr(module, name)` resolves (dill up to 0.3.5 saves
# NumPy's builders and `_codecs.encode` that way), and the modules they come from.
_ATTRIBUTES = {**_NUMPY, ("_codecs", "encode"): _encode}
_MODULES = frozenset(module for module, _ in _ATTRIBUTES)


# Every global an official checkpoint may name, and what stands in for it. Anything else is
# refused before it is looked up: unpickling a foreign global can run arbitrary code.
_ALLOWED = {
    **_NUMPY,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "dict"): dict,
    ("builtins", "list"): list,
    ("builtins", "tuple"): tuple,
    ("_codecs", "encode"): _encode,
    ("haiku._src.data_structures", "frozendict"): _mapping,
    ("haiku._src.data_structures", "FlatMapping"): _mapping,
    ("haiku._src.data_structures", "FlatMap"): _mapping,
    ("byol.byol_experiment", "_ByolExperimentState"): _ExperimentState,
    ("byol.utils.optimizers", "LarsState"): _Record,
    ("byol.utils.optimizers", "ScaleByLarsState"): _Record,
    ("byol.utils.optimizers", "AddWeightDecayState"): _Record,
    ("optax._src.base", "EmptyState"): _Record,
    ("optax._src.transform", "ScaleState"): _Record,
    ("optax._src.transform", "TraceState"): _Record,
    ("optax._src.transform", "ScaleByScheduleState"): _Record,
    ("jax._src.array", "_reconstruct_array"): _array,
}
# dill's own helpers, under the module name of every release: `dill.dill` up to 0.2.7,
# `dill._dill` from 0.2.8. `_import_module` and `_get_attr` are bound per file (they refuse in
# its name).
_DILL_HELPERS = {"_create_namedtuple": _namedtuple, "_create_array": _array}
_DILL_MODULES = ("dill.dill", "dill._dill")


class _SafeUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the globals of `_ALLOWED` and dill's helpers, each to
    an inert stand-in."""

    def __init__(self, handle, path):
        super().__init__(handle, encoding="latin1")
        self._path = path

    def _refuse(self, name):
        return CheckpointFormatError(
            f"{self._path}: refused to load {name}, which is not part of "
            f"{EXPECTED_FORMAT}; it was not run (loading foreign pickles can run code)"
        )

    def _import_module(self, name, *unused):
        if name not in _MODULES:
            raise self._refuse(f"module {name}")
        return _Module(name)

    def _get_attr(self, module, name):
        if not isinstance(module, _Module) or (module, name) not in _ATTRIBUTES:
            raise self._refuse(f"{module}.{name}")
        return _ATTRIBUTES[(module, name)]

    def find_class(self, module, name):
        key = (module, name)
        if key in _ALLOWED:
            return _ALLOWED[key]
        if module in _DILL_MODULES:
            if name in _DILL_HELPERS:
                return _DILL_HELPERS[name]
            if name in ("_import_module", "_get_attr"):
                return getattr(self, name)
        raise self._refuse(f"{module}.{name}")


def load_official(path) -> dict[str, Any]:
    """Reads an official BYOL checkpoint without executing code from it.

    Args:
        path: the `.pkl` file.

    Returns:
        A dict with `online_params`, `target_params`, `online_state`, `target_state` (plain
        `{module name: {name: np.ndarray}}`) and `step` (int).

    Raises:
        CheckpointFormatError: one line naming `path`: missing, unreadable, truncated, a
            foreign pickle or not a BYOL checkpoint.
    """
    if not os.path.isfile(path):
        raise CheckpointFormatError(f"{path}: no such file; expected {EXPECTED_FORMAT}")
    try:
        with open(path, "rb") as handle:
            content = _SafeUnpickler(handle, path).load()
    except CheckpointFormatError:
        raise
    except OSError as error:
        raise CheckpointFormatError(f"{path}: cannot be read ({error.strerror})") from None
    except (EOFError, pickle.UnpicklingError, ValueError, TypeError, AttributeError,
            IndexError, KeyError, MemoryError) as error:  # fmt: skip
        kind = "truncated" if isinstance(error, EOFError) else "not a pickle, or a damaged one"
        raise CheckpointFormatError(
            f"{path}: {kind} ({type(error).__name__}: {str(error)[:80]}); "
            f"expected {EXPECTED_FORMAT}"
        ) from None
    return _experiment_state(content, path)


def _experiment_state(content, path):
    """The four parameter and state trees of a loaded checkpoint, checked."""
    state = content.get("experiment_state") if isinstance(content, dict) else None
    if isinstance(state, dict):
        state = _ExperimentState(*(state.get(field) for field in _STATE_FIELDS))
    # dill re-creates every named tuple class from its name and fields: the experiment state is
    # the tuple with the five fields of the official `_ByolExperimentState`.
    fields = getattr(state, "_fields", None)
    if isinstance(state, tuple) and fields is None and len(state) == 5:
        state = _ExperimentState(*state)
    elif isinstance(state, tuple) and tuple(fields) == _STATE_FIELDS:
        state = _ExperimentState(*state)
    if not isinstance(state, _ExperimentState):
        found = sorted(content)[:6] if isinstance(content, dict) else type(content).__name__
        raise CheckpointFormatError(
            f"{path}: a pickle without a BYOL experiment_state (found {found}); "
            f"expected {EXPECTED_FORMAT}"
        )
    trees = {}
    for field, tree in zip(_STATE_FIELDS[:4], state, strict=False):
        if not isinstance(tree, dict) or not all(
            isinstance(v, dict) and all(isinstance(a, np.ndarray) for a in v.values())
            for v in tree.values()
        ):
            raise CheckpointFormatError(
                f"{path}: its experiment_state.{field} is not a mapping of module names to "
                f"arrays; expected {EXPECTED_FORMAT}"
            )
        trees[field] = {_canonical(name): dict(values) for name, values in tree.items()}
    step = content.get("step", 0)
    trees["step"] = int(np.asarray(step).reshape(-1)[0]) if np.size(step) else 0
    return trees


def _canonical(name):
    """A Haiku module name without its `~` scope markers: `a/~/b` and `a/b` both read `a/b`."""
    return "/".join(part for part in name.split("/") if part != "~")
