"""The package's shape, checked: the numpy core imports without llama-cpp-python, no module
imports another that imports it back (function-level imports included), the public names are
few, and the extension's type stub names exactly what the extension has."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import lingalign

PACKAGE = Path(lingalign.__file__).parent
# numpy only: reading, fitting and writing transforms never needs the model runtime
CORE_MODULES = ("errors", "model", "layer", "transform", "fit", "metrics", "captures", "contrastive", "experts",
                "controlvector", "gguf_io", "data", "sites", "models", "stats", "tasks", "plots", "progress", "blas",
                "language_check")


@pytest.mark.parametrize("module", CORE_MODULES)
def test_core_modules_import_without_llama_cpp(module):
    code = f"import sys, lingalign.{module}; assert 'llama_cpp' not in sys.modules, sorted(m for m in sys.modules if 'llama' in m)"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_the_package_loads_the_llama_side_on_first_use():
    code = ("import sys, lingalign; assert 'llama_cpp' not in sys.modules; lingalign.Transform; "
            "assert 'llama_cpp' not in sys.modules; lingalign.attach; assert 'llama_cpp' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def _package_imports(path: Path) -> set[str]:
    """Modules of the package that a module imports, anywhere in it (function bodies too)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                out.add(node.module.split(".")[0])
            else:
                out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("lingalign."):
            out.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            out.update(a.name.split(".")[1] for a in node.names if a.name.startswith("lingalign."))
    return out


def test_no_import_cycles():
    modules = {p.stem: p for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    for sub in PACKAGE.glob("*/__init__.py"):
        modules[sub.parent.name] = sub
    graph = {name: {m for m in _package_imports(path) if m in modules and m != name} for name, path in modules.items()}
    for sub in PACKAGE.glob("*/*.py"):  # a subpackage's modules count as the subpackage
        if sub.name != "__init__.py":
            graph[sub.parent.name] |= {m for m in _package_imports(sub) if m in modules and m != sub.parent.name}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(name: str) -> None:
        state[name] = 1
        stack.append(name)
        for dep in sorted(graph[name]):
            if state.get(dep) == 1:
                cycle = stack[stack.index(dep):] + [dep]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if dep not in state:
                visit(dep)
        stack.pop()
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name)


def test_public_names_are_few_and_all_resolve():
    assert len(lingalign.__all__) <= 12
    for name in lingalign.__all__:
        assert getattr(lingalign, name) is not None


def _stub_names(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, ast.ImportFrom) and node.level == 1:
            names.update(a.asname or a.name for a in node.names)
    return names


def _members(stub: Path, cls: str) -> set[str]:
    tree = ast.parse(stub.read_text(encoding="utf-8"))
    node = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == cls)
    out = set()
    for item in node.body:
        if isinstance(item, ast.FunctionDef) and (not item.name.startswith("_") or item.name == "__init__"):
            out.add(item.name)
        elif isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
            out.add(item.target.id)
    return out - {"__init__"}


def test_core_stub_names_every_public_name_of_the_extension():
    from lingalign import _core

    def public(obj: object) -> set[str]:
        return {n for n in dir(obj) if not n.startswith("_")}

    assert _stub_names(PACKAGE / "_core.pyi") == public(_core)
    assert _stub_names(PACKAGE / "_core_testing.pyi") == public(_core.testing)
    for stub, module in (("_core.pyi", _core), ("_core_testing.pyi", _core.testing)):
        tree = ast.parse((PACKAGE / stub).read_text(encoding="utf-8"))
        for cls in (n.name for n in tree.body if isinstance(n, ast.ClassDef)):
            inherited = public(ValueError) if issubclass(getattr(module, cls), BaseException) else set()
            assert _members(PACKAGE / stub, cls) == public(getattr(module, cls)) - inherited, cls
