"""tensorflow-datasets' own builders, not its mock data: ImageNet prepared by tensorflow-datasets
from tar files in ImageNet's layout, then train.py's ImageNet recipe and evaluate.py on it; a
data set that cannot be downloaded, or whose manual files are missing, ends in one line."""

import io
import json
import logging
import os
import socket
import tarfile
import time

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from absl.testing import flagsaver
from helpers import evaluate_error, run_program, tiny_checkpoint_run, train_error

import evaluate
from byol_tf.cli import console

# The first two of ImageNet's 1000 classes (tensorflow-datasets' imagenet2012 labels.txt).
CLASSES = ("n01440764", "n01443537")
MANUAL_FILES = "ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar"
# train.py --flagfile=configs/imagenet.flags made small: a ResNet-50 of width 1/8 on 32×32
# views, 2 steps of batch 4, no kNN monitor, no export, no XLA (a minute's compile on a CPU).
SMALL_IMAGENET = [
    "--image_size=32", "--width_multiplier=0.125", "--hidden_dim=32", "--projection_dim=16",
    "--batch_size=4", "--epochs=1", "--knn_every_epochs=0", "--export_dir=",
    "--nojit_compile",
]  # fmt: skip


def _jpeg(seed, height=20, width=24):
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return tf.io.encode_jpeg(pixels).numpy()


def _add(archive, name, data):
    member = tarfile.TarInfo(name)
    member.size = len(data)
    archive.addfile(member, io.BytesIO(data))


def imagenet_manual_dir(folder, per_class=4, validation=4):
    """ImageNet's two tar files as image-net.org ships them, with a few noise JPEGs.

    `ILSVRC2012_img_train.tar` holds one tar per class, `<wnid>.tar`, of `<wnid>_<n>.JPEG`
    files (here `per_class` for each of `CLASSES`); `ILSVRC2012_img_val.tar` holds
    `ILSVRC2012_val_<8 digits>.JPEG` files, whose labels tensorflow-datasets takes from its
    own list of the 50,000, in the order of the names.

    Returns:
        `folder`, the manual_dir.
    """
    os.makedirs(folder, exist_ok=True)
    with tarfile.open(os.path.join(folder, "ILSVRC2012_img_train.tar"), "w") as train:
        for c, wnid in enumerate(CLASSES):
            inner = io.BytesIO()
            with tarfile.open(fileobj=inner, mode="w") as images:
                for i in range(per_class):
                    _add(images, f"{wnid}_{10026 + i}.JPEG", _jpeg(100 * c + i))
            _add(train, f"{wnid}.tar", inner.getvalue())
    with tarfile.open(os.path.join(folder, "ILSVRC2012_img_val.tar"), "w") as val:
        for i in range(1, validation + 1):
            _add(val, f"ILSVRC2012_val_{i:08d}.JPEG", _jpeg(1000 + i))
    return folder


def test_a_builder_finds_its_own_code():
    # tensorflow-datasets imports importlib_resources here but declares it for Python < 3.9
    # only (tensorflow/datasets issue 11212): setup.cfg declares it.
    builder = tfds.builder("mnist", data_dir="/nonexistent/tfds")
    assert builder.code_path.name == "mnist.py"


