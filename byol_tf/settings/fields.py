"""Internal: how a setting is declared and checked: its `option` field, value checks, groups and
resume class.

`byol_tf.settings.train_config` and `byol_tf.settings.program_configs` declare every setting with
`option`; `byol_tf.cli.flag_definitions` turns the fields into absl flags.
"""

import dataclasses
from typing import Any

# Value checks, `(what the value must be, test)`; None (an unset optional value) passes.
POSITIVE_INT = ("a positive int", lambda value: value >= 1)
# Finite: an infinite rate, multiplier or decay is never meant (`inf > 0` would pass).
POSITIVE = ("positive and finite", lambda value: 0 < value < float("inf"))
NON_NEGATIVE = (">= 0 and finite", lambda value: 0 <= value < float("inf"))
NON_NEGATIVE_INT = ("an int >= 0", lambda value: value >= 0)
# The largest image side: 16x the paper's 224 px. One float32 view of 4096² px is 192 MiB, a
# batch of 64 pairs 24 GiB before the encoder runs; larger sides end in MemoryError mid-run.
MAX_IMAGE_SIZE = 4096
IMAGE_SIZE = (
    f"a positive int <= {MAX_IMAGE_SIZE}",
    lambda value: 1 <= value <= MAX_IMAGE_SIZE,
)
SEED = ("an int in [0, 2**32 - 1]", lambda value: 0 <= value < 2**32)  # NumPy's seed range
UNIT_INTERVAL = ("in [0, 1]", lambda value: 0 <= value <= 1)
FRACTION = ("in (0, 1]", lambda value: 0 < value <= 1)
BELOW_ONE = ("in [0, 1)", lambda value: 0 <= value < 1)

# The groups of the settings (those of the official BYOL configs, then one per program).
DATA, MODEL, OPTIMISATION, RUN = "data", "model", "optimisation", "run"
EVALUATION, EXPORT, IMPORT = "evaluation", "export", "import"


# How a resumed run treats a setting whose value differs from the run's (`run_dir` derives its
# checks from these): the network's or optimiser's variables (refused), the schedule and the
# data stream (refused unless --allow_schedule_change, which records the change), or free.
ARCHITECTURE, SCHEDULE, DATA_STREAM, FREE = "architecture", "schedule", "data stream", "free"
RESUME_CLASSES = (ARCHITECTURE, SCHEDULE, DATA_STREAM, FREE)


def option(group, default, choices=None, valid=None, **extra) -> Any:
    """A settings field that is a flag of the same name.

    The flag's help is the field's entry in the `Attributes:` section of its class docstring.

    Args:
        group: the heading its flag is listed under by `--helpfull`.
        default: the field's default, also its flag's unless `flag_default` is given.
        choices: the allowed values (one of the tuples above); the flag is then an enum.
        valid: a check such as `POSITIVE_INT`, applied when the settings are built.
        **extra: `flag_default=` the default of a flag another program shares (shown in
            help), `path=True` to expand `~`, `required=True` for a flag that must be set,
            `resume=` the field's resume class (one of `RESUME_CLASSES`; every setting of
            train.py declares one).

    Returns:
        A `dataclasses.Field`, typed `Any` as `dataclasses.field` is, so that it can stand as
        the default of a field of any type.
    """
    metadata = dict(group=group, choices=choices, valid=valid, **extra)
    return dataclasses.field(default=default, metadata=metadata)


def explicit_field() -> Any:
    """The `explicit` field: the names of the fields set by flags. Not a flag; not compared.

    Returns:
        A `dataclasses.Field`, typed `Any` as in `option`.
    """
    return dataclasses.field(default=(), compare=False, repr=False)


def floats(name, values) -> tuple[float, ...]:
    """`values` (strings of a list flag) as a tuple of finite floats."""
    try:
        numbers = tuple(float(v) for v in values)
    except ValueError:
        numbers = (float("nan"),)
    check(all(abs(v) < float("inf") for v in numbers), name, ",".join(map(str, values)), "numbers")
    return numbers


def check(ok, name, value, expected) -> None:
    if not ok:
        raise ValueError(f"--{name} must be {expected}. Received: --{name}={value}")


def check_fields(settings) -> None:
    """Checks each field against its `choices`, `valid` and `required`; the first failure raises."""
    for field in flag_fields(settings):
        value, meta = getattr(settings, field.name), field.metadata
        if value is None:
            check(not meta.get("required"), field.name, value, "set")
        elif meta["choices"]:
            check(
                value in meta["choices"], field.name, value, f"one of {', '.join(meta['choices'])}"
            )
        elif meta["valid"]:
            check(meta["valid"][1](value), field.name, value, meta["valid"][0])


def flag_fields(settings) -> list[dataclasses.Field]:
    """The fields of a settings class (or instance) that are flags."""
    return [field for field in dataclasses.fields(settings) if "group" in field.metadata]
