"""A clean console for the programs: TensorFlow's native start-up and INFO lines filtered out."""

import atexit
import logging
import os
import re
import sys
import threading

# What TensorFlow and XLA's C++ code print on their own that says nothing to a user: INFO and
# WARNING lines in TensorFlow's or absl's format, absl's notice that logging is not initialised,
# the failed CUDA probe of a machine without an NVIDIA driver, and TensorFlow 2.17's harmless
# "Unable to register cuFFT/cuDNN/cuBLAS factory" lines at import (logged as errors, on every
# machine). Other errors and fatal lines pass.
_NATIVE_NOISE = re.compile(
    rb"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: [IW] "  # TensorFlow: "2026-01-01 10:00:00.1: I ..."
    rb"|\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: E \S+\] Unable to register cu\w+ factory: "
    # absl: "I0000 00:00:17.1  123 f.cc:9] ", except the lines byol_tf logs itself (skipped files)
    rb"|[IW]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ \S+:\d+\] (?!byol_tf: )"
    rb"|WARNING: All log messages before absl::InitializeLog\(\) is called"
    rb"|To enable the following instructions: .* rebuild TensorFlow"
    rb"|.*failed call to cuInit"
    # XLA's alarm when a compilation takes minutes (a large network on a CPU): an error line
    # naming slow_operation_alarm.cc, then the message between two lines of 32 asterisks.
    rb"|.*slow_operation_alarm\.cc:\d+\]"
    rb"|\*{32}$"
    rb"|(\[Compiling module [^\]]*\] ?)?Very slow compile\? If you want to file a bug"
    rb"|\[Compiling module [^\]]*\]$)"
)


_TFDS = f"{os.sep}tensorflow_datasets{os.sep}"


def quiet_tensorflow() -> None:
    """Hides TensorFlow's C++ INFO and WARNING messages unless `TF_CPP_MIN_LOG_LEVEL` is set.

    Call it before TensorFlow is imported: TensorFlow reads the level once, at import.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _pump(source, target):
    """Copies lines from `source` to `target` (file descriptors), dropping native noise."""
    pending = b""
    while True:
        chunk = os.read(source, 1 << 16)
        if not chunk:
            break
        *lines, pending = (pending + chunk).split(b"\n")
        kept = [line + b"\n" for line in lines if not _NATIVE_NOISE.match(line)]
        if kept:
            os.write(target, b"".join(kept))
    if pending and not _NATIVE_NOISE.match(pending):
        os.write(target, pending)
    os.close(source)


def _no_tfds_info(record):
    """False for the INFO records of tensorflow-datasets (absl logs them all as "absl")."""
    return record.levelno >= logging.WARNING or _TFDS not in record.pathname


def filter_native_logs() -> None:
    """Routes this process's stderr (file descriptor 2) through a filter of native noise.

    TensorFlow's C++ code writes some lines whatever `TF_CPP_MIN_LOG_LEVEL` says (XLA's
    "Compiled cluster using XLA!" and "Very slow compile?", absl's initialisation notice, the
    CUDA probe on a machine without a GPU). Python's own output, errors and tracebacks pass
    unchanged; tensorflow-datasets' INFO records are not logged. The original
    stderr is restored at exit.
    """
    if os.environ.get("BYOL_TF_NATIVE_LOGS") == "1":  # to see everything while debugging
        return
    # tensorflow-datasets logs INFO lines while it prepares and reads a data set; between its
    # progress bars they do not start a line, so they are dropped at their source.
    logging.getLogger("absl").addFilter(_no_tfds_info)
    sys.stderr.flush()
    original = os.dup(2)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)
    pump = threading.Thread(target=_pump, args=(read_end, original), daemon=True)
    pump.start()

    def restore():
        sys.stderr.flush()
        os.dup2(original, 2)  # the pipe's last write end closes: the pump drains and ends
        pump.join(timeout=5)

    atexit.register(restore)
