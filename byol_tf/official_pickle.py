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


def _reconstruct_jax_array(fun, args, arr_state, aval_state=None):
    """Stand-in for `jax._src.array._reconstruct_array`: the NumPy array, on no device."""
    del aval_state
    array = fun(*args)
    array.__setstate__(arr_state)
    return array


_ExperimentState = collections.namedtuple("_ByolExperimentState", _STATE_FIELDS)


class _Record(tuple):
    """Stand-in for an optimiser-state named tuple: its fields, as a tuple (never used)."""

    def __new__(cls, *fields):
        return super().__new__(cls, fields)


def _namedtuple(name, fields, *unused):
    """Stand-in for dill's `_create_namedtuple`: a new, inert named tuple class."""
    del unused
    return collections.namedtuple(re.sub(r"\W", "_", str(name)) or "record", list(fields))


# Every global an official checkpoint may name, and what stands in for it. Anything else is
# refused before it is looked up: unpickling a foreign global can run arbitrary code.
_NUMPY = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
}
_ALLOWED = {
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
    ("optax._src.base", "EmptyState"): _Record,
    ("optax._src.transform", "TraceState"): _Record,
    ("optax._src.transform", "ScaleByScheduleState"): _Record,
    ("jax._src.array", "_reconstruct_array"): _reconstruct_jax_array,
    ("dill._dill", "_create_namedtuple"): _namedtuple,
}


class _SafeUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the globals of `_ALLOWED` and NumPy's array builders."""

    def __init__(self, handle, path):
        super().__init__(handle, encoding="latin1")
        self._path = path

    def find_class(self, module, name):
        key = (module, name)
        if key in _NUMPY:
            # NumPy's own reconstruction functions build arrays and dtypes only.
            return super().find_class(module, name)
        if key in _ALLOWED:
            return _ALLOWED[key]
        raise CheckpointFormatError(
            f"{self._path}: refused to load {module}.{name}, which is not part of "
            f"{EXPECTED_FORMAT}; it was not run (loading foreign pickles can run code)"
        )


def load_official(path):
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
    if isinstance(state, tuple) and not hasattr(state, "_fields") and len(state) == 5:
        state = _ExperimentState(*state)
    if isinstance(state, dict):
        state = _ExperimentState(*(state.get(field) for field in _STATE_FIELDS))
    if not isinstance(state, _ExperimentState):
        found = sorted(content)[:6] if isinstance(content, dict) else type(content).__name__
        raise CheckpointFormatError(
            f"{path}: a pickle without a BYOL experiment_state (found {found}); "
            f"expected {EXPECTED_FORMAT}"
        )
    trees = {}
    for field in _STATE_FIELDS[:4]:
        tree = getattr(state, field)
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
