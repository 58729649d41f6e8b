"""What keeps a fleet cheap: pairs no rule concerns make no item at all, and failures print one line each."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.conftest import SUITES, write_domain


def _collected(output: list[str]) -> int:
    found = [int(m.group(1)) for line in output for m in [re.search(r"collected (\d+) items?", line)] if m]
    assert found, "no 'collected N items' line"
    return found[-1]


def test_not_applicable_pairs_are_never_made_into_items(pytester: pytest.Pytester, xml_dir: Path) -> None:
    """Offline, guest and perf rules concern no disk: they make no item per disk, however many disks, yet are counted.

    pytest still makes one placeholder per test function none of whose pairs apply (an empty parameter set),
    which kvmio drops: their number does not grow with the disks.
    """
    extra = {}
    for count in (1, 3):
        for i in range(count):
            write_domain(xml_dir, f"vm{i:02d}", {"vda": "cache='none' io='native'", "vdb": "cache='unsafe'"})
        out = pytester.path / f"verdicts-{count}.json"
        result = pytester.runpytest(str(SUITES), "--domain-xml", str(xml_dir), "--kvmio-json", str(out),
                                    "-p", "no:cacheprovider")
        summary = json.loads(out.read_text())
        ran = sum(summary["totals"][o] for o in ("passed", "failed", "error", "skipped", "inconclusive", "waived"))
        assert ran == len(summary["verdicts"]) > 0
        extra[count] = _collected(result.outlines) - ran
        disks = 2 * count
        for rule in ("guest-scheduler-none", "guest-queues-active", "guest-irq-spread"):
            assert summary["rules"][rule] == {"not_applicable": disks}, rule
        profiles = [r for r in summary["rules"]
                    if r.startswith("perf-") and r not in ("perf-baseline", "perf-host-cpu", "perf-history")]
        assert profiles and all(summary["rules"][r] == {"not_applicable": disks} for r in profiles)
        for rule in ("perf-baseline", "perf-host-cpu"):  # one pair per disk and profile
            assert summary["rules"][rule] == {"not_applicable": disks * len(profiles)}, rule
        # perf-history: one pair per disk, profile and judged metric (iops at least).
        history = summary["rules"]["perf-history"]
        assert set(history) == {"not_applicable"} and history["not_applicable"] % disks == 0
        assert history["not_applicable"] >= disks * len(profiles)
    assert extra[1] == extra[3], f"items made beyond those that ran: {extra}"


def test_a_kvmio_run_prints_each_failure_on_one_line_unless_tb_is_given(pytester: pytest.Pytester, xml_dir: Path) -> None:
    write_domain(xml_dir, "vm01", {"vdb": "cache='unsafe'"})
    args = (str(SUITES / "test_disks.py"), "--domain-xml", str(xml_dir), "-p", "no:cacheprovider", "-k", "cache_mode")
    short = pytester.runpytest(*args)
    short.assert_outcomes(failed=1)
    short.stdout.fnmatch_lines(["*test_disks.py:*: disk-cache-safe: offline/vm01.xml:vm01/vdb: cache='unsafe' ignores guest flushes*"])
    assert not any(line.startswith(">") for line in short.outlines), "no source lines of the rule"
    full = pytester.runpytest(*args, "--tb=short")
    full.assert_outcomes(failed=1)
    assert any("assert disk.effective_cache != \"unsafe\"" in line or line.startswith("    assert") for line in full.outlines)
