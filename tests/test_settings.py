"""One validator per setting, for the command line, the environment and ini alike; errors name the source."""

from __future__ import annotations

import pytest

from tests.conftest import write_domain

RULE = """
import pytest

@pytest.mark.rule("disk-cache-safe")
def test_ok(disk):
    pass
"""


@pytest.mark.parametrize(
    ("how", "value", "message"),
    [
        ("cli", "0", "*--fio-repeat*'0': expected a whole number of at least 1*"),
        ("env", "0", "ERROR: KVMIO_FIO_REPEAT='0': expected a whole number of at least 1"),
        ("ini", "many", "ERROR: ini kvmio_fio_repeat in *tox.ini='many': expected a whole number of at least 1"),
        ("env-runtime", "-3", "ERROR: KVMIO_FIO_RUNTIME='-3': expected a whole number of at least 1"),
        ("env-inconclusive", "maybe", "ERROR: KVMIO_FAIL_INCONCLUSIVE='maybe': expected 1/0*"),
        ("env-hosts", "ssh://", "ERROR: KVMIO_HOSTS='ssh://': *"),
    ],
)
def test_a_bad_value_is_a_usage_error_naming_where_it_came_from(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, xml_dir, how: str, value: str, message: str
) -> None:
    write_domain(xml_dir, "vm01", {"vda": ""})
    pytester.makepyfile(RULE)
    args = ["--domain-xml", str(xml_dir), "-p", "no:cacheprovider"]
    for name in ("KVMIO_FIO_REPEAT", "KVMIO_FIO_RUNTIME", "KVMIO_FAIL_INCONCLUSIVE", "KVMIO_HOSTS"):
        monkeypatch.delenv(name, raising=False)
    if how == "cli":
        args += ["--fio-repeat", value]
    elif how == "ini":
        pytester.makeini(f"[pytest]\nkvmio_fio_repeat = {value}\n")
    else:
        monkeypatch.setenv({"env": "KVMIO_FIO_REPEAT", "env-runtime": "KVMIO_FIO_RUNTIME",
                            "env-inconclusive": "KVMIO_FAIL_INCONCLUSIVE", "env-hosts": "KVMIO_HOSTS"}[how], value)
    if how == "env-hosts":
        args = ["-p", "no:cacheprovider"]  # hosts are resolved when no --domain-xml is given
    result = pytester.runpytest_subprocess(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR, result.stdout.str()[-1500:] + result.stderr.str()[-1500:]
    result.stderr.fnmatch_lines([message])
    assert "Traceback" not in result.stderr.str()


def test_conflicting_options_are_refused_once_with_the_fix(pytester: pytest.Pytester, xml_dir) -> None:
    write_domain(xml_dir, "vm01", {"vda": ""})
    pytester.makepyfile(RULE)
    for args, message in [
        (["--domain-xml", str(xml_dir), "--host", "local"], "*--domain-xml lints files offline and --host*pass one of them*"),
        (["--assume", "kernel=6.1"], "*--assume supplies host facts for offline linting; use it with --domain-xml*"),
        (["--fio-results", str(xml_dir), "--domain-xml", str(xml_dir)], "*--fio-results evaluates*--domain-xml lints XML files*"),
    ]:
        result = pytester.runpytest_subprocess(*args, "-p", "no:cacheprovider")
        assert result.ret == pytest.ExitCode.USAGE_ERROR
        result.stderr.fnmatch_lines([message])
