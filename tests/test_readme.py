"""The README's Python example runs as written, with smaller parameters."""

import os
import re
import subprocess
import sys

import import_graph
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


# The documents whose `byol_tf.<name>` mentions must resolve. docs/layout.md's "Moving from 0.1"
# section names the modules of version 0.1 on purpose; its table is checked on its own below.
DOCUMENTS = ["README.md", *sorted(f"docs/{n}" for n in os.listdir(os.path.join(ROOT, "docs")))]
DOCUMENTS = [d for d in DOCUMENTS if d.endswith(".md")] + ["bench/README.md"]
MOVING = "## Moving from 0.1"
DOTTED = re.compile(r"byol_tf(?:\.[A-Za-z_]\w*)+")
FROM_IMPORT = re.compile(r"^from (byol_tf(?:\.\w+)*) import (\w+(?:, \w+)*)$", re.M)
# Imports each name given on the command line, or the longest module prefix of it and then its
# attributes; prints one line per name that does not resolve, or that resolves only through
# the package's aliases of 0.1 (a DeprecationWarning naming the new module).
RESOLVE = r"""
import importlib, sys, warnings
warnings.filterwarnings("error", message=r"byol_tf\.", category=DeprecationWarning)

def resolve(name):
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        module = ".".join(parts[:i])
        try:
            obj = importlib.import_module(module)
        except ModuleNotFoundError as error:
            if error.name and module.startswith(error.name):
                continue
            raise
        for attribute in parts[i:]:
            obj = getattr(obj, attribute)
        return

for name in sys.argv[1:]:
    try:
        resolve(name)
    except Exception as error:
        print(f"{name}: {type(error).__name__}: {error}")
"""


def _read(document):
    with open(os.path.join(ROOT, document), encoding="utf-8") as handle:
        return handle.read()


def _without_moving_section(text):
    if MOVING not in text:
        return text
    before, after = text.split(MOVING, 1)
    rest = re.search(r"^## ", after, re.M)
    return before + (after[rest.start() :] if rest else "")


def documented_names(text):
    """Every `byol_tf.<dotted name>` of `text`, and `byol_tf.x.name` for each
    `from byol_tf.x import name` line."""
    names = set(DOTTED.findall(text))
    for module, imported in FROM_IMPORT.findall(text):
        names.update(f"{module}.{name}" for name in imported.split(", "))
    return names


def unresolved(names):
    """The lines of RESOLVE for `names`: empty when every name imports."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=ROOT)
    result = subprocess.run(
        [sys.executable, "-c", RESOLVE, *sorted(names)],
        capture_output=True, text=True, timeout=300, cwd=ROOT, env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout.splitlines()


def test_every_byol_tf_name_the_readme_and_docs_mention_resolves():
    names = set()
    for document in DOCUMENTS:
        names |= documented_names(_without_moving_section(_read(document)))
    # The names the README leads with are among them, so the check covers the public API.
    assert {"byol_tf.BYOL", "byol_tf.data.pretrain_dataset", "byol_tf.data.source"} <= names
    assert "byol_tf.training.run_plan.make_plan" in names  # docs/layout.md's run flow
    # A name that does not exist, and one of 0.1 that resolves only with a DeprecationWarning,
    # are reported beside them: the check can fail.
    probes = {"byol_tf.data.no_such_name", "byol_tf.networks"}
    report = unresolved(names | probes)
    assert {line.split(":")[0] for line in report} >= probes
    assert [line for line in report if line.split(":")[0] not in probes] == []


def test_every_byol_tf_path_the_readme_and_docs_mention_exists():
    paths = set()
    for document in DOCUMENTS:
        paths |= set(re.findall(r"`(byol_tf/[\w/.]*)`", _read(document)))
    assert "byol_tf/cli/" in paths
    missing = [p for p in sorted(paths) if not os.path.exists(os.path.join(ROOT, p))]
    assert missing == []


def _layout_modules():
    """`{floor: modules}` as docs/layout.md's tables of each floor list them."""
    text = _read("docs/layout.md").split("## The modules of each floor", 1)[1]
    text = text.split("\n## ", 1)[0]
    listed = {}
    for floor, body in re.findall(r"^### \d+\. `(\w+)`\n(.*?)(?=^### |\Z)", text, re.M | re.S):
        rows = [line for line in body.splitlines() if line.startswith("| `")]
        listed[floor] = {m for row in rows for m in re.findall(r"`(\w+)`", row.split(" | ")[0])}
    return listed


def test_docs_layout_lists_every_module_of_every_floor():
    import byol_tf

    listed = _layout_modules()
    assert list(listed) == list(byol_tf.FLOORS)  # in the package's order, lowest first
    for floor in byol_tf.FLOORS:
        folder = os.path.join(ROOT, "byol_tf", floor)
        modules = {n[:-3] for n in os.listdir(folder) if n.endswith(".py") and n != "__init__.py"}
        assert listed[floor] == modules, floor


