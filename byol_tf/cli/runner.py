"""What the train, evaluate and export programs share: absl's entry point and one-line errors."""

import os
import sys
from typing import NoReturn

from byol_tf.cli import console

console.quiet_tensorflow()  # before anything imports TensorFlow

from absl import app  # noqa: E402

from byol_tf.cli import flag_definitions  # noqa: E402
from byol_tf.cli.programs import interrupted  # noqa: E402


def run(main, program, config_class) -> NoReturn:
    """Parses the flags of `config_class` and runs `main`, as absl's `app.run` does.

    A bad flag exits with `<program>: error: <message>` (see `flag_definitions.flags_parser`);
    `--help` prints the docstring of `__main__` (for a console script, which has none, that of
    `main`'s module) and lists the flags of `config_class`.

    Args:
        main: the program's `main(argv)`; what it returns is the exit status.
        program: the name of the program in its messages (`train.py`, `byol-train`, ...).
        config_class: the settings class of the program (`settings.TrainConfig`, ...).
    """
    try:
        flag_definitions.list_in_help(config_class)
        console.filter_native_logs()
        script = sys.modules["__main__"]
        script.__doc__ = script.__doc__ or sys.modules[main.__module__].__doc__
        app.run(main, flags_parser=flag_definitions.flags_parser(program))
    except KeyboardInterrupt:  # Ctrl-C while TensorFlow loads, or in a program without its own
        interrupted([program])


def fail(argv, message) -> NoReturn:
    """Exits with `<program>: error: <message>` on stderr and status 1 (`argv[0]` names it)."""
    raise SystemExit(f"{os.path.basename(argv[0])}: error: {message}")


def check_no_arguments(argv) -> None:
    """Fails on arguments that are not flags."""
    if len(argv) > 1:
        fail(argv, f"Unexpected arguments: {' '.join(argv[1:])}")


def exit_if_unreadable_image(argv, error, advice="") -> None:
    """Fails naming the file if `error` is the input pipeline's on a corrupt image file."""
    from byol_tf.data import decoding

    path = decoding.unreadable_file(error)
    if path:
        fail(argv, f"Cannot decode image file {path}{advice}")
