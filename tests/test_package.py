"""The package's shape: its floors and the import graph between them, the names the README
uses, no unpickling, and the size of modules and functions."""

import ast
import importlib
import os
import subprocess
import sys

import import_graph
import pytest

import byol_tf

PACKAGE = os.path.dirname(os.path.abspath(byol_tf.__file__))


def _modules():
    """`{module name: path}` of every module of the package."""
    return import_graph.package_modules(os.path.dirname(PACKAGE))


def test_every_module_lives_on_a_floor_whose_docstring_says_what_it_owns_and_may_import():
    parts = {name.split(".")[1] for name in _modules() if name.count(".") >= 1}
    assert parts == set(byol_tf.FLOORS) | {"data_files"}  # no module left at the top
    assert _modules()["byol_tf.data_files"].endswith("__init__.py")  # data only: no code
    assert len([m for m in _modules() if m.startswith("byol_tf.data_files.")]) == 0
    for floor in byol_tf.FLOORS:
        doc = importlib.import_module(f"byol_tf.{floor}").__doc__
        assert doc and ("May import" in doc or "floor" in doc), floor
    for name in _modules():
        module_doc = ast.get_docstring(ast.parse(open(_modules()[name]).read()))
        assert module_doc, f"{name} has no docstring"


def test_import_byol_tf_then_attribute_access_works_in_a_fresh_process():
    code = (
        "import byol_tf; byol_tf.data.pipelines, byol_tf.views.augment, byol_tf.evaluation, "
        "byol_tf.serving.export"
    )
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


def _module_graph():
    return import_graph.module_graph(_modules())


def test_the_package_has_no_import_cycle_and_no_import_from_a_lower_floor_into_a_higher_one():
    graph = _module_graph()
    assert {"byol_tf.training.run_plan", "byol_tf.training.callbacks"} <= set(
        graph["byol_tf.training.train_run"]
    )
    assert "byol_tf.core.model" in graph["byol_tf.training.run_plan"]
    assert not import_graph.cycles(graph), import_graph.cycles(graph)
    assert not import_graph.upward_imports(graph, byol_tf.FLOORS)


def test_the_graph_checks_find_a_circle_and_an_upward_import():
    """The checks above, on graphs built to fail them: each must be found."""
    graph = {"byol_tf.core.a": {"byol_tf.core.b"}, "byol_tf.core.b": {"byol_tf.core.a"}}
    assert import_graph.cycles(graph) == [["byol_tf.core.a", "byol_tf.core.b", "byol_tf.core.a"]]
    upward = {"byol_tf.views.x": {"byol_tf.core.model"}, "byol_tf.core.model": set()}
    assert import_graph.upward_imports(upward, byol_tf.FLOORS) == [
        "byol_tf.views.x (floor 2, views) imports byol_tf.core.model (floor 3, core)"
    ]
    lazy = "def f():\n    from byol_tf.training import train_run\n"
    main = 'if __name__ == "__main__":\n    from byol_tf.cli import programs\n'
    names = {"byol_tf.training.train_run", "byol_tf.cli.programs"}
    assert import_graph.imports_of_source(lazy, "byol_tf.core.m", names) == {
        "byol_tf.training.train_run"
    }  # an import inside a function counts
    assert import_graph.imports_of_source(main, "byol_tf.core.m", names) == set()
    relative = "from ..training import train_run\n"
    assert import_graph.imports_of_source(relative, "byol_tf.core.m", names) == {
        "byol_tf.training.train_run"
    }


def test_the_layout_figures(capsys):
    """Prints the figures of the layout (parts, floors, edges, the longest parameter list)."""
    figures = import_graph.figures(_modules(), byol_tf.FLOORS)
    with capsys.disabled():
        print("\nlayout:", figures)
    assert figures["top-level parts"] == len(byol_tf.FLOORS) + 1  # + data_files
    assert figures["import layers"] <= len(byol_tf.FLOORS)


def test_nothing_in_the_project_unpickles_files():
    root = os.path.dirname(PACKAGE)
    sources = [os.path.join(root, name) for name in ("train.py", "evaluate.py")]
    for folder, _, files in os.walk(PACKAGE):  # every subpackage too (cli, evaluation)
        sources += [os.path.join(folder, n) for n in files if n.endswith(".py")]
    assert os.path.join(PACKAGE, "cli", "train.py") in sources
    for path in sources:
        with open(path) as handle:
            text = handle.read()
        unsafe_uses = ["import pickle", "allow_pickle=True", "safe_mode=False", "dill", "joblib"]
        if path.endswith(os.path.join("byol_tf", "official", "reader.py")):
            # The official checkpoints are pickles: read only through an unpickler whose
            # find_class resolves an allow-list (tests/test_official.py refuses code in them).
            assert "class _SafeUnpickler(pickle.Unpickler)" in text and "def find_class" in text
            unsafe_uses = ["pickle.load(", "pickle.loads(", "allow_pickle=True", "import dill"]
        for unsafe in unsafe_uses:
            assert unsafe not in text, f"{path} uses {unsafe}"


