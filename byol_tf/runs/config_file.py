"""Internal: what a run's `run_config.json` holds: its keys, the type and range of each value,
the keys later versions added, and what a resume compares.

`byol_tf.runs.run_folder` reads and writes the file; here its content is checked, as a dict.
"""

import json
from typing import Any

from byol_tf.settings import fields, train_config

# Keys every version of the training program wrote to run_config.json, and what evaluation and
# export read from it: a file without one of them is damaged (or not ours), and resuming from it
# would skip the checks it exists for.
REQUIRED = ("dataset", "image_size", "mean", "std")
# Settings that fix the network's or the optimiser's variables: a checkpoint cannot be resumed
# with other values. Each setting declares its class where it is defined
# (byol_tf.settings.train_config).
ARCHITECTURE = train_config.resumed_as(fields.ARCHITECTURE)
# Settings that shape the learning-rate and τ schedules, where the augmentation runs, and the
# data stream (data set, split, views, seed): resuming with other values would make them jump,
# so it takes --allow_schedule_change (and the change is recorded).
SCHEDULE = train_config.resumed_as(fields.SCHEDULE) + train_config.resumed_as(fields.DATA_STREAM)
# Keys run_config.json gained after its first version, each with the value a run written
# before it had (the setting's default when it was added, which kept the earlier behaviour):
# a resume reads a missing one as that value, with a note. None: no one value (the setting
# came with the recipes and presets that choose it), so a missing one is not compared.
ADDED_LATER = {
    "accumulation_steps": 1,
    "augment": [],
    "optimizer": "lars",
    "lr_schedule": "cosine",
    "tau_schedule": "cosine",
    "predictor_lr_multiplier": 1.0,
    "augment_on": "host",
    "recipe": None,
    "crop_sampler": None,
    "blur_padding": None,
    "zero_init_residual": None,
    "head_output_bias": None,
    "kernel_initializer": None,
}
# What a resume compares besides the settings (`check_resume`, `schedule_changes`): the
# probe's classes and the run's length.
_RESUMED = ("num_classes", "steps_per_epoch", "total_steps")


def check_content(saved, path) -> None:
    """Checks `saved`, the content of the `run_config.json` at `path` as JSON reads it.

    Raises:
        ValueError: one line naming the file, if it is not a JSON object holding the `REQUIRED`
            settings (damaged, or not written by this program), or one of its values has the
            wrong type or is out of range (naming the key).
    """
    if not isinstance(saved, dict):
        kind = {list: "list", str: "string", bool: "boolean"}.get(type(saved), "number or null")
        what = f"a JSON {kind}, not the run's settings"
    else:
        what = ", ".join(key for key in REQUIRED if key not in saved)
        what = (what and f"without {what}") or _wrong_value(saved)
    if what:
        raise damaged(path, what)


def damaged(path, what) -> ValueError:
    """The one-line error of the damaged `run_config.json` at `path` (`what` is wrong)."""
    return ValueError(
        f"{path} is damaged ({what}); restore it, or delete it to resume without checking "
        "the flags against the run's."
    )


def resume_settings(saved, path, model_dir, log=print) -> dict[str, Any]:
    """`saved` (checked by `check_content`) as the resume of the run `model_dir` compares it.

    Every setting a resume compares (`ARCHITECTURE`, `SCHEDULE`) must be recorded: a missing
    one would let the resume change it unnoticed. A key of `ADDED_LATER` that a file of an
    earlier version lacks is read as its value there, with one note through `log`.

    Args:
        saved: the content of the `run_config.json` at `path`.
        path: the file named in the messages.
        model_dir: the run folder, named in the message refusing an imported checkpoint.
        log: prints a line.

    Returns:
        The settings, missing `ADDED_LATER` keys filled in.

    Raises:
        ValueError: one line naming the file and the missing keys, or saying the folder holds
            an imported official checkpoint.
    """
    if "imported_from" in saved:
        raise ValueError(
            f"--model_dir={model_dir} holds an official checkpoint imported from "
            f"{saved['imported_from']}, not a run to resume; pass --init_from={model_dir} with "
            "a new --model_dir to train from it."
        )
    compared = ARCHITECTURE + SCHEDULE + _RESUMED
    missing = [key for key in compared if key not in saved and key not in ADDED_LATER]
    if missing:
        raise damaged(path, f"without {', '.join(missing)}")
    older = sorted(key for key in ADDED_LATER if key in compared and key not in saved)
    if older:
        known = [key for key in older if ADDED_LATER[key] is not None]
        saved = dict(saved, **{key: ADDED_LATER[key] for key in known})
        read = ", ".join(f"--{key}={json.dumps(saved[key])}" for key in known)
        unknown = ", ".join(f"--{key}" for key in older if ADDED_LATER[key] is None)
        log(
            f"Note: {path} is from an earlier version: "
            + "; ".join(
                text
                for text in (
                    read and f"read {read} (as that version trained)",
                    unknown and f"{unknown} not recorded, not compared",
                )
                if text
            )
            + "."
        )
    return saved


