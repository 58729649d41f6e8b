"""The gate: exit 0 only with no unwaived failure, something ran, and (with the flag) nothing inconclusive."""

from __future__ import annotations

import json

import pytest

from tests.conftest import write_domain

INCONCLUSIVE = """
import pytest

@pytest.mark.rule("site-randread-4k")
def test_perf(disk, kvmio_record):
    \"\"\"Random reads reach the class floor.\"\"\"
    kvmio_record("kvmio_outcome", "inconclusive")
    pytest.skip("randread-4k iops: samples straddle the floor; rerun on a quieter system")

@pytest.mark.rule("disk-cache-safe")
def test_ok(disk):
    pass
"""


def test_failures_fail_the_gate_and_the_ticket_line_is_last(pytester: pytest.Pytester, xml_dir) -> None:
    write_domain(xml_dir, "vm01", {"vda": ""})
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.rule("disk-cache-safe")
        def test_fails(disk):
            assert False, f"{disk.id}: broken"

        def test_passes(): pass
        """
    )
    out = pytester.path / "v.json"
    result = pytester.runpytest("--domain-xml", str(xml_dir), "--assume", "kernel=6.1,qemu=7.2,libvirt=9.0",
                                "--kvmio-json", str(out))
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    assert result.stdout.lines[-1] == (
        f"kvmio: FAIL — 1 failed, 1 passed on offline lint (assumed kernel 6.1, QEMU 7.2, libvirt 9.0); verdicts: {out}"
    )
    assert json.loads(out.read_text())["gate"]["counts"]["failed"] == 1


def test_no_tests_collected_fails_the_gate(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def helper(): pass")
    result = pytester.runpytest("--kvmio-json", "v.json")
    assert result.ret == pytest.ExitCode.NO_TESTS_COLLECTED
    assert result.stdout.lines[-1].startswith("kvmio: FAIL — no tests collected")


def test_everything_deselected_fails_the_gate(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_a(): pass")
    result = pytester.runpytest("-k", "nothing_matches", "--kvmio-json", "v.json")
    assert result.ret != 0
    assert "kvmio: FAIL — no tests collected" in result.stdout.lines[-1]


def test_runs_that_do_not_use_kvmio_keep_pytests_behaviour(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_a(): pass")
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.OK
    assert not any(line.startswith("kvmio:") for line in result.stdout.lines)


def test_collect_only_is_not_gated(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_a(): pass")
    assert pytester.runpytest("--collect-only").ret == pytest.ExitCode.OK


@pytest.mark.parametrize("how", ["flag", "env"])
def test_inconclusive_fails_only_with_the_flag(pytester: pytest.Pytester, xml_dir, monkeypatch, how: str) -> None:
    write_domain(xml_dir, "vm01", {"vda": ""})
    pytester.makepyfile(INCONCLUSIVE)
    out = pytester.path / "v.json"
    args = ["--domain-xml", str(xml_dir), "--kvmio-json", str(out)]
    result = pytester.runpytest(*args)
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["*1 passed, 1 inconclusive*"])
    assert result.stdout.lines[-1].startswith("kvmio: PASS — 1 inconclusive, 1 passed")
    assert {v["outcome"] for v in json.loads(out.read_text())["verdicts"]} == {"inconclusive", "passed"}
    if how == "flag":
        args.append("--kvmio-fail-inconclusive")
    else:
        monkeypatch.setenv("KVMIO_FAIL_INCONCLUSIVE", "1")
    result = pytester.runpytest(*args)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    assert result.stdout.lines[-1].startswith(
        "kvmio: FAIL — inconclusive measurements (--kvmio-fail-inconclusive); 1 inconclusive, 1 passed"
    )
    assert json.loads(out.read_text())["exitstatus"] == 1


def test_a_bad_fail_inconclusive_environment_value_is_a_usage_error(pytester: pytest.Pytester, monkeypatch) -> None:
    monkeypatch.setenv("KVMIO_FAIL_INCONCLUSIVE", "maybe")
    pytester.makepyfile("def test_a(): pass")
    result = pytester.runpytest_subprocess()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: KVMIO_FAIL_INCONCLUSIVE='maybe': expected 1/0*"])