def _code_lines(node, lines):
    """Lines of code of a function: not blank, not a comment, not its docstring."""
    import ast

    doc = set()
    body = node.body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        doc = set(range(body[0].lineno, body[0].end_lineno + 1))
    return sum(
        1
        for number in range(node.lineno, node.end_lineno + 1)
        if number not in doc and lines[number - 1].strip()
        and not lines[number - 1].strip().startswith("#")
    )  # fmt: skip


def test_no_module_over_400_lines_and_no_function_over_60_lines_of_code():
    import ast

    too_long = []
    for folder, _, files in os.walk(PACKAGE):
        for name in files:
            if not name.endswith(".py"):
                continue
            path = os.path.join(folder, name)
            text = open(path).read()
            lines = text.splitlines()
            if len(lines) > 400:
                too_long.append(f"{path}: {len(lines)} lines")
            for node in ast.walk(ast.parse(text)):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    if _code_lines(node, lines) > 60:
                        too_long.append(f"{path}:{node.lineno} {node.name}")
    # The run's orchestration stays small: the plan, the monitor and the settings live elsewhere.
    with open(os.path.join(PACKAGE, "training", "train_run.py")) as handle:
        assert len(handle.read().splitlines()) <= 300
    assert not too_long, too_long


def test_a_bare_pytest_leaves_the_slow_tests_out():
    """conftest.py deselects `slow` and `parity` tests unless `-m` names a selection: a bare
    `pytest --collect-only` of a file with slow tests lists only the others."""
    tests = os.path.join(os.path.dirname(PACKAGE), "tests")
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
         os.path.join(tests, "test_bench_harness.py")],
        capture_output=True, text=True, timeout=300, cwd=os.path.dirname(PACKAGE),
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
    )  # fmt: skip
    collected = {line.split("::")[-1] for line in result.stdout.splitlines() if "::" in line}
    slow = set(_slow_tests("test_bench_harness.py"))
    assert slow and collected, result.stdout + result.stderr
    assert not slow & collected


@pytest.mark.parametrize("markexpr, kept", [("", ["fast"]), ("slow", ["fast", "slow", "parity"])])
def test_the_conftest_hook_keeps_marked_tests_only_when_m_names_a_selection(markexpr, kept):
    """The hook itself: without `-m` the `slow` and `parity` items go (and are reported as
    deselected); with any `-m`, pytest's own selection decides and the hook keeps all."""
    import conftest

    class Item:
        def __init__(self, name, marker=None):
            self.name, self.marker = name, marker

        def get_closest_marker(self, name):
            return name if name == self.marker else None

    deselected = []
    hook = type("Hook", (), {"pytest_deselected": lambda self, items: deselected.extend(items)})
    config = type("Config", (), {"option": type("O", (), {"markexpr": markexpr}), "hook": hook()})
    items = [Item("fast"), Item("slow", "slow"), Item("parity", "parity")]
    conftest.pytest_collection_modifyitems(config, items)
    assert [item.name for item in items] == kept
    assert len(deselected) == 3 - len(kept)


def _slow_tests(file_name):
    tree = ast.parse(open(os.path.join(os.path.dirname(PACKAGE), "tests", file_name)).read())
    return [
        node.name for node in tree.body
        if isinstance(node, ast.FunctionDef)
        and any("slow" in ast.unparse(d) for d in node.decorator_list)
    ]  # fmt: skip


def _unannotated(tree, path):
    """`path:line name` of each public function or method in `tree` without a return
    annotation (nested functions are not API; methods of private classes are not either)."""
    found = []

    def visit(node, public):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                dunder = child.name.startswith("__") and child.name.endswith("__")
                named_public = dunder or not child.name.startswith("_")
                if public and named_public and child.returns is None:
                    found.append(f"{path}:{child.lineno} {child.name}")
            elif isinstance(child, ast.ClassDef):
                visit(child, public and not child.name.startswith("_"))

    visit(tree, True)
    return found


def test_every_public_function_and_method_has_a_return_annotation():
    missing = []
    for name, path in _modules().items():
        with open(path) as handle:
            missing += _unannotated(ast.parse(handle.read()), name)
    assert not missing, missing
    unannotated = "def f(x):\n    return x\nclass C:\n    def m(self) -> int:\n        return 1\n"
    assert _unannotated(ast.parse(unannotated), "m") == ["m:1 f"]  # the check finds one
