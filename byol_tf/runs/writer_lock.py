"""Internal: one writer per run folder: the lock file `model_dir/run.lock`, taken before anything is
written there and released on every way out."""

import contextlib
import datetime
import json
import os
import signal
import socket
import time

LOCK = "run.lock"

_held = {}  # the locks this process holds: {absolute model_dir: the record in its lock file}


def lock_model_dir(model_dir, log=print) -> None:
    """Makes this process the only writer of `model_dir` until `unlock_model_dir`.

    The lock is the file `model_dir/run.lock`, created atomically (`os.open` with
    `O_CREAT | O_EXCL`, which local and network file systems honour alike, where `flock` is not
    always shared between the hosts of an NFS mount) and holding its holder's pid, host and
    start time as JSON. A lock whose process is gone (same host, `os.kill(pid, 0)` finds no
    such process: a run killed with `kill -9` or a crashed machine) is taken over with a
    one-line note through `log`. A lock of another host cannot be checked and counts as held.

    Raises:
        ValueError: one line naming the folder and the holder (pid, host, start time), or why
            the lock cannot be written.
    """
    path = os.path.join(model_dir, LOCK)
    record = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
    }
    taken = False
    try:
        with _ctrl_c_held_back():  # a lock file is created whole and registered, or not at all
            _acquire(path, record, model_dir, log)
            _held[os.path.abspath(model_dir)], taken = record, True
    except BaseException:  # Ctrl-C, raised once the block ends: leave no lock behind
        if taken:
            unlock_model_dir(model_dir)
        raise


def _acquire(path, record, model_dir, log):
    """Creates the lock file `path` holding `record`, taking over a stale one (see above)."""
    for _ in range(5):  # each retry follows a lock that vanished or was taken over meanwhile
        try:
            _create_lock(path, record)
        except FileExistsError:
            holder = _read_lock(path, model_dir)
            if holder is None:
                continue
            if _running(holder):
                raise ValueError(
                    f"--model_dir={model_dir} is in use by another training process "
                    f"({_describe(holder)}); wait for it to end or pass another --model_dir "
                    f"(if that process is gone, delete {path})."
                ) from None
            _take_over(path, holder)
            log(f"Note: taking over {path} from a process that is gone ({_describe(holder)}).")
            continue
        except OSError as error:
            raise ValueError(
                f"--model_dir={model_dir} is not writable: {error.strerror or error}."
            ) from None
        return
    raise ValueError(
        f"--model_dir={model_dir}: cannot take its lock {path}; other processes keep taking it."
    )


@contextlib.contextmanager
def _ctrl_c_held_back():
    """Holds Ctrl-C (SIGINT) and SIGTERM back until the block ends, then acts on them as they
    would have.

    Python runs signal handlers in the main thread only; elsewhere this does nothing.
    """
    received, previous = [], {}
    try:
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, lambda *args: received.append(args))
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        for signum, frame in received:
            handler = previous[signum]
            if callable(handler):  # Python's default for SIGINT raises KeyboardInterrupt
                handler(signum, frame)
            elif handler == signal.SIG_DFL and signum == signal.SIGINT:
                raise KeyboardInterrupt
            elif handler == signal.SIG_DFL:
                signal.raise_signal(signum)  # ends the process, as it would have


def unlock_model_dir(model_dir) -> None:
    """Releases the lock `lock_model_dir` took (nothing if this process holds none there).

    The file is removed only while it still holds this process's record.
    """
    path = os.path.join(model_dir, LOCK)
    with _ctrl_c_held_back(), contextlib.suppress(OSError, ValueError):
        record = _held.pop(os.path.abspath(model_dir), None)
        if record is not None and _read_lock(path, model_dir, tries=1) == record:
            os.remove(path)


def _create_lock(path, record):
    """Creates `path` holding `record`; raises `FileExistsError` if it exists."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        os.write(descriptor, json.dumps(record).encode())
        os.fsync(descriptor)
    except OSError:
        os.close(descriptor)
        os.remove(path)
        raise
    os.close(descriptor)


def _read_lock(path, model_dir, tries=20):
    """The record in the lock file `path`, or None once it is gone.

    An empty or partial record is read again (its creator may be writing it) `tries` times.

    Raises:
        ValueError: if it stays unreadable, naming the file.
    """
    for attempt in range(tries):
        try:
            with open(path) as handle:
                record = json.load(handle)
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            record = None
        if isinstance(record, dict) and {"pid", "host", "started"} <= set(record):
            return record
        if attempt + 1 < tries:
            time.sleep(0.05)
    raise ValueError(
        f"--model_dir={model_dir} is locked by {path}, which names no process (damaged); "
        "delete it if no training process uses the folder."
    )


def _running(holder):
    """Whether the lock `holder`'s process may still run (always, for another host's)."""
    if holder["host"] != socket.gethostname():
        return True
    try:
        os.kill(int(holder["pid"]), 0)  # signal 0: only checks that the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    except (OverflowError, ValueError):  # not a pid
        return False
    return True


def _take_over(path, holder):
    """Removes the stale lock `path` of `holder`, unless another process took it over first.

    It is renamed to a name of this process's own and read back: when two processes take
    over the same stale lock at once, the second may have moved the first one's new lock,
    which it then puts back (a hard link never replaces a file another process created since).
    """
    claim = f"{path}.{socket.gethostname()}.{os.getpid()}"
    try:
        os.replace(path, claim)
    except FileNotFoundError:
        return
    try:
        with open(claim) as handle:
            moved = json.load(handle)
    except (OSError, ValueError):
        moved = None
    try:
        if moved != holder:
            with contextlib.suppress(FileExistsError):
                os.link(claim, path)
    finally:
        with contextlib.suppress(OSError):
            os.remove(claim)


def _describe(holder):
    return f"pid {holder['pid']} on {holder['host']}, started {holder['started']}"
