"""Measure the package's shape: the numbers the architecture issue asks to report before and after.

    python tools/arch_metrics.py            # a table on stdout
    python tools/arch_metrics.py --json     # the same as JSON

It reads the source only (``ast``), imports nothing from the package, and reports:

* modules over 500 lines and functions (including methods) over 60 lines;
* import cycles between the package's modules: through module-level imports, and through all
  imports (those inside functions included, which is how a cycle is usually hidden), and the
  latter again without the package's ``__init__``;
* imports placed inside functions;
* parameters annotated ``Any``;
* imports of another module's ``_private`` name;
* upward imports: imports (all of them, those inside functions and under ``TYPE_CHECKING``
  included) of a module in a higher layer, or of an independent sibling in the same layer, where
  the layers are those of the ``layers`` contract in ``pyproject.toml`` (``[tool.importlinter]``,
  which ``lint-imports`` checks; its ``ignore_imports`` are counted here all the same).  The
  package root (``__init__``, ``__main__``) belongs to the top layer, a sibling of none.
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: import-linter's own TOML reader
    import tomli as tomllib

PACKAGE = Path(__file__).resolve().parent.parent / "initrecipe"
PYPROJECT = PACKAGE.parent / "pyproject.toml"
MODULE_LINES = 500
FUNCTION_LINES = 60


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _resolve(module: str, node: ast.ImportFrom, is_package: bool) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".")
    if not is_package:
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(module: str, nodes: list[ast.stmt], is_package: bool, known: set[str]) -> tuple[set[str], list[str]]:
    """The package modules that ``nodes`` import, and the ``_private`` names imported from them."""
    targets: set[str] = set()
    private: list[str] = []
    for node in nodes:
        if isinstance(node, ast.ImportFrom):
            source = _resolve(module, node, is_package)
            for alias in node.names:
                candidate = f"{source}.{alias.name}"
                if candidate in known:
                    targets.add(candidate)
                elif source in known:
                    targets.add(source)
                    if alias.name.startswith("_") and not alias.name.startswith("__"):
                        private.append(f"{module}: {source}.{alias.name}")
        elif isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names if alias.name in known)
    targets.discard(module)
    return targets, private


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def _without_root(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """The graph without the package's ``__init__``: every module that reads ``__version__`` from it
    closes a cycle through it, which hides the cycles between the modules themselves."""
    root = PACKAGE.name
    return {module: targets - {root} for module, targets in graph.items() if module != root}


def _layers() -> list[list[str]]:
    """The ``layers`` contract of ``pyproject.toml``, top first: each layer's modules (several when
    the layer joins independent siblings with ``|``)."""
    config = tomllib.loads(PYPROJECT.read_text())["tool"]["importlinter"]
    contract = next(c for c in config["contracts"] if c["type"] == "layers")
    return [[name.strip() for name in layer.split("|")] for layer in contract["layers"]]


def _place(module: str, layers: list[list[str]]) -> tuple[int, str | None] | None:
    """``(layer index, the layer module holding module)``: ``(0, None)`` for the package root and
    ``__main__`` (the top layer, a sibling of none); None for a module outside the layers."""
    if module in (PACKAGE.name, f"{PACKAGE.name}.__main__"):
        return 0, None
    for index, layer in enumerate(layers):
        for top in layer:
            if module == top or module.startswith(top + "."):
                return index, top
    return None


def _upward(graph: dict[str, set[str]], layers: list[list[str]]) -> tuple[list[str], list[str]]:
    """The imports of ``graph`` that point up the layers or sideways between independent siblings
    (as ``importer -> imported``), and the modules outside every layer."""
    upward: list[str] = []
    unplaced = sorted(module for module in graph if _place(module, layers) is None)
    for importer in sorted(graph):
        source = _place(importer, layers)
        for imported in sorted(graph[importer]):
            target = _place(imported, layers)
            if source is None or target is None:
                continue
            sideways = target[0] == source[0] and None not in (source[1], target[1]) and target[1] != source[1]
            if target[0] < source[0] or sideways:
                upward.append(f"{importer} -> {imported}")
    return upward, unplaced


def measure() -> dict[str, object]:
    """Every figure of the module docstring, for the package next to this script."""
    files = sorted(PACKAGE.rglob("*.py"))
    known = {_module_name(p) for p in files}
    long_modules, long_functions, inner_imports, any_params, private = [], [], [], [], []
    graph: dict[str, set[str]] = {}
    full_graph: dict[str, set[str]] = {}
    for path in files:
        module = _module_name(path)
        text = path.read_text()
        tree = ast.parse(text)
        lines = len(text.splitlines())
        if lines > MODULE_LINES:
            long_modules.append((module, lines))
        is_package = path.name == "__init__.py"
        graph[module], module_private = _imports(module, tree.body, is_package, known)
        full_graph[module], all_private = _imports(module, list(ast.walk(tree)), is_package, known)
        private.extend(all_private)
        for node in ast.walk(tree):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            length = (node.end_lineno or node.lineno) - node.lineno + 1
            if length > FUNCTION_LINES:
                long_functions.append((f"{module}.{node.name}", length))
            for inner in ast.walk(node):
                if isinstance(inner, (ast.Import, ast.ImportFrom)):
                    inner_imports.append(f"{module}:{inner.lineno}: {ast.unparse(inner)}")
            arguments = node.args.posonlyargs + node.args.args + node.args.kwonlyargs
            for arg in arguments:
                if arg.annotation is not None and ast.unparse(arg.annotation) in ("Any", "typing.Any"):
                    any_params.append(f"{module}.{node.name}({arg.arg})")
    upward, unplaced = _upward(full_graph, _layers())
    return {
        "modules": len(files),
        "modules_over_500_lines": sorted(long_modules, key=lambda item: -item[1]),
        "functions_over_60_lines": sorted(long_functions, key=lambda item: -item[1]),
        "import_cycles": _cycles(graph),
        "import_cycles_all_imports": _cycles(full_graph),
        "import_cycles_all_imports_without_root": _cycles(_without_root(full_graph)),
        "imports_inside_functions": sorted(set(inner_imports)),  # a nested function's import once
        "any_typed_parameters": len(any_params),
        "private_name_imports": private,
        "upward_imports": upward,
        "modules_outside_the_layers": unplaced,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    figures = measure()
    if parser.parse_args().json:
        print(json.dumps(figures, indent=2))
        return 0
    print(f"modules: {figures['modules']}")
    for key in ("modules_over_500_lines", "functions_over_60_lines"):
        items = figures[key]
        print(f"{key}: {len(items)}")
        for name, lines in items:
            print(f"  {lines:5d}  {name}")
    for key in ("import_cycles", "import_cycles_all_imports", "import_cycles_all_imports_without_root"):
        print(f"{key}: {len(figures[key])}")
        for cycle in figures[key]:
            print("  " + " <-> ".join(cycle))
    print(f"imports_inside_functions: {len(figures['imports_inside_functions'])}")
    for item in figures["imports_inside_functions"]:
        print(f"  {item}")
    print(f"any_typed_parameters: {figures['any_typed_parameters']}")
    print(f"private_name_imports: {len(figures['private_name_imports'])}")
    for item in figures["private_name_imports"]:
        print(f"  {item}")
    for key in ("upward_imports", "modules_outside_the_layers"):
        print(f"{key}: {len(figures[key])}")
        for item in figures[key]:
            print(f"  {item}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
