"""Internal: the files of a training run's folder (`model_dir`) besides its checkpoints, and its
checks (those of `run_config.json`'s content are `byol_tf.runs.config_file`'s)."""

import contextlib
import datetime
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from typing import Any

from byol_tf.runs.config_file import (  # noqa: F401  (byol_tf.runs.run_folder.<name>, as before)
    ADDED_LATER,
    ARCHITECTURE,
    SCHEDULE,
    check_content,
    check_resume,
    resume_settings,
    schedule_changes,
)
from byol_tf.runs.writer_lock import lock_model_dir, unlock_model_dir

RUN_CONFIG = "run_config.json"
SUMMARY = "summary.json"
SCHEDULE_CHANGES = "schedule_changes.json"
FLAGS_FILE = "flags.txt"
FLAGS_HISTORY = "flags_history.txt"
CHECKPOINTS, TENSORBOARD, EXPORT = "checkpoints", "tensorboard", "export"
# The folders a run writes in model_dir (byol_tf.runs.checkpoints, the TensorBoard logs).
SUBFOLDERS = (CHECKPOINTS, TENSORBOARD)


def tensorboard_dir(folder: str) -> str:
    """The TensorBoard logs of the run whose files go to `folder` (`write_dir`'s result)."""
    return os.path.join(folder, TENSORBOARD)


def export_dir_of(folder: str, model_dir: str, export_dir: str | None) -> str | None:
    """Where this process exports at the end of a run: `--export_dir` (None: no export) for the
    chief, whose `folder` is `model_dir`; another worker's own folder's `export/` else."""
    if folder == model_dir:
        return export_dir
    return os.path.join(folder, EXPORT) if export_dir else None


def prepare_model_dir(model_dir) -> None:
    """Creates `model_dir` and checks that it is a writable folder (before any training).

    Raises:
        ValueError: if it is a file or cannot be written, naming `--model_dir`.
    """
    prepare_folder(model_dir, "--model_dir")


def check_schedule(changes, model_dir, allowed, step, folder) -> str | None:
    """Refuses a resume that changes the schedule, unless `allowed`; then records the change.

    Args:
        changes: from `schedule_changes`.
        model_dir: the run folder named in the message.
        allowed: `--allow_schedule_change`.
        step: the optimiser step the run resumes from.
        folder: where `schedule_changes.json` is appended to (the process's write folder).

    Returns:
        One line describing the recorded change, or None when nothing changed.

    Raises:
        ValueError: one line listing each differing setting with its old and new value.
    """
    if not changes:
        return None
    listed = ", ".join(f"--{key}: {old} -> {new}" for key, (old, new) in sorted(changes.items()))
    if not allowed:
        raise ValueError(
            f"Resuming {model_dir} with other schedule settings than it was trained with would "
            f"make its learning rate, tau or data stream jump: {listed}. Rerun with the original "
            f"flags, or pass --allow_schedule_change to continue with the new ones (recorded in "
            f"{SCHEDULE_CHANGES}). The checkpoint was not modified."
        )
    path = os.path.join(folder, SCHEDULE_CHANGES)
    history = read_json(path) or []
    history.append({"step": step, "changes": {k: list(v) for k, v in sorted(changes.items())}})
    write_json(path, history)
    return f"Schedule changed at step {step} (--allow_schedule_change): {listed}."


def prepare_folder(path, flag) -> None:
    """Creates the output folder `path` and checks that it is writable (before any work).

    Raises:
        ValueError: if it is a file or cannot be created or written, naming `flag`.
    """
    _make_folder(path, flag)
    try:
        probe = os.path.join(path, ".write_test")
        with open(probe, "w") as handle:
            handle.write("ok")
        os.remove(probe)
    except OSError as error:
        raise ValueError(f"{flag}={path} is not writable: {error.strerror}.") from None


