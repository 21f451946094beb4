"""Internal: the programs' entry points, which load a program with Ctrl-C already handled.

A program's module (`byol_tf.cli.train`, ...) imports absl and the package's settings before it
can catch anything; Ctrl-C in that moment would end in Python's `KeyboardInterrupt` traceback.
The console scripts (`byol-train`, ...) and `train.py`, `evaluate.py` and
`python -m byol_tf.export` start here instead, where only the standard library is loaded, and
end such an interrupt with the programs' one line and status 130 (see `byol_tf.cli.interrupted`).
"""

import importlib
import signal
import sys


def start(name, program):
    """Imports `byol_tf.cli.<name>` and runs it as `program`; exits with its status.

    Args:
        name: the program's module in `byol_tf.cli` (`"train"`, `"evaluate"`, ...).
        program: the name of the program in its messages (`"train.py"`, `"byol-train"`, ...).
    """
    try:
        module = importlib.import_module(f"byol_tf.cli.{name}")
    except KeyboardInterrupt:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C cannot cut the line short
        print(f"{program}: interrupted (Ctrl-C).", file=sys.stderr)
        raise SystemExit(128 + signal.SIGINT) from None
    module.run(program)


def train():
    """The `byol-train` console script."""
    start("train", "byol-train")


def evaluate():
    """The `byol-evaluate` console script."""
    start("evaluate", "byol-evaluate")


def export():
    """The `byol-export` console script."""
    start("export", "byol-export")


def import_official():
    """The `byol-import` console script."""
    start("import_official", "byol-import")
