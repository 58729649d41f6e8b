"""Waivers: a waived failure is reported as waived and passes the gate; expired and unused waivers are listed."""

from __future__ import annotations

import json
import shutil

import pytest

from tests.conftest import DATA, SUITES, verdicts_of, write_domain

WAIVERS = DATA / "waivers"


def _run(pytester: pytest.Pytester, xml_dir, waivers: str, *extra: str) -> tuple[pytest.RunResult, dict]:
    write_domain(xml_dir, "vm01", {"vda": "cache='unsafe'", "vdb": "cache='none'"})
    write_domain(xml_dir, "vm02", {"vdc": "io='uring' cache='none'"})
    out = pytester.path / "verdicts.json"
    result = pytester.runpytest(
        str(SUITES / "test_disks.py"), "--domain-xml", str(xml_dir), "-k", "cache or io_mode",
        "--waivers", str(WAIVERS / waivers), "--kvmio-json", str(out), "--junitxml", str(pytester.path / "junit.xml"),
        *extra,
    )
    return result, json.loads(out.read_text())


def test_a_waived_failure_is_waived_everywhere_and_the_expired_and_unused_waivers_are_listed(
    pytester: pytest.Pytester, xml_dir
) -> None:
    result, document = _run(pytester, xml_dir, "valid.yaml")
    # vm02/vdc io='uring' fails: its only waiver expired in 2020. vm01/vda cache='unsafe' is waived.
    # vm01's disks have no io attribute: disk-io-mode-valid does not concern them (no item).
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(failed=1, passed=2)
    assert result.parseoutcomes()["waived"] == 1
    verdicts = verdicts_of(pytester.path / "verdicts.json")
    waived = verdicts[("disk-cache-safe", "offline/vm01.xml:vm01/vda")]
    assert waived["outcome"] == "waived"
    assert waived["waiver"]["ticket"] == "CHG-1234"
    assert waived["waiver"]["target"] == "offline/vm01.xml:vm01/*"
    assert "cache='unsafe'" in waived["waiver"]["failure"]
    assert verdicts[("disk-io-mode-valid", "offline/vm02.xml:vm02/vdc")]["outcome"] == "failed"
    assert verdicts[("disk-io-mode-valid", "offline/vm02.xml:vm02/vdc")]["waiver"] is None
    assert document["totals"]["waived"] == 1
    waivers = document["waivers"]
    assert [w["targets"] for w in waivers["applied"]] == [["offline/vm01.xml:vm01/vda"]]
    assert [(w["rule"], w["would_waive"]) for w in waivers["expired"]] == [("disk-io-mode-valid", ["offline/vm02.xml:vm02/vdc"])]
    assert [w["rule"] for w in waivers["unmatched"]] == ["disk-multiqueue"]
    assert document["exitstatus"] == 1 and document["gate"]["passed"] is False
    result.stdout.fnmatch_lines(
        [
            "*kvmio waivers*",
            "waived   disk-cache-safe on offline/vm01.xml:vm01/* (until 2099-12-31, CHG-1234): offline/vm01.xml:vm01/vda*",
            "EXPIRED  disk-io-mode-valid on * (until 2020-01-31, PRB-77) [[]valid.yaml[[]1]] no longer applies;"
            " it would cover offline/vm02.xml:vm02/vdc",
            "unused   disk-multiqueue on offline/*:db*/* (until 2099-06-30) [[]valid.yaml[[]2]] matched no failure*",
        ]
    )
    assert result.stdout.lines[-1].startswith("kvmio: FAIL — 1 failed, 1 waived, 2 passed on offline lint;")
    junit = (pytester.path / "junit.xml").read_text()
    # xunit2 allows no per-testcase properties: the rule id and the waiver are in the skip message.
    assert "<property " not in junit
    assert 'message="disk-cache-safe: waived by valid.yaml[0]' in junit


def test_waived_failures_alone_pass_the_gate(pytester: pytest.Pytester, xml_dir) -> None:
    write_domain(xml_dir, "vm01", {"vda": "cache='unsafe'"})
    out = pytester.path / "verdicts.json"
    result = pytester.runpytest(
        str(SUITES / "test_disks.py"), "--domain-xml", str(xml_dir), "-k", "cache",
        "--waivers", str(WAIVERS / "valid.yaml"), "--kvmio-json", str(out),
    )
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["*1 waived*"])
    assert result.stdout.lines[-1].startswith("kvmio: PASS — 1 waived on offline lint")
    document = json.loads(out.read_text())
    assert document["exitstatus"] == 0 and document["gate"]["passed"] is True


def test_waivers_come_from_the_environment_too(pytester: pytest.Pytester, xml_dir, monkeypatch) -> None:
    write_domain(xml_dir, "vm01", {"vda": "cache='unsafe'"})
    monkeypatch.setenv("KVMIO_WAIVERS", str(WAIVERS / "valid.yaml"))
    result = pytester.runpytest(str(SUITES / "test_disks.py"), "--domain-xml", str(xml_dir), "-k", "cache")
    assert result.ret == pytest.ExitCode.OK


@pytest.mark.parametrize(
    "name, message",
    [
        ("bad-yaml.yaml", "ERROR: --waivers: *bad-yaml.yaml: not valid YAML at line 3, column 1: *"),
        ("bad-schema.yaml", "ERROR: --waivers: *bad-schema.yaml: [[]0]: 'expires' is a required property*"),
        ("bad-date.yaml", "ERROR: --waivers: *bad-date.yaml: [[]0].expires: '2026-02-30' is not a calendar date*"),
    ],
)
def test_a_malformed_waivers_file_is_a_usage_error_naming_file_and_path(
    pytester: pytest.Pytester, name: str, message: str
) -> None:
    shutil.copy(WAIVERS / name, pytester.path / name)
    pytester.makepyfile("def test_x(): pass")
    result = pytester.runpytest_subprocess("--waivers", name)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])
    assert "Traceback" not in result.stdout.str() + result.stderr.str()


def test_a_setup_error_is_never_waived(pytester: pytest.Pytester) -> None:
    (pytester.path / "w.yaml").write_text(
        "- {rule: host-kernel-min, target: '*', justification: host is being rebuilt this week, expires: 2099-01-01}\n"
    )
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.rule("host-kernel-min")
        def test_host(host): pass
        """
    )
    result = pytester.runpytest("--host", "ssh://nobody@127.0.0.1:9", "--waivers", "w.yaml")
    result.assert_outcomes(errors=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