def _make_folder(path, flag):
    """Creates the folder `path` unless it exists; refuses a file, naming `flag`."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"{flag}={path} is a file; expected a folder.")
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as error:
        raise ValueError(f"{flag}={path} is not writable: {error.strerror}.") from None


def write_dir(model_dir, chief, log=print) -> str:
    """The folder this process writes to: `model_dir`, checked and locked, for the chief, else
    a new one.

    The chief takes the lock of `model_dir` (`lock_model_dir`, whose creation is also the write
    check) before anything is written there; `remove_write_dir` releases it. Non-chief workers
    of a multi-worker run execute the same saving code as the chief (saving may read
    distributed variables, which takes every worker), into a temporary folder that
    `remove_write_dir` deletes at the end.

    Raises:
        ValueError: one line: `model_dir` is a file, not writable, or in use by another
            training process.
    """
    if not chief:
        return tempfile.mkdtemp(prefix="byol_tf_worker_")
    _make_folder(model_dir, "--model_dir")
    for name in SUBFOLDERS:  # else refused only when training first writes there
        path = os.path.join(model_dir, name)
        if os.path.exists(path) and not os.path.isdir(path):
            raise ValueError(
                f"--model_dir={model_dir} holds a file {path} where the run's {name} folder "
                "goes; move it away or pass another --model_dir."
            )
    lock_model_dir(model_dir, log)
    return model_dir


def new_folders(path) -> list[str]:
    """`path` and those of its parents that do not exist yet, deepest first."""
    missing, path = [], os.path.abspath(path)
    while not os.path.lexists(path) and os.path.dirname(path) != path:
        missing.append(path)
        path = os.path.dirname(path)
    return missing


def remove_empty(folders) -> None:
    """Removes those of `folders` (from `new_folders`) that are empty once their own empty
    subfolders are: a run refused or stopped before it wrote anything leaves no folder of its
    own behind."""
    for folder in sorted(set(folders), key=len, reverse=True):  # subfolders first
        with contextlib.suppress(OSError):
            os.rmdir(folder)  # only an empty folder


def remove_write_dir(path, model_dir) -> None:
    """Deletes a non-chief worker's temporary folder (never `model_dir` itself), or releases
    the chief's lock of `model_dir`."""
    if os.path.abspath(path) != os.path.abspath(model_dir):
        shutil.rmtree(path, ignore_errors=True)
    else:
        unlock_model_dir(model_dir)


class WriteError(RuntimeError):
    """Writing an output failed after the checks (disk full, permission lost, ...).

    Its message is one line: what was being written, the path and the operating system's reason.
    """


def reason(error) -> str:
    """The operating system's reason for `error`, in one line (`No space left on device`).

    Takes an `OSError` or a TensorFlow file-system error (its `message`).
    """
    text = getattr(error, "strerror", None) or getattr(error, "message", None) or str(error)
    return str(text).strip().splitlines()[0] if str(text).strip() else type(error).__name__


@contextlib.contextmanager
def writing(what, path, errors=(OSError,)) -> Iterator[None]:
    """Turns an `errors` exception raised in the block into a one-line `WriteError`.

    Args:
        what: the action, as the message starts: `"write checkpoint"` gives
            `Cannot write checkpoint <path>: <reason>.`
        path: the file or folder the block writes.
        errors: the exception classes to convert (TensorFlow's writers raise
            `tf.errors.OpError`, not `OSError`).

    Raises:
        WriteError: from an exception of `errors`.
    """
    try:
        yield
    except errors as error:
        raise WriteError(f"Cannot {what} {path}: {reason(error)}.") from error


def _write_atomically(path, write):
    """Calls `write(handle)` on a temporary file, then renames it to `path` (atomic on POSIX).

    A failed write removes the temporary file and leaves `path` as it was.

    Raises:
        WriteError: naming `path` and the reason.
    """
    tmp = path + ".tmp"
    with writing("write", path):
        try:
            with open(tmp, "w") as handle:
                write(handle)
            os.replace(tmp, path)
        except OSError:
            with contextlib.suppress(OSError):
                os.remove(tmp)
            raise