def schedule_changes(run_config, saved) -> dict[str, tuple[Any, Any]]:
    """`{setting: (old, new)}` of the `SCHEDULE` settings where `run_config` differs from `saved`.

    Values are compared as `run_config.json` holds them (a tuple reads back as a list).
    Settings a run folder from an older version does not record are not compared.
    """
    changes = {}
    for key in SCHEDULE:
        if key in saved and key in run_config:
            new = json.loads(json.dumps(run_config[key]))
            if saved[key] != new:
                changes[key] = (saved[key], new)
    return changes


def _json_type(annotation):
    """`(what, test)` of a `TrainConfig` field's annotation, for a value read from JSON."""
    args = getattr(annotation, "__args__", None)
    if args:  # `X | None`
        inner = _json_type(next(a for a in args if a is not type(None)))
        return f"{inner[0]} or null", lambda v: v is None or inner[1](v)
    return {
        bool: ("true or false", lambda v: isinstance(v, bool)),
        int: ("an integer", lambda v: isinstance(v, int) and not isinstance(v, bool)),
        float: ("a number", lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)),
        str: ("a string", lambda v: isinstance(v, str)),
        tuple: ("a list of strings", lambda v: isinstance(v, list) and _strings(v)),
    }[annotation]


def _strings(values):
    return all(isinstance(v, str) for v in values)


def _three_numbers(values):
    return (
        isinstance(values, list)
        and len(values) == 3
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
        and all(abs(v) < float("inf") for v in values)
    )


# The keys run_config.json holds besides the settings: `(what, test)`.
_DERIVED = {
    "mean": ("a list of 3 numbers", _three_numbers),
    "std": ("a list of 3 positive numbers", lambda v: _three_numbers(v) and min(v) > 0),
    "num_classes": ("an integer >= 0 or null", lambda v: v is None or _count(v, 0)),
    "steps_per_epoch": ("a positive integer", lambda v: _count(v, 1)),
    "total_steps": ("a positive integer", lambda v: _count(v, 1)),
    "recipe_chosen": ("a string", lambda v: isinstance(v, str)),
    "recipe_overrides": ("a list of strings", lambda v: isinstance(v, list) and _strings(v)),
    "imported_from": ("a string", lambda v: isinstance(v, str)),
}


def _count(value, least):
    return isinstance(value, int) and not isinstance(value, bool) and value >= least


def _wrong_value(saved):
    """`key is <value>, expected <what>` for the first value of `saved` of the wrong type or
    out of its setting's range, else ''."""
    expected = {field.name: field for field in fields.flag_fields(train_config.TrainConfig)}
    for key, value in saved.items():
        if key in _DERIVED:
            what, ok = _DERIVED[key]
        elif key in expected:
            what, ok = _json_type(expected[key].type)
            meta = expected[key].metadata
            if ok(value) and value is not None and meta["choices"]:
                what, ok = f"one of {', '.join(meta['choices'])}", meta["choices"].__contains__
            elif ok(value) and value is not None and meta["valid"]:
                what, ok = meta["valid"][0], meta["valid"][1]
        else:
            continue  # a key of another version or program: not read
        if not ok(value):
            return f"{key} is {json.dumps(value)}, expected {what}"
    return ""


def check_resume(cfg, model_dir, saved) -> None:
    """Refuses to resume a checkpoint whose architecture differs from `cfg`.

    Args:
        cfg: the settings of this invocation.
        model_dir: the run folder named in the message.
        saved: its `run_config.json` (`byol_tf.runs.run_folder.read_run_config`; empty for none).

    Raises:
        ValueError: naming the first `ARCHITECTURE` setting that differs from `run_config.json`.
    """
    for key in ARCHITECTURE:
        if key in saved and saved[key] != getattr(cfg, key):
            raise ValueError(
                f"--{key}={getattr(cfg, key)} does not match the checkpoint in {model_dir} "
                f"(trained with --{key}={saved[key]}); use another --model_dir or the original "
                "flags. The checkpoint was not modified."
            )
