"""Atomic, self-contained checkpoints of a BYOL run (`.keras` files in `model_dir/checkpoints`)."""

import contextlib
import os
import re

import keras

from byol_tf import run_dir

CHECKPOINT_DIR = "checkpoints"
_NAME = re.compile(r"^ckpt-(\d+)\.keras$")


def checkpoint_dir(model_dir):
    """The folder that holds a run's checkpoints."""
    return os.path.join(model_dir, CHECKPOINT_DIR)


def list_checkpoints(model_dir):
    """`[(step, path)]` of the finished checkpoints in `model_dir`, oldest first.

    Half-written files (a save interrupted by a crash) have a `.tmp.keras` name and are ignored.
    """
    folder = checkpoint_dir(model_dir)
    if not os.path.isdir(folder):
        return []
    found = []
    for name in os.listdir(folder):
        match = _NAME.match(name)
        if match:
            found.append((int(match.group(1)), os.path.join(folder, name)))
    return sorted(found)


def latest_checkpoint(model_dir):
    """Path of the newest finished checkpoint in `model_dir`, or `None`."""
    found = list_checkpoints(model_dir)
    return found[-1][1] if found else None


def save_checkpoint(model, model_dir, step, keep=3):
    """Saves the whole model (weights, target, optimizer state) as `ckpt-<step>.keras`.

    The file is written under a temporary name and renamed into place (atomic on POSIX), so a
    crash or a failed write (disk full) never leaves a broken newest checkpoint. Keeps the
    `keep` newest; older ones are removed only once the new one is in place.

    Args:
        model: a compiled `BYOL` model.
        model_dir: the run's folder.
        step: the optimiser step the checkpoint holds.
        keep: how many checkpoints to keep (at least 1).

    Returns:
        The checkpoint's path.

    Raises:
        WriteError: naming the checkpoint and the operating system's reason; the half-written
            file is removed and the checkpoints already written are left as they were.
    """
    folder = checkpoint_dir(model_dir)
    path = os.path.join(folder, f"ckpt-{int(step):08d}.keras")
    tmp = os.path.join(folder, f".ckpt-{int(step):08d}.tmp.keras")
    with run_dir.writing("write checkpoint", path):
        try:
            os.makedirs(folder, exist_ok=True)
            model.save(tmp)
            with open(tmp, "rb+") as handle:
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except OSError:
            with contextlib.suppress(OSError):
                os.remove(tmp)  # frees the space the half-written file took
            raise
    for _, old in list_checkpoints(model_dir)[: -max(int(keep), 1)]:
        with run_dir.writing("remove old checkpoint", old):
            os.remove(old)
    for name in os.listdir(folder):  # half-written files of saves a crash interrupted
        if name.startswith(".ckpt-") and name.endswith(".tmp.keras"):
            with contextlib.suppress(OSError):  # best effort: list_checkpoints ignores them
                os.remove(os.path.join(folder, name))
    return path


def load_checkpoint(path, compile=True):
    """Loads a checkpoint written by `save_checkpoint` (Keras safe mode stays on).

    Raises:
        ValueError: if `path` is not a readable checkpoint, naming the file.
    """
    # The classes a checkpoint names must be registered with Keras before it is read.
    from byol_tf import model, optimizers, schedules  # noqa: F401

    try:
        return keras.models.load_model(path, compile=compile, safe_mode=True)
    except (OSError, ValueError, KeyError) as error:
        raise ValueError(f"Cannot read checkpoint {path}: {error}") from error
