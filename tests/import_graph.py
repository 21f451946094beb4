"""The import graph of byol_tf, read from its source: which module imports which, cycles,
imports from a lower floor into a higher one, and the layout's figures (tests/test_package.py)."""

import ast
import collections
import os


def package_modules(root):
    """`{module name: file}` of every module of the byol_tf package under the folder `root`."""
    paths = {}
    for folder, _, files in os.walk(os.path.join(root, "byol_tf")):
        for entry in files:
            if entry.endswith(".py"):
                relative = os.path.relpath(os.path.join(folder, entry), root)[:-3]
                paths[relative.replace(os.sep, ".").removesuffix(".__init__")] = os.path.join(
                    folder, entry
                )
    return paths


def _skipped_nodes(tree, when_imported):
    """The nodes whose imports do not count: the body of an `if __name__ == "__main__":` block
    (the program's entry point, run as `__main__` and never when the module is imported); with
    `when_imported`, also function bodies and `if TYPE_CHECKING:` blocks, which importing the
    module does not run."""
    skipped = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If):
            test = ast.unparse(node.test)
            if "__main__" in test or (when_imported and "TYPE_CHECKING" in test):
                skipped.update(id(n) for statement in node.body for n in ast.walk(statement))
        elif when_imported and isinstance(
            node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)
        ):
            skipped.update(id(n) for n in ast.walk(node))
    return skipped


def imports_of_source(text, module, package_modules, is_package=False, when_imported=False):
    """The modules of `package_modules` that the source `text` of `module` imports.

    Imports at module level and inside functions count: a lazy import is still a dependency.
    An `if __name__ == "__main__":` block does not: it is the program's entry point, run as
    `__main__` and never when the module is imported. Relative imports are resolved. With
    `when_imported`, only what importing the module runs counts (not function bodies, not
    `if TYPE_CHECKING:` blocks).
    """
    tree = ast.parse(text)
    skipped = _skipped_nodes(tree, when_imported)
    package = module if is_package else module.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(parts + ([node.module] if node.module else []))
            for a in node.names:  # a module of the package, else a name in module `base`
                found.add(f"{base}.{a.name}" if f"{base}.{a.name}" in package_modules else base)
    return {name for name in found if name in package_modules} - {module}


def module_graph(paths):
    """`{module: the package's modules it imports}` for `paths`, `{module: file}`; the package
    itself (`byol_tf`, whose attributes import on first use) is left out as a target."""
    names = set(paths)
    graph = {}
    for module, path in paths.items():
        with open(path) as handle:
            text = handle.read()
        found = imports_of_source(text, module, names, path.endswith("__init__.py"))
        graph[module] = found - {"byol_tf"}
    return graph


def cycles(graph):
    """Every import cycle found by a depth-first walk, as `[a, b, ..., a]` lists."""
    found, done = [], set()

    def visit(module, path):
        for imported in sorted(graph.get(module, ())):
            if imported in path:
                found.append(path[path.index(imported) :] + [imported])
            elif imported not in done:
                visit(imported, path + [imported])
        done.add(module)

    for module in sorted(graph):
        if module not in done:
            visit(module, [module])
    return found


def floor_of(module, floors):
    """`(number, name)` of the floor `module` lives on (1 = lowest), None outside the floors."""
    parts = module.split(".")
    if len(parts) > 1 and parts[1] in floors:
        return floors.index(parts[1]) + 1, parts[1]
    return None


def upward_imports(graph, floors):
    """Each import from a module on a lower floor of a module on a higher one, as a line."""
    found = []
    for module in sorted(graph):
        here = floor_of(module, floors)
        for imported in sorted(graph[module]):
            there = floor_of(imported, floors)
            if here and there and there[0] > here[0]:
                found.append(
                    f"{module} (floor {here[0]}, {here[1]}) imports {imported} "
                    f"(floor {there[0]}, {there[1]})"
                )
    return found


def _part(module):
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def _parameters(node):
    args = node.args
    names = [a.arg for a in args.posonlyargs + args.args + args.kwonlyargs]
    return len([n for n in names if n not in ("self", "cls")])


def figures(paths, floors):
    """The layout's figures: top-level parts, import edges and layers between them, and the
    longest parameter list of a public function."""
    graph = module_graph(paths)
    parts = {_part(m) for m in paths if _part(m)}
    edges = {
        (_part(a), _part(b)) for a in graph for b in graph[a]
        if _part(a) and _part(b) and _part(a) != _part(b)
    }  # fmt: skip
    below = collections.defaultdict(set)
    for a, b in edges:
        below[a].add(b)

    def layer(part, seen=()):
        if part in seen:  # a circle between parts: no layering exists
            return len(parts) + 1
        return 1 + max((layer(q, seen + (part,)) for q in below[part]), default=0)

    longest = (0, "")
    for module, path in paths.items():
        with open(path) as handle:
            tree = ast.parse(handle.read())
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef) and not node.name.startswith("_"):
                longest = max(longest, (_parameters(node), f"{module}.{node.name}"))
    return {
        "top-level parts": len(parts),
        "import edges between parts": len(edges),
        "import layers": max(layer(p) for p in parts),
        "longest parameter list": longest,
    }