def test_imagenet_recipe_trains_and_evaluates_on_imagenet_prepared_from_its_tar_files(tmp_path):
    manual_dir = imagenet_manual_dir(str(tmp_path / "manual"))
    data_dir, model_dir = str(tmp_path / "tfds"), str(tmp_path / "run")
    start = time.perf_counter()
    flags = [f"--data_dir={data_dir}", f"--manual_dir={manual_dir}", f"--model_dir={model_dir}"]
    done = run_program(
        ["train.py", "--flagfile=configs/imagenet.flags", *flags, *SMALL_IMAGENET], timeout=600
    )
    trained = time.perf_counter()
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Finished 2 steps" in done.stdout and "ckpt-00000002.keras" in done.stdout
    assert "Traceback" not in done.stderr
    # tensorflow-datasets' INFO lines while it prepares and reads the data set stay off the
    # console (its progress bars and its one-line notices remain).
    for info in ("Done writing", "Creating a tf.data.Dataset", "Load dataset info"):
        assert info not in done.stderr, done.stderr
    builder = tfds.builder("imagenet2012", data_dir=data_dir)
    splits = builder.info.splits
    assert (splits["train"].num_examples, splits["validation"].num_examples) == (8, 4)
    labels = {int(x["label"]) for x in builder.as_dataset(split="train")}
    assert labels == {0, 1}  # the class folders' wnids, as ImageNet's indices
    with flagsaver.flagsaver(model_dir=model_dir, protocol="knn"):
        assert evaluate.main(["evaluate.py"]) == 0
    results = json.loads((tmp_path / "run" / "eval_knn.json").read_text())
    assert (results["dataset"], results["test_split"]) == ("imagenet2012", "validation")
    assert (results["num_train"], results["num_test"], results["num_classes"]) == (8, 4, 1000)
    print(
        f"train.py {trained - start:.1f} s (preparation included), "
        f"evaluate.py {time.perf_counter() - trained:.1f} s"
    )


# --- data sets that cannot be had ------------------------------------------------------------


