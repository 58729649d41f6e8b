"""Dependencies point down: a module imports only from its own layer or the layers below it.

model (and files, errors) → collect → settings and the run configuration → perf → catalogue → the verdict record →
session state → reporters → the pytest glue (plugin, fixtures, markers, options, the perf suite's helpers) → commands (cli, lab). Imports inside
functions count too: they may only be there to keep an optional library unloaded, and say so.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import REPO

PACKAGE = REPO / "pytest_kvmio"
#: Longest prefix wins.
LAYERS = {
    "pytest_kvmio": 0,  # __init__: the version only
    "pytest_kvmio.errors": 0,
    "pytest_kvmio.files": 0,  # reading and writing kvmio's files: atomic writes, YAML against a schema, the ini file
    "pytest_kvmio.model": 0,  # what the XML says
    "pytest_kvmio.facts": 1,  # what the hosts say
    "pytest_kvmio.settings": 2,
    "pytest_kvmio.runconfig": 2,  # the settings of a run, resolved once, and its mode
    "pytest_kvmio.perf": 3,
    "pytest_kvmio.verdict": 4,  # what a rule is (catalogue) and what a verdict is (record)
    "pytest_kvmio.fix": 4,
    "pytest_kvmio.history": 4,  # the results history: store, change points, series (beside the catalogue; neither imports the other)  # remedies per rule: the catalogue's applicability, the model and host facts
    "pytest_kvmio.state": 6,
    "pytest_kvmio.report": 7,
    "pytest_kvmio.plugin": 8,  # pytest's glue: hooks, fixtures, markers, options, xdist groups, perf and A/B suites
    # suites/, installed as pytest_kvmio.suites: pytest runs the rules; kvmio lint imports only the (docstring) package
    # to find them, so it counts as the bottom layer (its rule modules, outside pytest_kvmio/, are not checked here).
    "pytest_kvmio.suites": 0,
    "pytest_kvmio.cli": 9,
    "pytest_kvmio.lab": 9,
}


def layer(module: str) -> int:
    best = max((p for p in LAYERS if module == p or module.startswith(p + ".")), key=len)
    return LAYERS[best]


def modules() -> list[tuple[str, Path]]:
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(REPO).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out.append((name, path))
    return out


def imports_of(path: Path, name: str) -> list[tuple[str, int, bool]]:
    """Return (imported module, line, inside a function) for each import of a pytest_kvmio module."""
    tree = ast.parse(path.read_text())
    nested = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
              for n in ast.walk(f) if n is not f}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("pytest_kvmio"):
            targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            found += [(t, node.lineno, id(node) in nested) for t in targets if t in dict(modules()) or t == node.module]
        elif isinstance(node, ast.Import):
            found += [(a.name, node.lineno, id(node) in nested) for a in node.names if a.name.startswith("pytest_kvmio")]
    return found


@pytest.mark.parametrize(("name", "path"), modules(), ids=[n for n, _ in modules()])
def test_imports_point_down(name: str, path: Path) -> None:
    own = layer(name)
    upward = [f"line {line}: {target} (layer {layer(target)})" for target, line, _ in imports_of(path, name)
              if layer(target) > own]
    assert not upward, f"{name} (layer {own}) imports from above: {upward}"


def test_imports_inside_functions_are_rare_and_say_why() -> None:
    inside = [(path, line) for name, path in modules() for _, line, nested in imports_of(path, name) if nested]
    assert len(inside) <= 4, inside
    for path, line in inside:
        lines = path.read_text().splitlines()
        around = " ".join(lines[max(0, line - 3):line])
        assert "#" in around, f"{path}:{line}: say why this import is inside a function"