def test_docs_layout_moving_table_gives_each_old_module_its_new_place():
    import byol_tf

    moving = _read("docs/layout.md").split(MOVING, 1)[1]
    table = {}
    for old, new in re.findall(r"^\| `byol_tf\.(\w+)`[^|]* \| `byol_tf\.([\w.]+)`", moving, re.M):
        table[old] = new
    for old, new in byol_tf._MOVED.items():  # the aliases that still resolve agree with it
        assert table.get(old) == new, old
    assert len(table) >= len(byol_tf._MOVED) + 15  # the internal modules of 0.1 too
    # Every new name of the module and name tables (`image_ops.center_crop` → ...) resolves.
    new_names = set(re.findall(r"^\| `[^`]+`[^|]* \| `(byol_tf\.[\w.]+)`", moving, re.M))
    assert {"byol_tf.views.image_ops.resize_center_crop", "byol_tf.data.source"} <= new_names
    assert unresolved(new_names) == []


def _package_modules(root=ROOT):
    """`{module name: file}` of every module of the byol_tf package under `root`."""
    return import_graph.package_modules(root)


def _imported_when_run(path, module, modules):
    """The byol_tf modules that running `path` (module `module`) imports: statements outside
    functions, outside `if __name__ == "__main__":` and `if TYPE_CHECKING:` blocks, and the
    parents whose `__init__` importing a module runs first."""
    with open(path, encoding="utf-8") as handle:
        found = import_graph.imports_of_source(
            handle.read(), module, modules, path.endswith("__init__.py"), when_imported=True
        )
    found = {".".join(n.split(".")[:i]) for n in found for i in range(1, n.count(".") + 2)}
    return {name for name in found if name in modules}


def loaded_by_import(package, modules):
    """The byol_tf modules in `sys.modules` after `import <package>` in a fresh process."""
    loaded, pending = set(), [package]
    while pending:
        module = pending.pop()
        if module not in loaded:
            loaded.add(module)
            pending.extend(_imported_when_run(modules[module], module, modules))
    return loaded


def unreachable_from_import_byol_tf(names, modules):
    """Names of `names` whose attribute chain from `import byol_tf` passes a submodule that
    nothing imports: `byol_tf.core.networks` when `import byol_tf.core` leaves `networks` out
    and the package has no `__getattr__` to import it on first use. `modules`: from
    `_package_modules`."""
    missing = []
    for name in sorted(names):
        parts = name.split(".")
        for i in range(2, len(parts)):
            package, submodule = ".".join(parts[:i]), ".".join(parts[: i + 1])
            if submodule not in modules or package == "byol_tf":
                continue  # an attribute of a module, or a floor (byol_tf.__getattr__)
            with open(modules[package], encoding="utf-8") as handle:
                text = handle.read()
            # A module `__getattr__`, written out or made by byol_tf.submodules_on_first_use.
            lazy = "def __getattr__" in text or "__getattr__ = " in text
            if not lazy and submodule not in loaded_by_import(package, modules):
                missing.append(f"{name}: `import byol_tf` does not import {submodule}")
                break
    return missing


def test_the_python_examples_reach_their_names_from_import_byol_tf():
    """The ```python blocks write `byol_tf.core.networks.resnet(...)` after `import byol_tf`:
    each module on such a path must be imported by its package, not only by an earlier line."""
    blocks = []
    for document in DOCUMENTS:
        blocks += re.findall(r"```python\n(.*?)```", _read(document), re.S)
    names = {name for block in blocks for name in DOTTED.findall(block)}
    assert "byol_tf.training.recipes.for_budget" in names  # the README's example
    assert unreachable_from_import_byol_tf(names, _package_modules()) == []


def test_the_reachability_check_finds_a_module_only_a_function_imports(tmp_path):
    files = {
        "byol_tf/__init__.py": "def __getattr__(name):\n    pass\n",
        "byol_tf/core/__init__.py": "from byol_tf.core import model\n",
        "byol_tf/core/model.py": "def f():\n    from byol_tf.core import networks\n",
        "byol_tf/core/networks.py": "def resnet():\n    pass\n",
        "byol_tf/lazy/__init__.py": "def __getattr__(name):\n    pass\n",
        "byol_tf/lazy/networks.py": "",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    modules = _package_modules(str(tmp_path))
    names = {"byol_tf.core.model.f", "byol_tf.core.networks.resnet", "byol_tf.lazy.networks.x"}
    assert unreachable_from_import_byol_tf(names, modules) == [
        "byol_tf.core.networks.resnet: `import byol_tf` does not import byol_tf.core.networks"
    ]
