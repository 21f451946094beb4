"""The README's Python example runs as written, with smaller parameters."""

import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The example's parameter lines and the values the test gives them: the offline demo set, one
# short epoch, a narrow encoder. Nothing else in the example is changed.
SMALL = {
    "dataset": '"demo"',
    "image_size": "28",
    "batch_size": "128",
    "epochs": "1",
    "width_multiplier": "0.0625",
}


def readme_python_example():
    """The first ```python block of the README's "Using the library from Python" section."""
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as handle:
        text = handle.read()
    section = text.split("## Using the library from Python", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_example_sets_each_parameter_once():
    code = readme_python_example()
    for name in SMALL:
        assert len(re.findall(rf"^{name} = ", code, re.M)) == 1, name


@pytest.mark.slow  # the README's whole example, trained: about 40 s
def test_readme_python_example_trains_and_saves_the_encoder(tmp_path, monkeypatch):
    code = readme_python_example()
    for name, value in SMALL.items():
        code = re.sub(rf"^{name} = .*$", f"{name} = {value}", code, count=1, flags=re.M)
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "readme_example"}
    exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102
    model = namespace["model"]
    assert int(model.optimizer.iterations.numpy()) == namespace["total_steps"] > 0
    assert os.path.getsize(tmp_path / "encoder.keras") > 0
    import keras

    encoder = keras.models.load_model(tmp_path / "encoder.keras")
    assert encoder.output_shape[-1] == model.encoder.output_shape[-1]


def test_readme_example_imports_quietly(tmp_path):
    """Its lines up to the first parameter, then a TensorFlow op: nothing on stderr (no oneDNN,
    cuInit or cuDNN-factory lines) when TF_CPP_MIN_LOG_LEVEL is not set."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    probe = (
        "import os; os.environ['TF_CPP_MIN_LOG_LEVEL'] = '3'; import tensorflow as tf; "
        "tf.reduce_sum(tf.ones(3))"
    )
    floor = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=300, env=env
    )
    if floor.stderr:  # e.g. TensorFlow 2.21: absl lines from before its logging is set up
        pytest.skip("this TensorFlow writes native log lines whatever TF_CPP_MIN_LOG_LEVEL says")
    imports = readme_python_example().split("\ndataset = ", 1)[0]
    script = tmp_path / "imports.py"
    script.write_text(imports + "\nprint(float(tf.reduce_sum(tf.ones(3))))\n")
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=300, env=env
    )
    assert result.returncode == 0 and result.stdout.strip() == "3.0", result.stderr
    assert result.stderr == ""


def test_readme_flags_table_gives_the_settings_defaults():
    from byol_tf.settings.train_config import TrainConfig

    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as handle:
        rows = [line for line in handle if line.startswith("| `--")]
    checked = 0
    for row in rows:
        names, defaults = row.split(" | ")[:2]
        names = re.findall(r"`--(\w+)`", names)
        defaults = [d.strip() for d in defaults.split(", ")]
        for name, default in zip(names, defaults, strict=False):
            if re.fullmatch(r"-?\d+(\.\d+)?", default) and name in TrainConfig.__dataclass_fields__:
                assert float(default) == getattr(TrainConfig(), name), name
                checked += 1
    assert checked >= 10


def test_quick_start_says_how_to_run_with_the_venv():
    """The Quick start names `.venv`'s Python and its activation, and the command it shows runs
    with that Python (the shell's own lacks absl)."""
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as handle:
        quick_start = handle.read().split("## Quick start", 1)[1].split("\n## ", 1)[0]
    assert ".venv/bin/python train.py" in quick_start
    assert "source .venv/bin/activate" in quick_start
    assert "python -m byol_tf.cli.import_official --help" in quick_start
    help_run = subprocess.run(
        [sys.executable, "-m", "byol_tf.cli.import_official", "--help"],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )  # fmt: skip
    assert help_run.returncode == 0, help_run.stderr[-2000:]
    assert "--checkpoint" in help_run.stdout + help_run.stderr