def record_flags(folder, flags_text, explicit, step) -> None:
    """Writes an invocation's flags: `flags.txt` and a line of `flags_history.txt`.

    `flags.txt` becomes the invocation's effective flags (every flag, as a flagfile:
    `--flagfile=flags.txt` reruns it). `flags_history.txt` gets one tab-separated line per
    invocation: the optimiser step it started from, the local time, and its flags: for the
    first, `set:` the flags its command line or flagfiles set (the others had their defaults);
    for each later one, `changed:` the flags whose value differs from the invocation before.

    Args:
        folder: the run folder.
        flags_text: every flag's value as flagfile lines (`config.flags_text()`).
        explicit: the names of the flags the command line or a flagfile set.
        step: the optimiser step the invocation starts from.

    Raises:
        WriteError: naming the file and the reason.
    """
    flags_path, path = os.path.join(folder, FLAGS_FILE), os.path.join(folder, FLAGS_HISTORY)
    lines = flags_text.splitlines()
    with writing("read", flags_path):
        before = None
        if os.path.exists(path) and os.path.exists(flags_path):
            with open(flags_path) as handle:
                before = set(handle.read().splitlines())
    if before is None:
        names = set(explicit)
        flags = "set: " + " ".join(line for line in lines if _sets_one_of(line, names))
    else:
        flags = "changed: " + (" ".join(line for line in lines if line not in before) or "none")
    started = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    _write_atomically(flags_path, lambda handle: handle.write(flags_text))
    with writing("write", path):
        new = not os.path.exists(path)
        with open(path, "a") as handle:
            if new:
                handle.write(
                    "# step<TAB>start time<TAB>flags: each invocation of the training program on "
                    "this folder (set: the first one's flags; changed: what differs from the "
                    "invocation before). flags.txt holds the latest invocation's flags.\n"
                )
            handle.write(f"step {step}\t{started}\t{flags}\n")


def _sets_one_of(line, names):
    """Whether flagfile `line` (`--epochs=3`, `--deterministic`, `--nodeterministic`) sets
    one of the flags `names`."""
    name, has_value, _ = line.removeprefix("--").partition("=")
    return name in names or (not has_value and name.startswith("no") and name[2:] in names)


def write_json(path, content) -> None:
    """Writes `content` as JSON under a temporary name, then renames it into place (atomic).

    Raises:
        WriteError: naming `path` and the reason (the file, if any, is left as it was).
    """
    _write_atomically(path, lambda handle: json.dump(content, handle, indent=2, sort_keys=True))


def write_run_config(folder, run_config) -> None:
    """Writes `run_config.json`: the run's settings, data statistics and step counts."""
    write_json(os.path.join(folder, RUN_CONFIG), run_config)


def write_summary(folder, summary) -> None:
    """Writes `summary.json`: the results of a finished run."""
    write_json(os.path.join(folder, SUMMARY), summary)


def read_json(path) -> Any:
    """The content of a JSON file, or None when it does not exist.

    Raises:
        ValueError: one line naming the file, if it cannot be read or is not JSON.
    """
    if not os.path.exists(path):
        return None
    try:
        with open(path, "rb") as handle:
            return json.loads(handle.read())
    except OSError as error:
        raise ValueError(f"Cannot read {path}: {reason(error)}.") from None
    except ValueError as error:  # json.JSONDecodeError, UnicodeDecodeError
        raise ValueError(
            f"{path} is damaged (not JSON: {str(error).splitlines()[0]}); restore it, or "
            "delete it to go on without what it records."
        ) from None


def read_run_config(model_dir) -> dict[str, Any] | None:
    """The `run_config.json` the training program wrote in `model_dir`, or None.

    Raises:
        ValueError: one line naming the file, if it is not a JSON object holding the `REQUIRED`
            settings (damaged, or not written by this program), or one of its values has the
            wrong type or is out of range (naming the key).
    """
    path = os.path.join(model_dir, RUN_CONFIG)
    saved = read_json(path)
    if saved is None:
        return None
    check_content(saved, path)
    return saved


def resume_config(model_dir, log=print) -> dict[str, Any]:
    """The `run_config.json` of the run `model_dir` resumes, checked for what a resume compares.

    Every setting a resume compares (`ARCHITECTURE`, `SCHEDULE`) must be recorded: a missing
    one would let the resume change it unnoticed. A key of `ADDED_LATER` that a file of an
    earlier version lacks is read as its value there, with one note through `log`.

    Returns:
        The settings (missing `ADDED_LATER` keys filled in), or {} when there is no
        run_config.json (the resume then compares nothing but the checkpoint's weights).

    Raises:
        ValueError: one line naming the file and the missing keys (or the wrong value), or
            saying the folder holds an imported official checkpoint.
    """
    saved = read_run_config(model_dir)
    if saved is None:
        return {}
    return resume_settings(saved, os.path.join(model_dir, RUN_CONFIG), model_dir, log)


def read_summary(folder) -> Any:
    """The `summary.json` of a finished run in `folder`, or None."""
    return read_json(os.path.join(folder, SUMMARY))
