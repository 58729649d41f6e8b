"""The repository's test modules and the suites can run in one pytest process."""

from __future__ import annotations

from tests.conftest import REPO


def test_no_test_module_shares_its_file_name_with_a_suite() -> None:
    """pytester runs suites/ in-process: a tests/test_x.py beside suites/test_x.py makes 'import file mismatch'."""
    suites = {p.name for p in (REPO / "suites").glob("test_*.py")}
    tests = {p.name for p in (REPO / "tests").glob("test_*.py")}
    assert not suites & tests, f"rename these tests/ modules: {sorted(suites & tests)}"


def test_the_architecture_page_names_every_module() -> None:
    """docs/architecture.md is the map: every module of the package appears in its layer list, in its folder's line."""
    import ast
    import re

    page = (REPO / "docs" / "architecture.md").read_text()
    layers = page.split("## The layers (bottom to top)", 1)[1].split("## From target to report", 1)[0]
    entries: dict[str, str] = {}  # folder (or "" for top-level modules) -> the text describing it
    folder = ""
    for line in layers.splitlines():
        head = re.match(r"^      (\S+)", line)
        if head:
            folder = head.group(1).rstrip("/") if head.group(1).endswith("/") else ""
            if not folder:
                entries.setdefault("", "")
                entries[""] += " " + line
                continue
        entries[folder] = entries.get(folder, "") + " " + line
    missing = []
    for path in sorted((REPO / "pytest_kvmio").rglob("*.py")):
        rel = path.relative_to(REPO / "pytest_kvmio")
        body = ast.parse(path.read_text()).body
        if rel.name == "__init__.py" and len(rel.parts) > 1 and all(isinstance(n, ast.Expr) for n in body):
            continue  # a package's docstring only: the folder's line says what it holds
        where = rel.parts[0] if len(rel.parts) > 1 else ""
        if not re.search(rf"(?<![\w/]){re.escape(rel.name)}", entries.get(where, "")):
            missing.append(str(rel))
    assert not missing, f"docs/architecture.md does not name: {missing}"