@pytest.fixture
def no_network(monkeypatch):
    """Host names resolve to nothing, as without a network; tensorflow-datasets retries once
    rather than ten times (3 minutes of back-off)."""
    from tensorflow_datasets.core.download import downloader

    def unresolvable(*args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", unresolvable)
    monkeypatch.setattr(downloader, "MAX_RETRIES", 1)


def _download_refused(message, data_dir):
    assert "'cifar10'" in message and f"--data_dir={data_dir}" in message, message
    assert "no network?" in message and "cifar-10-binary.tar.gz" in message, message
    assert f"--manual_dir={os.path.join(data_dir, 'downloads', 'manual')}" in message, message


def test_train_without_network_names_the_data_set_and_its_folders(tmp_path, no_network):
    data_dir = str(tmp_path / "tfds")
    message = train_error(str(tmp_path / "run"), dataset="cifar10", data_dir=data_dir)
    _download_refused(message, data_dir)


def test_evaluate_without_network_names_the_data_set_and_its_folders(tmp_path, no_network):
    tiny_checkpoint_run(tmp_path, dataset="demo", image_size=8, mean=[0.5] * 3, std=[0.25] * 3)
    data_dir = str(tmp_path / "tfds")
    message = evaluate_error(model_dir=str(tmp_path), dataset="cifar10", data_dir=data_dir)
    _download_refused(message, data_dir)


@pytest.mark.parametrize("manual", ["missing", "empty", "other_files"])
def test_train_on_imagenet_without_its_tar_files_says_what_manual_dir_needs(tmp_path, manual):
    manual_dir = tmp_path / "manual"
    if manual != "missing":
        manual_dir.mkdir()
    if manual == "other_files":
        (manual_dir / "ILSVRC2012_devkit_t12.tar.gz").write_bytes(b"")
    data_dir = str(tmp_path / "tfds")
    message = train_error(
        str(tmp_path / "run"), dataset="imagenet2012", data_dir=data_dir,
        manual_dir=str(manual_dir), eval_split="",
    )  # fmt: skip
    assert "'imagenet2012'" in message and f"--data_dir={data_dir}" in message, message
    assert f"--manual_dir={manual_dir}" in message and MANUAL_FILES in message, message


def test_train_on_imagenet_with_a_tar_file_cut_short_says_so(tmp_path):
    manual_dir = imagenet_manual_dir(str(tmp_path / "manual"))
    train_tar = os.path.join(manual_dir, "ILSVRC2012_img_train.tar")
    os.truncate(train_tar, os.path.getsize(train_tar) // 2)
    message = train_error(
        str(tmp_path / "run"), dataset="imagenet2012", data_dir=str(tmp_path / "tfds"),
        manual_dir=manual_dir, eval_split="",
    )  # fmt: skip
    assert f"--manual_dir={manual_dir} holds a tar file that cannot be read" in message, message
    assert MANUAL_FILES in message, message


def test_train_with_data_dir_under_a_file_names_it(tmp_path):
    (tmp_path / "a_file").write_text("precious")
    data_dir = str(tmp_path / "a_file" / "tfds")
    message = train_error(
        str(tmp_path / "run"), dataset="imagenet2012", data_dir=data_dir,
        manual_dir=imagenet_manual_dir(str(tmp_path / "manual")), eval_split="",
    )  # fmt: skip
    refusal = f"Cannot prepare tensorflow-datasets data set 'imagenet2012' in --data_dir={data_dir}"
    assert refusal in message and "Not a directory" in message, message
    assert (tmp_path / "a_file").read_text() == "precious"


def test_evaluate_on_imagenet_without_its_tar_files_says_what_manual_dir_needs(tmp_path):
    data_dir, manual_dir = str(tmp_path / "tfds"), str(tmp_path / "manual")
    tiny_checkpoint_run(
        tmp_path, dataset="imagenet2012", data_dir=data_dir, manual_dir=manual_dir,
        eval_split="validation", image_size=8, mean=[0.5] * 3, std=[0.25] * 3,
    )  # fmt: skip
    message = evaluate_error(model_dir=str(tmp_path))
    assert "'imagenet2012'" in message and f"--data_dir={data_dir}" in message, message
    assert f"--manual_dir={manual_dir} does not exist" in message, message
    assert MANUAL_FILES in message, message


# --- the console -----------------------------------------------------------------------------


def test_console_drops_tfds_info_records_and_keeps_its_warnings():
    # The programs' console (byol_tf.cli.console) filters what absl logs: a record logged from
    # a tensorflow_datasets module below WARNING is not written.
    record = logging.getLogger("absl").makeRecord(
        "absl", logging.INFO, "/x/tensorflow_datasets/core/writer.py", 1, "Done", (), None
    )
    assert not console._no_tfds_info(record)
    record.levelno = logging.WARNING
    assert console._no_tfds_info(record)
    ours = logging.getLogger("absl").makeRecord(
        "absl", logging.INFO, "/x/byol_tf/data/pipelines.py", 1, "byol_tf: x", (), None
    )
    assert console._no_tfds_info(ours)


XLA_SLOW_COMPILE = [
    b"2026-12-07 21:40:00.123456: E external/local_xla/xla/service/slow_operation_alarm.cc:65] ",
    b"E1207 21:40:00.123456   12345 slow_operation_alarm.cc:133] ",
    b"********************************",
    b"[Compiling module a_inference_one_step_on_data_8123__.40512] Very slow compile? If you "
    b"want to file a bug, run with envvar XLA_FLAGS=--xla_dump_to=/tmp/foo and attach the "
    b"results.",
    b"[Compiling module a_inference_one_step_on_data_8123__.40512]",
    b"Very slow compile? If you want to file a bug, run with envvar XLA_FLAGS=--xla_dump_to=/tmp"
    b"/foo and attach the results.",
    b"********************************",
    b"2026-12-07 21:43:12.368570: E external/local_xla/xla/service/slow_operation_alarm.cc:140] "
    b"The operation took 3m2.369747s",
]


@pytest.mark.parametrize("line", XLA_SLOW_COMPILE, ids=lambda line: line[:24].decode())
def test_console_drops_xla_slow_compile_alarm(line):
    assert console._NATIVE_NOISE.match(line)


def test_console_keeps_other_errors_and_starred_text():
    for line in (
        b"2026-12-07 21:40:00.123456: E tensorflow/core/framework/op_kernel.cc:1857] OOM",
        b"**** warning ****",
        b"train.py: error: Cannot download tensorflow-datasets data set 'cifar10'",
    ):
        assert not console._NATIVE_NOISE.match(line)
