"""Golden verdicts: refactoring changes no verdict (issue 19).

Every verdict of the three domain XML corpora — rule, target, outcome, message and, for a failure, the summary of
its fix — in each run is stored under tests/data/golden/. A change that moves code around must leave them equal; a
change that means to alter verdicts regenerates them (`python3 tests/test_golden_verdicts.py`) and says why.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
GOLDEN = REPO / "tests" / "data" / "golden"
CURRENT = "kernel=6.1,qemu=7.2,libvirt=9.0"
#: (name, corpus, --assume or None)
RUNS = [
    ("domains-current", "tests/data/domains", CURRENT),
    ("domains-none", "tests/data/domains", None),
    ("domains-old-host", "tests/data/domains", "kernel=5.4,qemu=4.2,libvirt=6.0"),
    ("libvirt-qemuxml-current", "tests/data/libvirt-qemuxml", CURRENT),
    ("libvirt-qemuxml-none", "tests/data/libvirt-qemuxml", None),
    ("domains-world-current", "tests/data/domains-world", CURRENT),
    ("domains-world-none", "tests/data/domains-world", None),
]


def verdicts(corpus: str, assume: str | None, out: Path) -> list[list[Any]]:
    """Lint a corpus in a subprocess; return its verdicts as sorted [rule, target, outcome, message, fix summary]."""
    args = [sys.executable, "-m", "pytest", str(REPO / "suites"), "--domain-xml", str(REPO / corpus),
            "--kvmio-json", str(out), "-p", "no:cacheprovider", "-m", "not perf", "-q", f"--rootdir={REPO}"]
    if assume:
        args += ["--assume", assume]
    subprocess.run(args, capture_output=True, text=True, timeout=600, check=False, cwd=REPO)
    document = json.loads(out.read_text())
    rows = []
    for v in document["verdicts"]:
        message = str(v["message"]).replace(str(REPO), "<repo>")
        fix = (v.get("fix") or {}).get("summary")
        rows.append([v["rule"], v["target"], v["outcome"], message, fix])
    return sorted(rows)


@pytest.mark.parametrize(("name", "corpus", "assume"), RUNS, ids=[r[0] for r in RUNS])
def test_verdicts_equal_the_golden_ones(tmp_path: Path, name: str, corpus: str, assume: str | None) -> None:
    got = verdicts(corpus, assume, tmp_path / "v.json")
    want = json.loads((GOLDEN / f"{name}.json").read_text())
    missing = [r for r in want if r not in got]
    extra = [r for r in got if r not in want]
    assert not missing and not extra, (
        f"{name}: {len(missing)} golden verdict(s) changed or gone, {len(extra)} new:\n"
        + "\n".join(f"  - {r}" for r in missing[:15]) + "\n" + "\n".join(f"  + {r}" for r in extra[:15])
    )


if __name__ == "__main__":  # regenerate (only for a change meant to alter verdicts; say why in its commit)
    import tempfile

    GOLDEN.mkdir(parents=True, exist_ok=True)
    for name, corpus, assume in RUNS:
        with tempfile.TemporaryDirectory() as tmp:
            rows = verdicts(corpus, assume, Path(tmp) / "v.json")
        (GOLDEN / f"{name}.json").write_text(json.dumps(rows, indent=0, ensure_ascii=False) + "\n")
        print(f"{name}: {len(rows)} verdicts")
