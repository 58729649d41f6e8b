"""JUnit with pytest's default family (xunit2): no warnings, a valid file, the rule id in every message.

kvmio's verdict record travels on the test report (an attribute), not in `user_properties`, so nothing
lands in per-testcase <properties> (xunit2 forbids them) and `record_property` is never needed; the same
record still reaches the controller from pytest-xdist workers.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from lxml import etree

from tests.conftest import DATA, SUITES, write_domain

SCHEMA = etree.XMLSchema(etree.parse(str(DATA / "junit" / "junit-10.xsd")))


def _domains(xml_dir: Path) -> None:
    write_domain(xml_dir, "vm01", {"vda": "cache='unsafe'", "vdb": "cache='none' io='native'"}, vcpus=2)
    write_domain(xml_dir, "vm02", {"vdc": "io='uring' cache='none'", "vdd": "cache='writeback' discard='unmap'"})


def test_xunit2_junit_is_valid_without_warnings_and_names_the_rules(pytester: pytest.Pytester, xml_dir: Path) -> None:
    _domains(xml_dir)
    junit = pytester.path / "junit.xml"
    result = pytester.runpytest(
        str(SUITES / "test_disks.py"), "--domain-xml", str(xml_dir), f"--junitxml={junit}",
        "-W", "error::pytest.PytestWarning", "-p", "no:cacheprovider", "-p", "no:benchmark",  # it warns under xdist
    )
    output = "\n".join(result.outlines + result.errlines)
    assert result.ret == pytest.ExitCode.TESTS_FAILED, output[-2000:]
    assert "record_property is incompatible" not in output and "PytestWarning" not in output
    tree = etree.parse(str(junit))
    assert SCHEMA.validate(tree), SCHEMA.error_log
    assert tree.find(".//testcase/properties") is None
    failures = tree.findall(".//testcase/failure")
    skips = tree.findall(".//testcase/skipped")
    assert failures and skips
    rules = {"disk-cache-safe", "disk-io-mode-valid", "disk-iothread-assigned", "disk-native-not-sparse", "disk-discard-unmap"}
    for element in failures + skips:
        assert element.get("message", "").split(":")[0] in rules | {"disk-multiqueue", "disk-io-uring-supported"}, element.get("message")
    unsafe = [f.get("message") for f in failures if f.get("message", "").startswith("disk-cache-safe:")]
    assert unsafe == ["disk-cache-safe: offline/vm01.xml:vm01/vda: cache='unsafe' ignores guest flushes; use cache='none' "
                      f"(or writeback where guests flush) [{xml_dir / 'vm01.xml'}]"]


def test_verdicts_from_xdist_workers_equal_a_serial_run(pytester: pytest.Pytester, xml_dir: Path) -> None:
    pytest.importorskip("xdist")
    _domains(xml_dir)
    common = [str(SUITES / "test_disks.py"), "--domain-xml", str(xml_dir), "-p", "no:cacheprovider"]
    serial = pytester.runpytest_subprocess(*common, "--kvmio-json", "serial.json", "--junitxml=serial.xml")
    parallel = pytester.runpytest_subprocess(*common, "-n", "2", "--kvmio-json", "xdist.json", "--junitxml=xdist.xml")
    assert serial.ret == parallel.ret == pytest.ExitCode.TESTS_FAILED

    def verdicts(name: str) -> dict[tuple[str, str], tuple[str, str, str | None]]:
        document = json.loads((pytester.path / name).read_text())
        return {(v["rule"], v["target"]): (v["outcome"], v["message"], v["source"]) for v in document["verdicts"]}

    assert verdicts("xdist.json") == verdicts("serial.json")
    assert json.loads((pytester.path / "xdist.json").read_text())["rules"] == json.loads(
        (pytester.path / "serial.json").read_text())["rules"]
    assert SCHEMA.validate(etree.parse(str(pytester.path / "xdist.xml")))
