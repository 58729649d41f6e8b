"""Hostile and malformed inputs (tests/data/bad/cases.yaml) through the real entry points.

Each case runs `pytest` (in-process, as pytester does) or `kvmio` (its console script's main()) on one
input and asserts the exit code, that the message names the input and what is wrong, that no traceback
or INTERNALERROR came out, that nothing was written outside the case's output directory and that the
shell syntax in the inputs ran nothing (no file named kvmio-pwned appeared anywhere).
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import DATA, REPO, SUITES

BAD = DATA / "bad"
MARKER = "kvmio-pwned"


@dataclass(frozen=True)
class Case:
    id: str
    run: list[str]
    exit: int
    says: list[str]
    input: str | None = None
    env: dict[str, str] = field(default_factory=dict)


def load_cases() -> list[Case]:
    return [Case(**entry) for entry in yaml.safe_load((BAD / "cases.yaml").read_text(encoding="utf-8"))]


CASES = load_cases()


def snapshot(root: Path, skip: Path | None = None) -> dict[str, tuple[int, int]]:
    """Return every file under `root` (but not under `skip`) with its size and modification time."""
    files = {}
    for dirpath, dirnames, filenames in os.walk(root):
        if skip is not None and Path(dirpath) == skip.parent:
            dirnames[:] = [d for d in dirnames if Path(dirpath, d) != skip]
        for name in filenames:
            path = Path(dirpath, name)
            if path.is_symlink():
                continue
            stat = path.stat()
            files[str(path.relative_to(root))] = (stat.st_size, stat.st_mtime_ns)
    return files


def markers_anywhere(*roots: Path) -> list[Path]:
    """Return files named kvmio-pwned directly in `roots` or in the work directory's tree."""
    found = [root / MARKER for root in roots if (root / MARKER).exists()]
    return found + [p for p in roots[0].rglob(MARKER)]


def run_kvmio(args: list[str]) -> tuple[int, str]:
    """Run `kvmio ARGS` in-process; return the exit code and stdout + stderr. Any exception is a traceback."""
    from pytest_kvmio.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(args)
        except SystemExit as exc:  # argparse's own errors
            code = exc.code if isinstance(exc.code, int) else 1
    return code, out.getvalue() + err.getvalue()


def test_there_are_at_least_30_bad_inputs_and_each_is_used() -> None:
    files = sorted(p.name for p in BAD.iterdir() if p.name not in ("cases.yaml", "README.md"))
    used = {c.input for c in CASES if c.input}
    assert len(files) >= 30, files
    assert set(files) <= used, f"inputs no case feeds: {sorted(set(files) - used)}"
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    work = pytester.path
    out = work / "out"
    out.mkdir()
    values = {
        "input": str(BAD / case.input) if case.input else "",
        "suites": str(SUITES),
        "data": str(DATA),
        "out": str(out),
    }
    args = []
    for arg in case.run[1:]:
        for key, value in values.items():
            arg = arg.replace("{" + key + "}", value)
        args.append(arg)
    for name, value in case.env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(work)
    before_work = snapshot(work, skip=out)
    before_data = snapshot(DATA)
    tmp = Path(tempfile.gettempdir())

    if case.run[0] == "pytest":
        result = pytester.runpytest("-p", "no:cacheprovider", *args)
        code, output = int(result.ret), "\n".join(result.outlines + result.errlines)
    else:
        code, output = run_kvmio(args)

    shown = f"\n--- output of {case.id} ---\n{output[-4000:]}"
    assert "Traceback (most recent call last)" not in output, shown
    assert "INTERNALERROR" not in output, shown
    assert code == case.exit, f"exit {code}, expected {case.exit}{shown}"
    for text in case.says:
        assert text in output, f"{text!r} not in the output{shown}"
    if case.exit == 4:
        assert "ERROR: " in output, shown
    assert snapshot(work, skip=out) == before_work, "files written outside the output directory"
    assert snapshot(DATA) == before_data, "the inputs changed"
    assert not markers_anywhere(work, tmp, REPO), "shell syntax in an input ran"
