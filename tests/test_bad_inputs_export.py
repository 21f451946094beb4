"""Bad inputs to the export program and to the exported SavedModel's serving signature."""

import pytest
import tensorflow as tf
from helpers import a_file, run_program

from byol_tf import export


def test_export_program_checks_export_dir_before_loading(finished_run, tmp_path):
    path = a_file(tmp_path)
    with pytest.raises(ValueError, match=r"--export_dir=.*/a_file/sub is not writable"):
        export.export_checkpoint(finished_run, str(path / "sub"))
    result = run_program(
        ["-m", "byol_tf.export", f"--model_dir={finished_run}", f"--export_dir={path}"]
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1] == (
        f"python -m byol_tf.export: error: --export_dir={path} is a file; expected a folder."
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
