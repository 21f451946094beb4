"""Bad inputs to the export program and to the exported SavedModel's serving signature."""

import json

import keras
import pytest
import tensorflow as tf
from helpers import a_file, run_program, tiny_checkpoint_run

from byol_tf.serving import export
from byol_tf.settings import program_configs


def test_export_program_checks_export_dir_before_loading(finished_run, tmp_path):
    path = a_file(tmp_path)
    with pytest.raises(ValueError, match=r"--export_dir=.*/a_file/sub is not writable"):
        export.export_checkpoint(finished_run, str(path / "sub"))
    result = run_program(
        ["-m", "byol_tf.cli.export", f"--model_dir={finished_run}", f"--export_dir={path}"]
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1] == (
        f"python -m byol_tf.cli.export: error: --export_dir={path} is a file; expected a folder."
    )
    assert path.read_text() == "precious"


@pytest.fixture(scope="module")
def served(tiny_export):
    return tf.saved_model.load(tiny_export).signatures["serving_default"]


def test_served_model_answers_an_empty_batch_with_no_rows(served):
    for shape in ([0, 8, 8, 3], [0, 31, 17, 3]):
        features = served(images=tf.zeros(shape, tf.uint8))["representation"]
        assert features.shape == (0, 4) and features.dtype == tf.float32
    assert served(images=tf.zeros([2, 8, 8, 3], tf.uint8))["representation"].shape == (2, 4)


def test_served_model_refuses_float_images(served):
    assert served(images=tf.zeros([1, 8, 8, 3], tf.uint8))["representation"].shape == (1, 4)
    with pytest.raises(tf.errors.InvalidArgumentError, match="expected to be a uint8 tensor"):
        served(images=tf.zeros([1, 8, 8, 3], tf.float32))


def test_served_model_refuses_a_wrong_rank(served):
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"expected shape \[\?,\?,\?,3\]"):
        served(images=tf.zeros([8, 8, 3], tf.uint8))


@pytest.mark.parametrize("version", [0, -1])
def test_export_program_refuses_a_version_below_one_up_front(tmp_path, version):
    with pytest.raises(ValueError, match=rf"--version must be a positive int\. .*={version}"):
        program_configs.ExportConfig(model_dir=str(tmp_path), export_dir="e", version=version)


def test_export_program_takes_the_run_of_a_checkpoint_or_asks_for_its_normalisation(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    tiny_checkpoint_run(run, dataset="demo", image_size=8, mean=[0.3] * 3, std=[0.2] * 3)
    (path,) = (run / "checkpoints").iterdir()
    settings = program_configs.ExportConfig(checkpoint=str(path), export_dir="e")
    assert settings.model_dir == str(run)
    alone = tmp_path / "ckpt-1.keras"
    alone.write_bytes(path.read_bytes())
    with pytest.raises(ValueError) as error:
        program_configs.ExportConfig(checkpoint=str(alone), export_dir="e")
    assert str(error.value) == (
        f"--checkpoint={alone} is not in a run folder's checkpoints/: pass --model_dir (the run, "
        "whose run_config.json records the normalisation), or --mean and --std (3 "
        "comma-separated numbers each, in [0, 1] pixel units)"
    )
    assert "None" not in str(error.value)
    with pytest.raises(ValueError, match=f"--checkpoint={run} is a folder; expected a .keras"):
        program_configs.ExportConfig(checkpoint=str(run), export_dir="e")
    result = run_program(
        [
            "-m",
            "byol_tf.cli.export",
            f"--checkpoint={path}",
            f"--export_dir={tmp_path / 'export'}",
        ]
    )
    assert result.returncode == 0, result.stderr
    metadata = json.loads((tmp_path / "export" / "1" / "byol_tf_export.json").read_text())
    assert (metadata["mean"], metadata["std"]) == ([0.3] * 3, [0.2] * 3)


def test_encode_normalized_refuses_images_of_another_size(tiny_export):
    signature = tf.saved_model.load(tiny_export).signatures["encode_normalized"]
    assert signature(images=tf.zeros([2, 8, 8, 3]))["representation"].shape == (2, 4)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"expected shape \[\?,8,8,3\]"):
        signature(images=tf.zeros([2, 16, 16, 3]))
    encode, _ = export.load_exported(tiny_export)
    with pytest.raises(ValueError) as error:
        encode(tf.zeros([2, 16, 16, 3]))
    assert str(error.value) == (
        f"The export in {tiny_export} encodes images of shape [batch, 8, 8, 3], normalised. "
        "Received: shape=(2, 16, 16, 3)"
    )


def test_export_refuses_an_encoder_without_pooling(tmp_path):
    inputs = keras.Input((8, 8, 3))
    encoder = keras.Model(inputs, keras.layers.Conv2D(4, 3)(inputs), name="maps")
    with pytest.raises(ValueError) as error:
        export.export_encoder(encoder, str(tmp_path / "export"), 8, (0.5,) * 3, (0.25,) * 3)
    assert str(error.value).startswith(
        "encoder 'maps' outputs shape (1, 6, 6, 4) for images of shape (1, 8, 8, 3); an export "
        "serves features of rank 2, [batch, D]"
    )
    assert not (tmp_path / "export").exists()


def test_export_of_a_checkpoint_alone_asks_for_its_normalisation(tmp_path):
    tiny_checkpoint_run(tmp_path)
    (path,) = (tmp_path / "checkpoints").iterdir()
    with pytest.raises(ValueError) as error:
        export.export_checkpoint(None, str(tmp_path / "export"), checkpoint=str(path))
    assert str(error.value) == (
        "No run_config.json with mean/std without a run folder (--model_dir); pass --mean and "
        "--std (3 comma-separated numbers each, in [0, 1] pixel units)"
    )
