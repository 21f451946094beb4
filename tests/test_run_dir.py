"""The run folder: one writer at a time (its lock), and a damaged run_config.json refused."""

import json
import os
import signal
import socket
import subprocess
import sys

import pytest

from byol_tf.runs import run_folder, writer_lock
from byol_tf.settings import fields, train_config
from byol_tf.training import train_run


def _write_lock(folder, pid, host=None, started="2026-01-01T10:00:00+00:00"):
    record = {"pid": pid, "host": host or socket.gethostname(), "started": started}
    with open(os.path.join(folder, writer_lock.LOCK), "w") as handle:
        json.dump(record, handle)
    return record


def _gone_pid():
    """The pid of a process that has ended."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_the_chief_locks_model_dir_with_its_pid_host_and_start_time(tmp_path):
    model_dir = str(tmp_path / "run")
    assert run_folder.write_dir(model_dir, chief=True) == model_dir
    with open(os.path.join(model_dir, writer_lock.LOCK)) as handle:
        record = json.load(handle)
    assert record["pid"] == os.getpid() and record["host"] == socket.gethostname()
    assert record["started"]
    run_folder.remove_write_dir(model_dir, model_dir)
    assert os.listdir(model_dir) == []


def test_a_second_writer_is_refused_naming_the_folder_and_the_holder(tmp_path):
    model_dir = str(tmp_path)
    record = _write_lock(model_dir, os.getpid())  # a live process on this host
    with pytest.raises(ValueError) as error:
        run_folder.write_dir(model_dir, chief=True)
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith(f"--model_dir={model_dir} is in use by another training process")
    assert f"pid {os.getpid()} on {record['host']}, started {record['started']}" in message
    with open(os.path.join(model_dir, writer_lock.LOCK)) as handle:
        assert json.load(handle) == record  # left to its holder
    run_folder.remove_write_dir(model_dir, model_dir)  # releases nothing it does not hold
    assert os.path.exists(os.path.join(model_dir, writer_lock.LOCK))


def test_a_lock_on_another_host_counts_as_held(tmp_path):
    _write_lock(str(tmp_path), _gone_pid(), host="elsewhere.invalid")
    with pytest.raises(ValueError, match="pid .* on elsewhere.invalid"):
        run_folder.write_dir(str(tmp_path), chief=True)


def test_a_stale_lock_of_a_gone_process_is_taken_over_with_a_note(tmp_path):
    model_dir = str(tmp_path)
    pid = _gone_pid()
    _write_lock(model_dir, pid)
    notes = []
    run_folder.write_dir(model_dir, chief=True, log=notes.append)
    path = os.path.join(model_dir, writer_lock.LOCK)
    assert notes == [
        f"Note: taking over {path} from a process that is gone (pid {pid} on "
        f"{socket.gethostname()}, started 2026-01-01T10:00:00+00:00)."
    ]
    with open(path) as handle:
        assert json.load(handle)["pid"] == os.getpid()
    run_folder.remove_write_dir(model_dir, model_dir)
    assert os.listdir(model_dir) == []


def test_a_damaged_lock_file_is_refused_in_one_line(tmp_path):
    (tmp_path / writer_lock.LOCK).write_text("{")
    with pytest.raises(ValueError) as error:
        run_folder.write_dir(str(tmp_path), chief=True)
    assert "\n" not in str(error.value)
    assert f"{tmp_path / writer_lock.LOCK}, which names no process (damaged)" in str(error.value)


def test_non_chief_workers_take_no_lock(tmp_path):
    folder = run_folder.write_dir(str(tmp_path), chief=False)
    assert not os.path.exists(os.path.join(str(tmp_path), writer_lock.LOCK))
    run_folder.remove_write_dir(folder, str(tmp_path))
    assert not os.path.exists(folder)


@pytest.mark.parametrize("stop", [KeyboardInterrupt, ValueError, None])
def test_training_holds_the_lock_and_releases_it_on_every_exit(tmp_path, monkeypatch, stop):
    model_dir = str(tmp_path / "run")
    lock = os.path.join(model_dir, writer_lock.LOCK)

    def train_then(cfg, strategy, out_dir, *args):
        assert os.path.exists(lock)
        if stop:
            raise stop()
        return {}

    monkeypatch.setattr(train_run, "_train", train_then)
    cfg = train_config.TrainConfig(model_dir=model_dir, strategy="auto")
    if stop:
        with pytest.raises(stop):
            train_run.train(cfg)
    else:
        assert train_run.train(cfg) == {}
    assert not os.path.exists(lock)


@pytest.mark.parametrize(
    "content, what",
    [
        ("{}", "without dataset, image_size, mean, std"),
        ("[1, 2]", "a JSON list, not the run's settings"),
        ('{"dataset": "demo", "encoder":', "not JSON: "),
        ('{"dataset": "demo", "encoder": "resnet18"}', "without image_size, mean, std)"),
        (b"\xff\xfe", "not JSON: "),
    ],
    ids=["empty_object", "list", "truncated", "missing_keys", "binary"],
)
def test_a_damaged_run_config_is_refused_in_one_line_naming_the_file(tmp_path, content, what):
    path = tmp_path / run_folder.RUN_CONFIG
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(ValueError) as error:
        run_folder.read_run_config(str(tmp_path))
    message = str(error.value)
    assert "\n" not in message and message.startswith(f"{path} is damaged (")
    assert what in message


def test_a_missing_run_config_reads_as_none(tmp_path):
    assert run_folder.read_run_config(str(tmp_path)) is None


def test_ctrl_c_while_the_lock_is_taken_leaves_no_lock(tmp_path, monkeypatch):
    create = writer_lock._create_lock

    def create_then_ctrl_c(path, record):
        create(path, record)
        os.kill(os.getpid(), signal.SIGINT)  # held back until the lock is whole and registered

    monkeypatch.setattr(writer_lock, "_create_lock", create_then_ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        writer_lock.lock_model_dir(str(tmp_path))
    assert os.listdir(tmp_path) == []
    monkeypatch.undo()
    writer_lock.lock_model_dir(str(tmp_path))  # and the folder is free again
    writer_lock.unlock_model_dir(str(tmp_path))


def test_every_train_setting_declares_how_a_resume_treats_it():
    unclassified = [
        f.name
        for f in fields.flag_fields(train_config.TrainConfig)
        if f.metadata.get("resume") not in fields.RESUME_CLASSES
    ]
    assert not unclassified, f"settings without a resume class: {unclassified}"
    assert {"head_output_bias", "encoder", "optimizer"} <= set(run_folder.ARCHITECTURE)
    assert {"augment", "preset", "crop_sampler", "seed", "learning_rate"} <= set(
        run_folder.SCHEDULE
    )
    assert "knn_k" not in run_folder.SCHEDULE + run_folder.ARCHITECTURE
    with pytest.raises(ValueError, match="resume_class must be one of"):
        train_config.resumed_as("sometimes")


def test_a_changed_data_stream_setting_is_refused_on_resume_unless_allowed(tmp_path):
    saved = {"seed": 0, "augment": ["crop_area=0.5:1.0"], "knn_k": 20}
    # knn_k is free; a tuple equals the list run_config.json reads back.
    now = {"seed": 1, "augment": ("crop_area=0.5:1.0",), "knn_k": 5}
    changes = run_folder.schedule_changes(now, saved)
    assert changes == {"seed": (0, 1)}
    with pytest.raises(ValueError, match="--seed: 0 -> 1") as error:
        run_folder.check_schedule(changes, "runs/x", False, 7, str(tmp_path))
    assert "\n" not in str(error.value)
    line = run_folder.check_schedule(changes, "runs/x", True, 7, str(tmp_path))
    assert "--seed: 0 -> 1" in line
    with open(tmp_path / run_folder.SCHEDULE_CHANGES) as handle:
        assert json.load(handle) == [{"step": 7, "changes": {"seed": [0, 1]}}]


def test_a_changed_head_output_bias_is_refused_on_resume():
    cfg = train_config.TrainConfig(head_output_bias=False)
    with pytest.raises(ValueError, match="--head_output_bias=False does not match"):
        run_folder.check_resume(cfg, "runs/x", {"head_output_bias": True})


# --- run_config.json: wrong values, missing keys, keys of later versions ---------------------


def _one_step_config(one_step_run):
    with open(os.path.join(one_step_run, run_folder.RUN_CONFIG)) as handle:
        return json.load(handle)


def _write_config(folder, content):
    with open(os.path.join(folder, run_folder.RUN_CONFIG), "w") as handle:
        json.dump(content, handle)
    return os.path.join(folder, run_folder.RUN_CONFIG)


@pytest.mark.parametrize(
    "key, value, expected",
    [
        ("batch_size", "eight", 'batch_size is "eight", expected an integer'),
        ("batch_size", 8.5, "batch_size is 8.5, expected an integer"),
        ("batch_size", True, "batch_size is true, expected an integer"),
        ("batch_size", 0, "batch_size is 0, expected a positive int"),
        ("learning_rate", "0.1", 'learning_rate is "0.1", expected a number or null'),
        ("encoder", "vgg", 'encoder is "vgg", expected one of resnet18, '),
        ("cifar_stem", "no", 'cifar_stem is "no", expected true or false'),
        ("augment", "crop_area=0.5:1", 'augment is "crop_area=0.5:1", expected a list of'),
        ("mean", [0.5, 0.5], "mean is [0.5, 0.5], expected a list of 3 numbers"),
        ("std", [0.2, 0.0, 0.2], "std is [0.2, 0.0, 0.2], expected a list of 3 positive"),
        ("total_steps", "1", 'total_steps is "1", expected a positive integer'),
    ],
)
def test_a_run_config_value_of_the_wrong_type_is_refused_naming_the_file_and_key(
    one_step_run, tmp_path, key, value, expected
):
    path = _write_config(str(tmp_path), dict(_one_step_config(one_step_run), **{key: value}))
    with pytest.raises(ValueError) as error:
        run_folder.read_run_config(str(tmp_path))
    message = str(error.value)
    assert "\n" not in message and message.startswith(f"{path} is damaged ({expected}")


def test_a_run_config_without_a_setting_a_resume_compares_is_refused(one_step_run, tmp_path):
    config = _one_step_config(one_step_run)
    for key in ("batch_size", "epochs", "learning_rate"):
        del config[key]
    path = _write_config(str(tmp_path), config)
    assert run_folder.read_run_config(str(tmp_path))  # evaluation reads what it needs
    with pytest.raises(ValueError) as error:
        run_folder.resume_config(str(tmp_path), log=pytest.fail)
    assert str(error.value).startswith(
        f"{path} is damaged (without batch_size, epochs, learning_rate); restore it"
    )


def test_keys_added_in_later_versions_are_read_as_their_earlier_values_with_a_note(
    one_step_run, tmp_path
):
    config = _one_step_config(one_step_run)
    for key in ("accumulation_steps", "optimizer", "augment_on", "crop_sampler"):
        del config[key]
    path = _write_config(str(tmp_path), config)
    notes = []
    saved = run_folder.resume_config(str(tmp_path), log=notes.append)
    assert notes == [
        f"Note: {path} is from an earlier version: read --accumulation_steps=1, "
        '--augment_on="host", --optimizer="lars" (as that version trained); --crop_sampler '
        "not recorded, not compared."
    ]
    assert (saved["accumulation_steps"], saved["optimizer"], saved["augment_on"]) == (
        1,
        "lars",
        "host",
    )
    assert "crop_sampler" not in saved
    notes.clear()
    assert run_folder.resume_config(one_step_run, log=notes.append) and notes == []


def test_an_imported_official_checkpoint_is_not_resumed(tmp_path):
    _write_config(
        str(tmp_path),
        {"dataset": "imagenet2012", "image_size": 224, "mean": [0.5] * 3, "std": [0.2] * 3,
         "imported_from": "/w/pretrain_res50x1.pkl"},
    )  # fmt: skip
    with pytest.raises(ValueError, match=f"--init_from={tmp_path} with a new --model_dir"):
        run_folder.resume_config(str(tmp_path))


# --- the folders a run creates; files where its folders go -----------------------------------


def test_a_file_where_the_checkpoint_folder_goes_is_refused_before_the_lock(tmp_path):
    (tmp_path / "checkpoints").write_text("precious")
    with pytest.raises(ValueError) as error:
        run_folder.write_dir(str(tmp_path), chief=True)
    assert str(error.value) == (
        f"--model_dir={tmp_path} holds a file {tmp_path / 'checkpoints'} where the run's "
        "checkpoints folder goes; move it away or pass another --model_dir."
    )
    assert os.listdir(tmp_path) == ["checkpoints"]


def test_remove_empty_removes_only_the_new_empty_folders(tmp_path):
    folders = run_folder.new_folders(str(tmp_path / "a" / "b" / "c"))
    assert folders == [
        str(tmp_path / "a" / "b" / "c"),
        str(tmp_path / "a" / "b"),
        str(tmp_path / "a"),
    ]
    os.makedirs(folders[0])
    (tmp_path / "a" / "keep.txt").write_text("x")
    run_folder.remove_empty(folders)
    assert os.listdir(tmp_path) == ["a"] and os.listdir(tmp_path / "a") == ["keep.txt"]


def test_sigterm_while_the_lock_is_taken_leaves_no_lock(tmp_path, monkeypatch):
    from byol_tf.cli import programs

    create = writer_lock._create_lock

    def create_then_sigterm(path, record):
        create(path, record)
        os.kill(os.getpid(), signal.SIGTERM)  # held back until the lock is whole and registered

    previous = signal.getsignal(signal.SIGTERM)
    programs.end_on_sigterm("train.py")
    monkeypatch.setattr(writer_lock, "_create_lock", create_then_sigterm)
    try:
        with pytest.raises(SystemExit) as error:
            writer_lock.lock_model_dir(str(tmp_path))
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert error.value.code == 143
    assert os.listdir(tmp_path) == []


def test_a_new_setting_a_resume_compares_is_added_to_added_later():
    # The settings the first run_config.json held: a file without one is damaged. A setting
    # added since, and compared on resume, must say in ADDED_LATER how older files read it.
    first_version = {
        "batch_size", "base_tau", "cifar_stem", "dataset", "encoder", "epochs", "eta",
        "hidden_dim", "image_size", "joint_views", "learning_rate", "mixed_precision",
        "momentum", "preset", "projection_dim", "seed", "steps_per_epoch", "train_split",
        "warmup_epochs", "weight_decay", "width_multiplier",
    }  # fmt: skip
    compared = set(run_folder.ARCHITECTURE + run_folder.SCHEDULE)
    assert compared - set(run_folder.ADDED_LATER) == first_version
