"""Atomic, self-contained checkpoints of a BYOL run (`.keras` files in `model_dir/checkpoints`)."""

import contextlib
import json
import os
import re
import warnings
import zipfile

import keras

from byol_tf.runs import run_folder

_NAME = re.compile(r"^ckpt-(\d+)\.keras$")


def checkpoint_dir(model_dir) -> str:
    """The folder that holds a run's checkpoints."""
    return os.path.join(model_dir, run_folder.CHECKPOINTS)


def list_checkpoints(model_dir) -> list[tuple[int, str]]:
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


def latest_checkpoint(model_dir) -> str | None:
    """Path of the newest finished checkpoint in `model_dir`, or `None`."""
    found = list_checkpoints(model_dir)
    return found[-1][1] if found else None


def save_checkpoint(model, model_dir, step, keep=3) -> str:
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
    with run_folder.writing("write checkpoint", path):
        try:
            os.makedirs(folder, exist_ok=True)
            model.save(tmp)
            with open(tmp, "rb+") as handle:
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:  # a failed write, or a second Ctrl-C (KeyboardInterrupt) in it
            with contextlib.suppress(OSError):
                os.remove(tmp)  # frees the space the half-written file took
            raise
    for _, old in list_checkpoints(model_dir)[: -max(int(keep), 1)]:
        with run_folder.writing("remove old checkpoint", old):
            os.remove(old)
    for name in os.listdir(folder):  # half-written files of saves a crash interrupted
        if name.startswith(".ckpt-") and name.endswith(".tmp.keras"):
            with contextlib.suppress(OSError):  # best effort: list_checkpoints ignores them
                os.remove(os.path.join(folder, name))
    return path


# The members of a `.keras` file that `save_checkpoint` writes.
_MEMBERS = ("config.json", "model.weights.h5")


def damage(path) -> str | None:
    """Why the checkpoint `path` cannot be read (one line), or None when it looks whole.

    Checks the zip container and the CRC of each member (a truncated copy, a text file with a
    checkpoint's name, a flipped byte), not that the weights fit a model.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            missing = [name for name in _MEMBERS if name not in archive.namelist()]
            broken = archive.testzip()
    except zipfile.BadZipFile as error:
        return f"truncated, or not a .keras (zip) file ({error})"
    except (OSError, EOFError, RuntimeError, ValueError) as error:
        return f"unreadable ({run_folder.reason(error)})"
    if missing:
        return f"a zip file without {', '.join(missing)}"
    if broken:
        return f"its member {broken} is corrupt"
    return None


def latest_readable(model_dir, log=print) -> str | None:
    """Path of the newest checkpoint in `model_dir` that is not damaged, or None if it has none.

    Each newer damaged one is named through `log`: `Skipping damaged checkpoint X: reason.`

    Raises:
        ValueError: one line, when every checkpoint in `model_dir` is damaged.
    """
    found = list_checkpoints(model_dir)
    for _, path in reversed(found):
        why = damage(path)
        if why is None:
            return path
        log(f"Skipping damaged checkpoint {path}: {why}.")
    if found:
        raise ValueError(
            f"Every checkpoint in {checkpoint_dir(model_dir)} is damaged ({len(found)}, listed "
            "above); restore one from a copy, or move them away to start the run again."
        )
    return None


def source_checkpoint(source, flag, log=print) -> str:
    """The checkpoint a flag names: a run folder's newest readable one, or `source` itself.

    Raises:
        ValueError: one line naming `flag`, when a run folder holds no checkpoint.
    """
    if not os.path.isdir(source):
        return source
    path = latest_readable(source, log)
    if path is None:
        raise ValueError(f"{flag}={source}: no checkpoint in {source}/checkpoints")
    return path


def saved_class(path) -> str | None:
    """The class of the model a `.keras` file holds, by its registered name (`byol_tf>BYOL`).

    Reads only the file's `config.json`; `damage(path)` should be None.

    Returns:
        The name, or None when `config.json` names none.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            config = json.loads(archive.read("config.json"))
    except (OSError, ValueError, KeyError, zipfile.BadZipFile):
        return None
    if not isinstance(config, dict):
        return None
    name = config.get("registered_name") or config.get("class_name")
    return name if isinstance(name, str) else None


def check_is_checkpoint(path, flag) -> None:
    """Refuses a `.keras` file that is damaged or holds another model than a `BYOL` run's.

    Raises:
        ValueError: one line naming `flag`, the file and what it holds.
    """
    why = damage(path)
    if why:
        raise ValueError(f"{flag}={path} is damaged: {why}.")
    name = saved_class(path)
    if name not in ("byol_tf>BYOL", "BYOL"):
        raise ValueError(
            f"{flag}={path} holds {'a ' + name if name else 'no model'}, not a byol_tf BYOL "
            "checkpoint (a run's checkpoints/ckpt-<step>.keras, as train.py writes); pass one "
            "of those, a run folder or an official .pkl checkpoint."
        )


def load_checkpoint(path, compile=True) -> keras.Model:
    """Loads a checkpoint written by `save_checkpoint` (Keras safe mode stays on).

    Raises:
        ValueError: if `path` is missing, damaged or not a checkpoint, naming the file.
    """
    # The classes a checkpoint names must be registered with Keras before it is read.
    from byol_tf.core import model, optimizers, schedules  # noqa: F401

    if not os.path.exists(path):
        raise ValueError(f"Checkpoint {path} not found.")
    why = damage(path)
    if why:
        raise ValueError(f"Cannot read checkpoint {path}: it is damaged: {why}.")
    try:
        return keras.models.load_model(path, compile=compile, safe_mode=True)
    except (OSError, ValueError, KeyError) as error:
        raise ValueError(f"Cannot read checkpoint {path}: {_first_line(error)}") from error


def restore(model, path) -> None:
    """Loads the weights and optimiser state of checkpoint `path` into `model` to resume.

    Raises:
        ValueError: one line naming `path`: damaged, or its weights do not fit `model` (a
            checkpoint of another architecture: Keras's own report, a line per variable, is
            not shown).
    """
    why = damage(path)
    if why:
        raise ValueError(f"Cannot resume from {path}: it is damaged: {why}.")
    try:
        with warnings.catch_warnings():
            # Keras warns once per nested layer it cannot match ("Skipping nested container").
            warnings.simplefilter("ignore")
            model.load_weights(path)
    except (ValueError, KeyError, OSError):
        raise ValueError(
            f"Cannot resume from {path}: its weights do not fit the model these flags build; it "
            "was trained with another --encoder, --width_multiplier, --cifar_stem, "
            "--projection_dim, --hidden_dim, --image_size or --optimizer, or on a --dataset of "
            "another number of classes (its online probe's): pass the original flags and "
            "--dataset, or another --model_dir. The checkpoint was not modified."
        ) from None


def _first_line(error):
    """The first line of `error`'s message (Keras's can list every variable on lines of their
    own)."""
    return (str(error).strip().splitlines() or [type(error).__name__])[0]
