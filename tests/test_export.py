"""Tests of byol_tf.serving.export: SavedModel signatures, TF Serving layout and requests, the
CLI."""

import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from helpers import run_program, tiny_checkpoint_run, tiny_encoder

from byol_tf.serving import export
from byol_tf.views import image_ops

MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny encoder (8×8 input), exported once: `(encoder, version_path)`."""
    encoder = tiny_encoder(8)
    # Non-trivial BatchNorm statistics, so inference mode is visible in the outputs.
    encoder.get_layer("bn").moving_mean.assign(np.full(4, 0.3, "float32"))
    encoder.get_layer("bn").moving_variance.assign(np.full(4, 2.0, "float32"))
    base = tmp_path_factory.mktemp("export")
    return encoder, export.export_encoder(encoder, str(base), 8, MEAN, STD)


def _preprocess(images, size=8):
    """What `byol_tf.data.pipelines.eval_dataset` does to uint8 images of an array source."""
    unit = tf.clip_by_value(image_ops.resize_center_crop(images, size, 1.0) / 255.0, 0.0, 1.0)
    return (unit - np.array(MEAN, "float32")) / np.array(STD, "float32")


def _images(shape, seed=0):
    return np.random.default_rng(seed).integers(0, 256, shape).astype("uint8")


def test_saved_model_matches_python_encoder(exported):
    encoder, path = exported
    loaded = tf.saved_model.load(path)
    images = _images((5, 8, 8, 3))
    expected = encoder(_preprocess(images), training=False).numpy()
    served = loaded.signatures["serving_default"](images=tf.constant(images))["representation"]
    np.testing.assert_allclose(served, expected, atol=1e-5)
    normalized = loaded.signatures["encode_normalized"](images=_preprocess(images))
    np.testing.assert_allclose(normalized["representation"], expected, atol=1e-5)


def test_serving_signature_accepts_any_image_size(exported):
    encoder, path = exported
    serve = tf.saved_model.load(path).signatures["serving_default"]
    for shape in [(2, 8, 8, 3), (1, 31, 17, 3), (3, 5, 40, 3)]:
        images = _images(shape)
        out = serve(images=tf.constant(images))["representation"]
        assert out.shape == (shape[0], 4)
        expected = encoder(_preprocess(images), training=False)
        np.testing.assert_allclose(out, expected, atol=1e-5)


def test_load_exported_returns_encode_normalized_and_metadata(exported):
    encoder, path = exported
    encode, metadata = export.load_exported(os.path.dirname(path))
    assert metadata["image_size"] == 8 and metadata["feature_dim"] == 4
    assert metadata["mean"] == list(MEAN) and metadata["std"] == list(STD)
    assert metadata["crop_fraction"] == 1.0 and "byol_tf_version" in metadata
    x = np.random.default_rng(1).normal(size=(3, 8, 8, 3)).astype("float32")
    np.testing.assert_allclose(encode(x), encoder(x, training=False), atol=1e-5)


def test_saved_model_cli_lists_uint8_serving_signature(exported):
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    result = subprocess.run(
        [cli, "show", "--all", "--dir", exported[1]], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    serving = result.stdout.split("signature_def['serving_default']")[1]
    serving = serving.split("signature_def[")[0]
    assert "inputs['images']" in serving and "dtype: DT_UINT8" in serving
    assert "shape: (-1, -1, -1, 3)" in serving and "outputs['representation']" in serving
    assert "signature_def['encode_normalized']" in result.stdout


def test_predict_request_round_trip_through_serving_signature(exported):
    predict_pb2 = pytest.importorskip("tensorflow_serving.apis.predict_pb2")
    encoder, path = exported
    images = _images((2, 12, 10, 3))
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "byol"
    request.model_spec.signature_name = "serving_default"
    request.inputs["images"].CopyFrom(tf.make_tensor_proto(images))
    request = predict_pb2.PredictRequest.FromString(request.SerializeToString())
    signature = tf.saved_model.load(path).signatures[request.model_spec.signature_name]
    feed = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
    assert feed["images"].dtype == np.uint8
    out = signature(**{k: tf.constant(v) for k, v in feed.items()})["representation"]
    np.testing.assert_allclose(out, encoder(_preprocess(images), training=False), atol=1e-5)


def test_serving_signature_rejects_float_images_and_wrong_rank(exported):
    serve = tf.saved_model.load(exported[1]).signatures["serving_default"]
    errors = (TypeError, ValueError, tf.errors.InvalidArgumentError)
    with pytest.raises(errors, match="signature"):
        serve(images=tf.zeros([1, 8, 8, 3], tf.float32))
    with pytest.raises(errors, match="signature|4-dimensional"):
        serve(images=tf.zeros([8, 8, 3], tf.uint8))


def test_versions_are_numbered_folders(tmp_path):
    encoder = tiny_encoder(8)
    first = export.export_encoder(encoder, str(tmp_path), 8, MEAN, STD)
    second = export.export_encoder(encoder, str(tmp_path), 8, MEAN, STD)
    assert (first, second) == (str(tmp_path / "1"), str(tmp_path / "2"))
    assert sorted(os.listdir(tmp_path)) == ["1", "2"]  # no temporary folder left behind
    assert os.path.exists(tmp_path / "2" / "saved_model.pb")
    with pytest.raises(ValueError, match="version 2 already exists"):
        export.export_encoder(encoder, str(tmp_path), 8, MEAN, STD, version=2)
    assert export.export_encoder(encoder, str(tmp_path), 8, MEAN, STD, version=7).endswith("7")
    assert export.next_version(str(tmp_path)) == 8


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"image_size": 0}, "image_size must be"),
        ({"mean": (0.1, 0.2)}, "mean must be 3"),
        ({"std": (0.1, 0.0, 0.1)}, "std must be positive"),
        ({"version": -1}, "version must be"),
    ],
)
def test_export_rejects_bad_arguments(tmp_path, kwargs, message):
    args = {"image_size": 8, "mean": MEAN, "std": STD}
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        export.export_encoder(tiny_encoder(8), str(tmp_path), **args)


def _training_run(model_dir, run_config=True):
    config = dict(dataset="demo", image_size=8, mean=list(MEAN), std=list(STD))
    return tiny_checkpoint_run(model_dir, step=3, **(config if run_config else {}))


def test_export_checkpoint_reads_run_config(tmp_path):
    model = _training_run(tmp_path / "run")
    path = export.export_checkpoint(str(tmp_path / "run"), str(tmp_path / "export"))
    encode, metadata = export.load_exported(path)
    assert metadata["mean"] == list(MEAN) and metadata["image_size"] == 8
    x = np.random.default_rng(2).normal(size=(2, 8, 8, 3)).astype("float32")
    np.testing.assert_allclose(encode(x), model.encoder(x, training=False), atol=1e-5)


def test_export_checkpoint_without_run_config_needs_mean_and_std(tmp_path):
    _training_run(tmp_path / "run", run_config=False)
    with pytest.raises(ValueError, match="pass --mean and --std"):
        export.export_checkpoint(str(tmp_path / "run"), str(tmp_path / "export"))
    path = export.export_checkpoint(
        str(tmp_path / "run"), str(tmp_path / "export"), mean=MEAN, std=STD, version=4
    )
    assert path.endswith("4")
    with pytest.raises(ValueError, match="No checkpoint found"):
        export.export_checkpoint(str(tmp_path / "empty"), str(tmp_path / "export"))


@pytest.mark.slow  # two fresh Python processes importing TensorFlow: ~25 s on 2 cores
def test_export_command_line(tmp_path):
    _training_run(tmp_path / "run", run_config=False)
    command = ["-m", "byol_tf.cli.export", f"--model_dir={tmp_path / 'run'}"]
    command.append(f"--export_dir={tmp_path / 'export'}")
    failed = run_program(command, timeout=120)
    assert failed.returncode == 1
    last_line = failed.stderr.strip().splitlines()[-1]
    assert last_line.startswith("python -m byol_tf.cli.export: error: No run_config.json")
    assert "Traceback" not in failed.stderr
    command += ["--mean=0.5,0.4,0.3", "--std=0.2,0.25,0.3", "--version=3"]
    done = run_program(command, timeout=120)
    assert done.returncode == 0, done.stderr
    assert f"Exported SavedModel to {tmp_path / 'export' / '3'}" in done.stdout
    assert export.load_exported(str(tmp_path / "export"))[1]["mean"] == list(MEAN)


def test_empty_batches_give_no_rows_of_features(exported):
    encode, _ = export.load_exported(exported[1])
    assert encode(np.zeros((0, 8, 8, 3), "float32")).shape == (0, 4)
    serve = tf.saved_model.load(exported[1]).signatures["serving_default"]
    assert serve(images=tf.zeros([0, 5, 9, 3], tf.uint8))["representation"].shape == (0, 4)
