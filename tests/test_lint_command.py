"""`kvmio lint`: the suites shipped inside the package (pytest_kvmio.suites), run from anywhere, give a checkout's verdicts.

Both install modes: the editable one (this checkout, `pip install -e .` by scripts/setup.sh) maps
pytest_kvmio.suites onto suites/; a normal install into a fresh venv outside the checkout ships a copy of
suites/ inside site-packages/pytest_kvmio/, where a rule's failed assertion must still be a *failed* verdict.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from pytest_kvmio.cli import build_parser
from pytest_kvmio.cli.lint import pytest_args
from pytest_kvmio.verdict import record
from tests.conftest import DATA, REPO, SUITES

ASSUME = "kernel=6.1,qemu=7.2,libvirt=9.0"
DOMAINS = DATA / "domains"
#: What a normal install reads from the checkout is copied (pip would write build/ and *.egg-info into the
#: checkout, and a build/ left there ships modules deleted since); what it never reads is left behind.
NOT_BUILD_INPUTS = shutil.ignore_patterns(
    ".git", ".kvmio", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache", ".mypy_cache", ".benchmarks",
    "node_modules", "test-results", "allure-results", "allure-report", "kvmio-out",
)

Verdicts = set[tuple[str, str, str]]


def verdict_set(path: Path) -> Verdicts:
    """Return the (rule, target, outcome) of every verdict in a --kvmio-json summary."""
    return {(v["rule"], v["target"], v["outcome"]) for v in json.loads(path.read_text())["verdicts"]}


def run(argv: list[str], cwd: Path, timeout: int = 120) -> subprocess.CompletedProcess[str]:
    """Run a command in `cwd`, without PYTHONPATH (so an installed kvmio is the one imported)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)


