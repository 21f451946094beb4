"""Internal: the absl flags of the train, evaluate and export programs, generated from their
settings."""

import inspect
import os
import re
import sys
import typing
from collections.abc import Callable

from absl import flags

from byol_tf.settings.fields import flag_fields
from byol_tf.settings.train_config import TrainConfig

FLAGS = flags.FLAGS


def _help_texts(config_class):
    """`{name: text}` of the `Attributes:` section of a Google-style class docstring."""
    doc = inspect.cleandoc(config_class.__doc__ or "")  # None under python -OO: no help
    section = doc.partition("\nAttributes:\n")[2]
    entries = re.findall(r"^    (\w+): (.*(?:\n {8}.*)*)", section, flags=re.MULTILINE)
    return {name: " ".join(text.split()) for name, text in entries}


_DEFINERS = {str: "string", int: "integer", float: "float", bool: "bool", tuple: "list"}
_SHARED_DEFAULT = " (The default shown is train.py's; evaluate.py does not use it.)"


def define_flags(config_class=TrainConfig) -> None:
    """Defines an absl flag for each field of `config_class` (idempotent).

    A field's type chooses the flag: `str` a string (an enum with `choices`), `int` an
    integer, `float` a float, `bool` a boolean, `tuple` a comma-separated list. A name that is
    already a flag is left as it is: train.py and evaluate.py share names (--model_dir,
    --dataset, ...), and a test process imports both.
    """
    help_texts = _help_texts(config_class)
    for field in flag_fields(config_class):
        if field.name in FLAGS:
            continue
        meta = field.metadata
        default = meta.get("flag_default", field.default)
        help_text = help_texts.get(field.name, "") + (
            _SHARED_DEFAULT if default != field.default else ""
        )
        kwargs = dict(module_name=f"byol_tf {meta['group']}", required=bool(meta.get("required")))
        if isinstance(default, tuple):
            default = list(default)
        if meta["choices"]:
            flags.DEFINE_enum(field.name, default, list(meta["choices"]), help_text, **kwargs)
        else:
            value_type = next(
                t for t in typing.get_args(field.type) or (field.type,) if t is not type(None)
            )
            define = getattr(flags, f"DEFINE_{_DEFINERS[value_type]}")
            define(field.name, default, help_text, **kwargs)


def from_flags(values=None, config_class=TrainConfig) -> typing.Any:
    """Builds a `config_class` from parsed absl flags.

    A flag left at its default gives the field's default. A flag that was set (command line,
    flagfile) gives its value, and its name goes into the config's `explicit`; `''` is None
    for an optional string, a list becomes a tuple, and `~` is expanded in paths.

    Returns:
        An instance of `config_class`.

    Raises:
        ValueError: naming the first invalid flag.
    """
    values = values or FLAGS
    kwargs, explicit = {}, []
    for field in flag_fields(config_class):
        flag = values[field.name]
        if flag.using_default_value:
            kwargs[field.name] = field.default
            continue
        explicit.append(field.name)
        kwargs[field.name] = _field_value(field, flag.value)
    return config_class(**kwargs, explicit=tuple(explicit))


def _field_value(field, value):
    """A set flag's value as the field holds it."""
    if value == "" and type(None) in typing.get_args(field.type):
        return None
    if isinstance(value, list):
        return tuple(value)
    if value and field.metadata.get("path"):
        return os.path.expanduser(value)
    return value


def flags_text() -> str:
    """Every flag's value as flagfile lines (what a run folder's `flags.txt` records)."""
    return FLAGS.flags_into_string()


def list_in_help(config_class) -> None:
    """Lists the flags of `config_class` under `--help` (as absl's key flags of the program)."""
    for field in flag_fields(config_class):
        FLAGS.register_key_flag_for_module(sys.argv[0], FLAGS[field.name])


def flags_parser(program) -> Callable[[list[str]], list[str]]:
    """An `app.run(main, flags_parser=...)` parser that reports a bad flag in one line.

    absl's default prints "FATAL Flags parsing error" and a help hint on two lines; this exits
    with `<program>: error: <what is wrong>` (unknown flag, bad value, unreadable flagfile).
    The arguments it returns start with `program`, the name `main` gives in its messages.
    """

    def parse(argv):
        try:
            check_flagfiles(argv)
        except ValueError as error:
            raise SystemExit(f"{program}: error: {error}") from None
        try:
            return [program, *FLAGS(argv)[1:]]
        except flags.Error as error:
            message = " ".join(str(error).removeprefix("ERROR:: ").split())
            raise SystemExit(f"{program}: error: {message}") from None
        except SystemExit as done:
            # absl exits 1 after printing the help it was asked for; asking is no error.
            raise SystemExit(0 if _asks_for_help(argv) else done.code) from None

    return parse


_FLAGFILE = ("--flagfile=", "-flagfile=")
_HELP = {"help", "helpshort", "helpfull", "helpxml", "?"}


def _asks_for_help(argv):
    """Whether `argv` holds one of absl's help flags (`--help`, `-?`, `--helpfull`, ...)."""
    return any(arg.lstrip("-").split("=")[0] in _HELP for arg in argv[1:] if arg.startswith("-"))


def check_flagfiles(argv) -> None:
    """Refuses a flagfile that includes itself (directly or through others), or holds a line
    that is not a flag (absl only warns about the first and skips the file, and takes the
    second for an argument). Flagfiles that cannot be opened are left to absl to report.

    Args:
        argv: the command line, the program first.

    Raises:
        ValueError: naming the flagfile (and the line).
    """
    args = iter(argv[1:])
    for arg in args:
        if arg in ("--flagfile", "-flagfile"):
            arg = f"--flagfile={next(args, '')}"
        if arg.startswith(_FLAGFILE):
            _check_flagfile(_flagfile_name(arg), [])


def _flagfile_name(directive):
    return os.path.expanduser(directive.partition("=")[2].strip())


def _check_flagfile(name, parents):
    """Checks flagfile `name`, included through `parents` (`[(realpath, name)]`), recursively."""
    real = os.path.realpath(name)
    seen = [path for path, _ in parents]
    if real in seen:
        chain = " -> ".join([n for _, n in parents[seen.index(real) :]] + [name])
        raise ValueError(f"--flagfile={name} includes itself: {chain}")
    try:
        with open(name) as handle:
            lines = handle.readlines()
    except OSError:
        return
    for number, line in enumerate(lines, 1):
        text = line.strip()
        if not text or text.startswith(("#", "//")):
            continue
        if text.startswith(_FLAGFILE):
            _check_flagfile(_flagfile_name(text), [*parents, (real, name)])
        elif not text.startswith("-"):
            raise ValueError(
                f"--flagfile={name} line {number}: {text!r} is not a flag (flags start with "
                f"--, e.g. --{text})"
            )
