"""The repository's test modules and the suites can run in one pytest process."""

from __future__ import annotations

from tests.conftest import REPO


def test_no_test_module_shares_its_file_name_with_a_suite() -> None:
    """pytester runs suites/ in-process: a tests/test_x.py beside suites/test_x.py makes 'import file mismatch'."""
    suites = {p.name for p in (REPO / "suites").glob("test_*.py")}
    tests = {p.name for p in (REPO / "tests").glob("test_*.py")}
    assert not suites & tests, f"rename these tests/ modules: {sorted(suites & tests)}"
