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


def test_every_module_is_declared_public_or_internal():
    modules = _public_modules()
    assert {"data", "augment", "evaluation", "export", "model", "callbacks"} <= modules
    public, internal = set(byol_tf._PUBLIC_MODULES), set(byol_tf._INTERNAL_MODULES)
    assert not public & internal
    assert modules == public | internal
    for name in modules:
        assert (name in byol_tf.__all__) == (name in public), name
        module = getattr(byol_tf, name)
        assert module.__name__ == f"byol_tf.{name}"
        first_line = module.__doc__.strip().splitlines()[0]
        assert first_line.startswith("Internal") == (name in internal), (name, first_line)


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


def _imports_of(path, package_modules):
    """The byol_tf modules that the module at `path` imports, at top level or inside
    functions; an `if __name__ == "__main__":` block is the program's entry point, run as
    `__main__` and never when the module is imported, so its imports are not the module's."""
    import ast

    tree = ast.parse(open(path).read())
    main_blocks = [
        node for node in tree.body
        if isinstance(node, ast.If) and "__main__" in ast.unparse(node.test)
    ]  # fmt: skip
    skipped = {id(n) for block in main_blocks for n in ast.walk(block)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
    return {name for name in found if name in package_modules}


def _module_graph():
    """`{module: modules it imports}` over the package's own modules."""
    paths = {}
    for folder, _, files in os.walk(PACKAGE):
        for entry in files:
            if entry.endswith(".py"):
                path = os.path.join(folder, entry)
                relative = os.path.relpath(path, os.path.dirname(PACKAGE))[:-3]
                paths[relative.replace(os.sep, ".").removesuffix(".__init__")] = path
    return {m: _imports_of(p, set(paths)) - {m, "byol_tf"} for m, p in paths.items()}


def test_the_package_has_no_import_cycle():
    graph = _module_graph()
    assert {"byol_tf.run_plan", "byol_tf.callbacks"} <= set(graph["byol_tf.training"])
    assert "byol_tf.model" in graph["byol_tf.run_plan"]
    cycles = []

    def visit(module, path):
        for imported in sorted(graph[module]):
            if imported in path:
                cycles.append(path[path.index(imported) :] + [imported])
            elif imported not in done:
                visit(imported, path + [imported])
        done.add(module)

    done = set()
    for module in sorted(graph):
        if module not in done:
            visit(module, [module])
    assert not cycles, "import cycles: " + "; ".join(" → ".join(c) for c in cycles)


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
        if path.endswith(os.path.join("byol_tf", "official_pickle.py")):
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
    with open(os.path.join(PACKAGE, "training.py")) as handle:
        assert len(handle.read().splitlines()) <= 300
    assert not too_long, too_long
