"""The files of a training run's folder (`model_dir`) besides its checkpoints, and its checks."""

import json
import os
import shutil
import tempfile

RUN_CONFIG = "run_config.json"
SUMMARY = "summary.json"
SCHEDULE_CHANGES = "schedule_changes.json"
FLAGS_FILE = "flags.txt"
# Settings that fix the network's shape or the optimiser's state: a checkpoint cannot be resumed
# with other values.
ARCHITECTURE = (
    "encoder",
    "width_multiplier",
    "cifar_stem",
    "projection_dim",
    "hidden_dim",
    "image_size",
    "optimizer",  # its slot variables differ
)


def prepare_model_dir(model_dir):
    """Creates `model_dir` and checks that it is a writable folder (before any training).

    Raises:
        ValueError: if it is a file or cannot be written, naming `--model_dir`.
    """
    prepare_folder(model_dir, "--model_dir")


# Settings that shape the learning-rate and τ schedules (and the data stream's epochs), and
# where the augmentation runs (its views differ by rounding): resuming with other values would
# make them jump, so it takes --allow_schedule_change.
SCHEDULE = (
    "augment_on",
    "batch_size",
    "accumulation_steps",
    "epochs",
    "steps_per_epoch",
    "recipe",
    "learning_rate",
    "lr_schedule",
    "warmup_epochs",
    "weight_decay",
    "momentum",
    "eta",
    "base_tau",
    "tau_schedule",
    "predictor_lr_multiplier",
)


def schedule_changes(run_config, saved):
    """`{setting: (old, new)}` of the `SCHEDULE` settings where `run_config` differs from `saved`.

    Settings a run folder from an older version does not record are not compared.
    """
    return {
        key: (saved[key], run_config[key])
        for key in SCHEDULE
        if key in saved and key in run_config and saved[key] != run_config[key]
    }


def check_schedule(changes, model_dir, allowed, step, folder):
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


def prepare_folder(path, flag):
    """Creates the output folder `path` and checks that it is writable (before any work).

    Raises:
        ValueError: if it is a file or cannot be created or written, naming `flag`.
    """
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"{flag}={path} is a file; expected a folder.")
    try:
        os.makedirs(path, exist_ok=True)
        probe = os.path.join(path, ".write_test")
        with open(probe, "w") as handle:
            handle.write("ok")
        os.remove(probe)
    except OSError as error:
        raise ValueError(f"{flag}={path} is not writable: {error.strerror}.") from None


def write_dir(model_dir, chief):
    """The folder this process writes to: `model_dir`, checked, for the chief, else a new one.

    Non-chief workers of a multi-worker run execute the same saving code as the chief (saving
    may read distributed variables, which takes every worker), into a temporary folder that
    `remove_write_dir` deletes at the end.

    Raises:
        ValueError: from `prepare_model_dir`.
    """
    if not chief:
        return tempfile.mkdtemp(prefix="byol_tf_worker_")
    prepare_model_dir(model_dir)
    return model_dir


def remove_write_dir(path, model_dir):
    """Deletes a non-chief worker's temporary folder (never `model_dir` itself)."""
    if os.path.abspath(path) != os.path.abspath(model_dir):
        shutil.rmtree(path, ignore_errors=True)


def append_flags(folder, flags_text):
    """Appends the flags of an invocation to `flags.txt` (a flagfile: `--flagfile=` reruns it)."""
    with open(os.path.join(folder, FLAGS_FILE), "a") as handle:
        handle.write(flags_text)


def write_json(path, content):
    """Writes `content` as JSON under a temporary name, then renames it into place (atomic)."""
    tmp = path + ".tmp"
    with open(tmp, "w") as handle:
        json.dump(content, handle, indent=2, sort_keys=True)
    os.replace(tmp, path)


def write_run_config(folder, run_config):
    """Writes `run_config.json`: the run's settings, data statistics and step counts."""
    write_json(os.path.join(folder, RUN_CONFIG), run_config)


def write_summary(folder, summary):
    """Writes `summary.json`: the results of a finished run."""
    write_json(os.path.join(folder, SUMMARY), summary)


def read_json(path):
    """The content of a JSON file, or None when it does not exist."""
    if not os.path.exists(path):
        return None
    with open(path) as handle:
        return json.load(handle)


def read_run_config(model_dir):
    """The `run_config.json` the training program wrote in `model_dir`, or None."""
    return read_json(os.path.join(model_dir, RUN_CONFIG))


def read_summary(folder):
    """The `summary.json` of a finished run in `folder`, or None."""
    return read_json(os.path.join(folder, SUMMARY))


def check_resume(cfg, model_dir, saved):
    """Refuses to resume a checkpoint whose architecture differs from `cfg`.

    Args:
        cfg: the settings of this invocation.
        model_dir: the run folder named in the message.
        saved: its `run_config.json` (`read_run_config`; empty for none).

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