def lint(*args: str, cwd: Path, kvmio: list[str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run `kvmio lint ARGS` in `cwd`: this checkout's (editable install) unless `kvmio` names another command."""
    return run([*(kvmio or [sys.executable, "-m", "pytest_kvmio.cli"]), "lint", *args], cwd)


@pytest.fixture(scope="module")
def checkout_verdicts(tmp_path_factory: pytest.TempPathFactory) -> tuple[int, Verdicts]:
    """The exit code and verdicts of `pytest suites/ --domain-xml=tests/data/domains` run from this checkout."""
    out = tmp_path_factory.mktemp("checkout") / "verdicts.json"
    done = run([sys.executable, "-m", "pytest", str(SUITES), "--domain-xml", str(DOMAINS), "--assume", ASSUME,
                "--kvmio-json", str(out), "-p", "no:cacheprovider", "-q"], REPO)
    assert out.exists(), f"pytest suites/ wrote no verdicts (exit {done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr}"
    return done.returncode, verdict_set(out)


def test_lint_from_another_directory_gives_the_checkouts_verdicts_and_exit_code(
    tmp_path: Path, checkout_verdicts: tuple[int, Verdicts]
) -> None:
    done = lint(str(DOMAINS), "--assume", ASSUME, "--json", "out.json", cwd=tmp_path)
    code, verdicts = checkout_verdicts
    assert (tmp_path / "out.json").exists(), done.stdout[-3000:] + done.stderr
    assert verdict_set(tmp_path / "out.json") == verdicts
    assert done.returncode == code == 1, done.stdout[-3000:] + done.stderr
    assert not (tmp_path / ".pytest_cache").exists()


def test_the_editable_install_maps_the_suites_package_onto_the_checkouts_suites(tmp_path: Path) -> None:
    done = run([sys.executable, "-c", "import pytest_kvmio.suites as s; print(s.__file__)"], tmp_path)
    assert done.returncode == 0, f"{done.stderr}\nrun `pip install -e .` again: the install predates pytest_kvmio.suites"
    assert Path(done.stdout.strip()) == SUITES / "__init__.py"


def test_lint_passes_rule_json_and_the_arguments_after_the_double_dash_to_pytest(tmp_path: Path) -> None:
    done = lint(str(DOMAINS), "--assume", ASSUME, "--rule", "disk-cache-safe", "--json", "one.json", cwd=tmp_path)
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr
    assert {rule for rule, _, _ in verdict_set(tmp_path / "one.json")} == {"disk-cache-safe"}
    done = lint(str(DOMAINS), "--assume", ASSUME, "--json", "first.json", "--", "-x", cwd=tmp_path)
    outcomes = [outcome for _, _, outcome in verdict_set(tmp_path / "first.json")]
    assert done.returncode == 1 and outcomes.count("failed") == 1, done.stdout[-3000:] + done.stderr


def test_lint_builds_pytests_command_line() -> None:
    args = build_parser().parse_args(
        ["lint", "a.xml", "dir/", "--assume", ASSUME, "--rule", "r1", "--rule", "r2", "--json", "v.json", "--", "-k", "b"]
    )
    assert (args.paths, args.pytest_args) == (["a.xml", "dir/"], ["-k", "b"])
    argv = pytest_args(args, Path("/somewhere"))
    assert argv[0] == str(SUITES) and "--rootdir=/somewhere" in argv and "no:cacheprovider" in argv
    assert f"--ignore={SUITES / 'test_perf.py'}" in argv
    tail = ["--domain-xml=a.xml", "--domain-xml=dir/", f"--assume={ASSUME}", "--kvmio-rule=r1", "--kvmio-rule=r2",
            "--kvmio-json=v.json", "-k", "b"]
    assert argv[-len(tail):] == tail


def test_lint_of_a_path_that_does_not_exist_is_a_usage_error_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-templates"
    done = lint(str(missing), cwd=tmp_path)
    assert done.returncode == 4, done.stdout[-3000:] + done.stderr
    assert "ERROR" in done.stderr and str(missing) in done.stderr, done.stderr
    assert "Traceback" not in done.stdout + done.stderr


def test_lint_without_a_path_is_a_usage_error(tmp_path: Path) -> None:
    done = lint(cwd=tmp_path)
    assert done.returncode == 4 and "ERROR: kvmio lint: the following arguments are required: PATH" in done.stderr


def test_lint_help_names_its_arguments(tmp_path: Path) -> None:
    done = lint("--help", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    for word in ("PATH", "--assume", "--rule", "--json", "--"):
        assert word in done.stdout, word


def _call_raising(exc: BaseException, filename: str) -> pytest.CallInfo[Any]:
    """A failed call whose exception is raised by code that says it lives in `filename`."""
    code = compile("raise exc", filename, "exec")
    return pytest.CallInfo.from_call(lambda: exec(code, {"exc": exc}), when="call")


@pytest.mark.parametrize(("where", "exc", "is_failure"), [
    ("suites/test_disks.py", AssertionError("rule"), True),  # the suites installed in the package: verdicts
    ("elsewhere/test_own_rule.py", AssertionError("rule"), True),  # a project's own rule
    ("model/domain.py", AssertionError("bug"), False),  # kvmio's own code: could not judge
    ("report/summary.py", AssertionError("bug"), False),
    ("suites/test_disks.py", RuntimeError("libvirt"), False),
])
def test_assertions_in_the_shipped_suites_are_rule_failures_and_in_kvmios_own_code_errors(
    where: str, exc: BaseException, is_failure: bool
) -> None:
    package = Path(record.__file__).resolve().parent.parent
    path = package / where if not where.startswith("elsewhere") else REPO / "tests" / where
    assert record.is_rule_failure(_call_raising(exc, str(path))) is is_failure


def test_pyproject_lists_every_package_and_maps_the_suites() -> None:
    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    folders = {".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "pytest_kvmio").rglob("*.py")}
    assert set(setuptools["packages"]) == folders | {"pytest_kvmio.suites"}, "list the new package in pyproject.toml"
    assert setuptools["package-dir"]["pytest_kvmio.suites"] == "suites"


@pytest.mark.slow
def test_a_normal_install_in_a_fresh_venv_lints_with_the_shipped_suites(
    tmp_path: Path, checkout_verdicts: tuple[int, Verdicts]
) -> None:
    """The acceptance test: pip install (not editable) into a venv outside the checkout, then `kvmio lint` there."""
    source = tmp_path / "source"
    shutil.copytree(REPO, source, ignore=NOT_BUILD_INPUTS)
    venv = tmp_path / "venv"
    # No pip of its own: Python's bundled setuptools would shadow the machine's (scripts/setup.sh installs the
    # pyproject's build requirement) and could not build a wheel. The machine's pip installs into this venv.
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    work = tmp_path / "work"
    work.mkdir()
    installed = run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-index",
                     "--no-build-isolation", str(source)], work, timeout=300)
    assert installed.returncode == 0, f"pip install (offline: dependencies come from the system):\n{installed.stderr}"

    where = run([str(python), "-c", "import json, pytest_kvmio, pytest_kvmio.suites as s; "
                 "print(json.dumps([pytest_kvmio.__file__, s.__file__]))"], work)
    assert where.returncode == 0, where.stderr
    package, suites = (Path(p).resolve().parent for p in json.loads(where.stdout))
    for folder in (package, suites):
        assert folder.is_relative_to(venv.resolve()) and not folder.is_relative_to(REPO), folder
    assert suites == package / "suites" and (suites / "test_disks.py").is_file()

    files_before = sorted(package.rglob("*"))
    done = lint(str(DOMAINS), "--assume", ASSUME, "--json", "out.json", cwd=work, kvmio=[str(venv / "bin" / "kvmio")])
    assert (work / "out.json").exists(), done.stdout[-3000:] + done.stderr
    verdicts = verdict_set(work / "out.json")
    code, expected = checkout_verdicts
    assert verdicts == expected
    assert done.returncode == code == 1, done.stdout[-3000:] + done.stderr
    outcomes = {outcome for _, _, outcome in verdicts}
    assert "failed" in outcomes and "error" not in outcomes, "a rule's assertion in the installed suites must fail, not error"
    assert sorted(package.rglob("*")) == files_before, "kvmio lint wrote into the installed package"
