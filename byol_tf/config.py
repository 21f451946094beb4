"""The absl flags of the train, evaluate and export programs, generated from their settings."""

import inspect
import os
import re
import sys
import typing

from absl import flags

from byol_tf.settings import TrainConfig, flag_fields

FLAGS = flags.FLAGS


def _help_texts(config_class):
    """`{name: text}` of the `Attributes:` section of a Google-style class docstring."""
    doc = inspect.cleandoc(config_class.__doc__ or "")  # None under python -OO: no help
    section = doc.partition("\nAttributes:\n")[2]
    entries = re.findall(r"^    (\w+): (.*(?:\n {8}.*)*)", section, flags=re.MULTILINE)
    return {name: " ".join(text.split()) for name, text in entries}


_DEFINERS = {str: "string", int: "integer", float: "float", bool: "bool", tuple: "list"}
_SHARED_DEFAULT = " (The default shown is train.py's; evaluate.py does not use it.)"


def define_flags(config_class=TrainConfig):
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


def from_flags(values=None, config_class=TrainConfig):
    """Builds a `config_class` from parsed absl flags.

    A flag left at its default gives the field's default. A flag that was set (command line,
    flagfile) gives its value, and its name goes into the config's `explicit`; `''` is None
    for an optional string, a list becomes a tuple, and `~` is expanded in paths.

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


def flags_text():
    """Every flag's value as flagfile lines (what a run folder's `flags.txt` records)."""
    return FLAGS.flags_into_string()


def list_in_help(config_class):
    """Lists the flags of `config_class` under `--help` (as absl's key flags of the program)."""
    for field in flag_fields(config_class):
        FLAGS.register_key_flag_for_module(sys.argv[0], FLAGS[field.name])


def flags_parser(program):
    """An `app.run(main, flags_parser=...)` parser that reports a bad flag in one line.

    absl's default prints "FATAL Flags parsing error" and a help hint on two lines; this exits
    with `<program>: error: <what is wrong>` (unknown flag, bad value, unreadable flagfile).
    The arguments it returns start with `program`, the name `main` gives in its messages.
    """

    def parse(argv):
        try:
            return [program, *FLAGS(argv)[1:]]
        except flags.Error as error:
            message = " ".join(str(error).removeprefix("ERROR:: ").split())
            raise SystemExit(f"{program}: error: {message}") from None

    return parse
