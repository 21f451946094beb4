"""The package's public face: every public module is reachable from `import byol_tf`."""

import os
import subprocess
import sys

import byol_tf

PACKAGE = os.path.dirname(os.path.abspath(byol_tf.__file__))


def _public_modules():
    names = set()
    for entry in os.listdir(PACKAGE):
        name, ext = os.path.splitext(entry)
        if entry.startswith(("_", ".")) or entry in ("cli", "data_files"):
            continue
        if ext == ".py" or os.path.isfile(os.path.join(PACKAGE, entry, "__init__.py")):
            names.add(name)
    return names


def test_every_public_module_is_an_attribute_of_the_package():
    modules = _public_modules()
    assert {"data", "augment", "evaluation", "export", "model", "callbacks"} <= modules
    for name in modules:
        assert name in byol_tf.__all__, name
        assert getattr(byol_tf, name).__name__ == f"byol_tf.{name}"


def test_import_byol_tf_then_attribute_access_works_in_a_fresh_process():
    code = "import byol_tf; byol_tf.data, byol_tf.augment, byol_tf.evaluation, byol_tf.export"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300
    )
    assert result.returncode == 0, result.stderr


def test_unknown_attribute_is_an_attribute_error():
    try:
        byol_tf.no_such_module  # noqa: B018
    except AttributeError as error:
        assert "no_such_module" in str(error)
    else:
        raise AssertionError("byol_tf.no_such_module did not raise AttributeError")
