"""Internal: the programs' entry points, which load a program with Ctrl-C already handled.

A program's module (`byol_tf.cli.train`, ...) imports absl and the package's settings before it
can catch anything; Ctrl-C in that moment would end in Python's `KeyboardInterrupt` traceback.
The console scripts (`byol-train`, ...) and `train.py`, `evaluate.py` and
`python -m byol_tf.cli.export` start here instead, where only the standard library is loaded, and
end such an interrupt with the programs' one line and status 130 (`interrupted`, which the
programs use for every Ctrl-C they do not turn into a checkpoint).
"""

import contextlib
import importlib
import os
import signal
import sys
from typing import NoReturn


def start(name, program) -> NoReturn:
    """Imports `byol_tf.cli.<name>` and runs it as `program`; exits with its status.

    Args:
        name: the program's module in `byol_tf.cli` (`"train"`, `"evaluate"`, ...).
        program: the name of the program in its messages (`"train.py"`, `"byol-train"`, ...).
    """
    end_on_sigterm(program)
    try:
        module = importlib.import_module(f"byol_tf.cli.{name}")
    except KeyboardInterrupt:
        interrupted([program])
    module.run(program)


def interrupted(argv, advice="") -> NoReturn:
    """Exits with status 130 (128 + SIGINT) and one line on stderr, after Ctrl-C.

    Ctrl-C is ignored from here on, so that a second one cannot interrupt the exit in turn.

    Args:
        argv: the program's arguments (`argv[0]` names it).
        advice: what to do next, appended to the line (`"; run the same command again"`).
    """
    with contextlib.suppress(ValueError):  # signal.signal works in the main thread only
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    sys.unraisablehook = ending_quietly
    print(f"{os.path.basename(argv[0])}: interrupted (Ctrl-C){advice}.", file=sys.stderr)
    raise SystemExit(128 + signal.SIGINT)


def ending_quietly(unraisable) -> None:
    """`sys.unraisablehook` once the program ends at the user's request (Ctrl-C, SIGTERM): the
    signal may have cut an object's `__init__` short (a `zipfile.ZipFile` opening the demo set,
    say), and its `__del__` then fails as it is collected. Python would print that as
    "Exception ignored in ..." with a traceback after the program's one line; it says nothing
    about the run, so it is dropped."""


def end_on_sigterm(program) -> None:
    """Makes SIGTERM end the program with one line and status 143 (128 + SIGTERM), at any moment.

    The handler raises `SystemExit` in the main thread, so that what is being done unwinds as
    after any error: the run folder's lock is released, a half-written checkpoint removed.
    While training, `byol_tf.training.callbacks.GracefulStop` takes SIGTERM over to checkpoint
    first. SIGTERM is ignored once the first one is handled, so that a second cannot interrupt
    the exit.

    Args:
        program: the name of the program in its line (`"train.py"`, `"byol-train"`, ...).
    """

    def terminate(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        sys.unraisablehook = ending_quietly
        print(f"{program}: terminated (SIGTERM).", file=sys.stderr)
        raise SystemExit(128 + signal.SIGTERM)

    with contextlib.suppress(ValueError):  # signal.signal works in the main thread only
        signal.signal(signal.SIGTERM, terminate)


def train() -> NoReturn:
    """The `byol-train` console script."""
    start("train", "byol-train")


def evaluate() -> NoReturn:
    """The `byol-evaluate` console script."""
    start("evaluate", "byol-evaluate")


def export() -> NoReturn:
    """The `byol-export` console script."""
    start("export", "byol-export")


def import_official() -> NoReturn:
    """The `byol-import` console script."""
    start("import_official", "byol-import")
