"""One error tree: every exception and warning initrecipe defines lives in ``initrecipe/errors.py``,
is exported from ``initrecipe``, derives from ``RecipeError`` or ``RecipeWarning``, and appears in
the README's "Errors and warnings" tree with its builtin base and its place in the tree."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
from pathlib import Path

import pytest

import initrecipe
from initrecipe import errors

ROOT = Path(__file__).resolve().parent.parent

# Private control-flow exceptions that never reach a caller: each is caught (or, for the CLI's
# SIGTERM stand-in, turned into an exit status) inside the module that defines it.
PRIVATE = {
    "initrecipe.format.unpack._MapKeyError",  # a bad map key found while decoding -> RecipeFormatError
    "initrecipe.cli._Terminated",  # SIGTERM/SIGHUP raised as KeyboardInterrupt -> exit 128 + signal
}


def _package_modules() -> list[str]:
    names = [m.name for m in pkgutil.walk_packages(initrecipe.__path__, "initrecipe.")]
    return [n for n in names if not n.endswith("__main__")]  # __main__ runs the CLI on import


def _defined_exceptions() -> dict[str, type]:
    """Every exception or warning class defined at module level anywhere in the package."""
    found: dict[str, type] = {}
    for name in _package_modules():
        module = importlib.import_module(name)
        for attr, obj in vars(module).items():
            if inspect.isclass(obj) and issubclass(obj, BaseException) and obj.__module__ == name:
                found[f"{name}.{attr}"] = obj
    return found


def _public_errors() -> list[type]:
    return [obj for obj in vars(errors).values()
            if inspect.isclass(obj) and issubclass(obj, BaseException) and obj.__module__ == errors.__name__]


def _readme_tree() -> dict[str, tuple[str | None, str | None, str]]:
    """name -> (parent in the tree, builtin base in parentheses, meaning), from the README."""
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Errors and warnings\n", 1)[1].split("\n## ", 1)[0]
    block = section.split("```text\n", 1)[1].split("```", 1)[0]
    tree: dict[str, tuple[str | None, str | None, str]] = {}
    stack: list[str] = []
    for line in block.splitlines():
        match = re.fullmatch(r"([│├└─ ]*)(\w+)(?: \((\w+)\))?\s{2,}(\S.*)", line)
        assert match, f"README error tree: cannot read the line {line!r}"
        prefix, name, builtin, meaning = match.groups()
        depth = len(prefix) // 4
        assert len(prefix) == 4 * depth and depth <= len(stack), f"README error tree: bad indent in {line!r}"
        del stack[depth:]
        assert name not in tree, f"README error tree: {name} is listed twice"
        tree[name] = (stack[-1] if stack else None, builtin, meaning)
        stack.append(name)
    return tree


def test_every_exception_class_is_defined_in_errors_py():
    outside = sorted(q for q, obj in _defined_exceptions().items()
                     if obj.__module__ != errors.__name__ and q not in PRIVATE)
    assert outside == [], f"define these in initrecipe/errors.py (and export them): {outside}"
    for qualified in PRIVATE:
        module, _, attr = qualified.rpartition(".")
        assert hasattr(importlib.import_module(module), attr), f"{qualified} is gone: drop it from PRIVATE"


def test_no_module_redefines_or_shadows_an_error_class():
    for name in _package_modules():
        module = importlib.import_module(name)
        for attr, obj in vars(module).items():
            if inspect.isclass(obj) and issubclass(obj, BaseException) and obj.__module__ == errors.__name__:
                assert getattr(errors, attr, None) is obj, f"{name}.{attr} is not errors.{attr}"


def test_every_error_is_exported_and_in_the_tree():
    classes = _public_errors()
    assert sorted(c.__name__ for c in classes) == sorted(errors.__all__)
    for cls in classes:
        assert cls.__name__ in initrecipe.__all__, f"{cls.__name__} is not in initrecipe.__all__"
        assert getattr(initrecipe, cls.__name__) is cls
        assert issubclass(cls, (initrecipe.RecipeError, initrecipe.RecipeWarning)), cls
        assert not (issubclass(cls, initrecipe.RecipeError) and issubclass(cls, Warning)), cls
        assert inspect.getdoc(cls), f"{cls.__name__} has no docstring"


def test_the_readme_documents_the_whole_tree_as_the_code_has_it():
    tree = _readme_tree()
    classes = {c.__name__: c for c in _public_errors()}
    assert sorted(tree) == sorted(classes), "the README's error tree and initrecipe/errors.py list different classes"
    for name, (parent, builtin, meaning) in tree.items():
        cls = classes[name]
        ours = [b.__name__ for b in cls.__bases__ if b.__module__ == errors.__name__]
        builtins = [b.__name__ for b in cls.__bases__ if b.__module__ == "builtins"]
        assert ours == ([parent] if parent else []), f"README: {name} is under {parent}, the code says {ours}"
        assert builtins == ([builtin] if builtin else []), f"README: {name} ({builtin}), the code says {builtins}"
        assert len(meaning.split()) >= 3, f"README: {name} needs a one-line meaning"


@pytest.mark.parametrize("name, builtin", [
    ("OutputExistsError", FileExistsError),
    ("OutputWriteError", OSError),
    ("CheckpointError", ValueError),
    ("WorkLimitError", MemoryError),
    ("MemoryLimitError", MemoryError),
])
def test_moved_classes_keep_their_bases(name, builtin):
    cls = getattr(initrecipe, name)
    assert issubclass(cls, initrecipe.RecipeError) and issubclass(cls, builtin)
    if name.endswith("LimitError"):
        assert issubclass(cls, initrecipe.ResourceLimitError)
