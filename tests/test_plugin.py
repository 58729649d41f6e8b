"""The plugin's contract: options, markers, fixture precedence, parametrization, verdict JSON."""

from __future__ import annotations

import json
import os

import pytest

from tests.conftest import SUITES, verdicts_of, write_domain


def test_every_kvmio_marker_is_registered(pytester: pytest.Pytester, xml_dir) -> None:
    write_domain(xml_dir, "vm01", {"vda": ""})
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.rule("disk-cache-safe", severity="critical")
        @pytest.mark.requires_io_uring
        @pytest.mark.requires_kernel(">=5.10")
        @pytest.mark.requires_qemu(">=5.0")
        @pytest.mark.requires_libvirt(">=6.3")
        @pytest.mark.requires_guest_agent
        @pytest.mark.perf
        def test_marked(disk):
            pass
        """
    )
    result = pytester.runpytest("--strict-markers", "--markers")
    result.stdout.fnmatch_lines(["@pytest.mark.rule(id*", "@pytest.mark.requires_io_uring*", "@pytest.mark.perf*"])
    result = pytester.runpytest(
        "--strict-markers", "--domain-xml", str(xml_dir), "--assume", "kernel=6.1,qemu=7.2,libvirt=9.0", "-rs"
    )
    # Every version requirement is met by the assumed facts; only the guest agent is missing offline.
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*requires a guest agent: offline lint*"])


def test_disk_ids_name_host_domain_and_disk(pytester: pytest.Pytester, xml_dir) -> None:
    write_domain(xml_dir, "vm01", {"vda": "", "vdb": ""})
    write_domain(xml_dir, "vm02", {"vdc": ""})
    pytester.makepyfile("def test_disk(disk): pass\ndef test_domain(domain): pass\ndef test_host(hypervisor): pass")
    result = pytester.runpytest("--domain-xml", str(xml_dir), "--collect-only", "-q")
    result.stdout.fnmatch_lines(
        [
            "*test_disk[[]offline/vm01.xml:vm01/vda]",
            "*test_disk[[]offline/vm01.xml:vm01/vdb]",
            "*test_disk[[]offline/vm02.xml:vm02/vdc]",
            "*test_domain[[]offline/vm01.xml:vm01]",
            "*test_domain[[]offline/vm02.xml:vm02]",
            "*test_host[[]offline]",
        ]
    )


def test_host_domain_and_disk_of_one_item_belong_together(pytester: pytest.Pytester, xml_dir) -> None:
    write_domain(xml_dir, "vm01", {"vda": ""})
    write_domain(xml_dir, "vm02", {"vdb": "", "vdc": ""})
    pytester.makepyfile(
        """
        def test_same(disk, domain, hypervisor):
            assert disk.domain is domain
            assert domain.host == hypervisor.name
        """
    )
    pytester.runpytest("--domain-xml", str(xml_dir)).assert_outcomes(passed=3)


HOST_TEST = """
def test_host(host, request):
    names = [name for name, _ in request.config.pluginmanager.list_name_plugin()]
    assert any("testinfra" in str(name) for name in names), names
    assert host.kvmio.name == "local"          # kvmio's Host carries kvmio facts
    assert host.backend.get_connection_type() == "local"
"""


@pytest.mark.parametrize(
    "plugins",
    [
        ["-p", "testinfra.plugin", "-p", "pytest_kvmio.plugin"],
        ["-p", "pytest_kvmio.plugin", "-p", "testinfra.plugin"],
    ],
    ids=["testinfra-first", "kvmio-first"],
)
def test_kvmio_host_fixture_wins_over_testinfras_in_either_load_order(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, plugins: list[str]
) -> None:
    # Autoload off so that -p alone decides the registration order of the two plugins.
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    pytester.makepyfile(HOST_TEST)
    result = pytester.runpytest_subprocess(*plugins, "--host=local", "--libvirt-uri=test:///default")
    result.assert_outcomes(passed=1)


def test_kvmio_host_fixture_wins_with_entry_point_plugins(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(HOST_TEST)
    result = pytester.runpytest_subprocess("--host=local", "--libvirt-uri=test:///default")
    result.assert_outcomes(passed=1)


def test_json_summary_has_one_record_per_rule_and_target(pytester: pytest.Pytester, xml_dir) -> None:
    write_domain(xml_dir, "vm01", {"vda": "cache='unsafe'", "vdb": "cache='none' io='native'"}, vcpus=1)
    out = pytester.path / "out" / "verdicts.json"
    result = pytester.runpytest(str(SUITES / "test_disks.py"), "--domain-xml", str(xml_dir), "--kvmio-json", str(out))
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    document = json.loads(out.read_text())
    assert set(document) >= {"kvmio_version", "generated", "hosts", "totals", "rules", "verdicts"}
    for record in document["verdicts"]:
        assert set(record) >= {"rule", "target", "outcome", "message", "facts"}
        assert record["outcome"] in ("passed", "failed", "skipped", "error")
    verdicts = verdicts_of(out)
    unsafe = verdicts[("disk-cache-safe", "offline/vm01.xml:vm01/vda")]
    assert unsafe["outcome"] == "failed"
    assert "offline/vm01.xml:vm01/vda: cache='unsafe'" in unsafe["message"]
    assert unsafe["facts"]["cache"] == "unsafe"
    assert verdicts[("disk-cache-safe", "offline/vm01.xml:vm01/vdb")]["outcome"] == "passed"
    assert verdicts[("disk-direct-io-for-async", "offline/vm01.xml:vm01/vdb")]["outcome"] == "passed"
    assert verdicts[("disk-native-not-sparse", "offline/vm01.xml:vm01/vdb")]["outcome"] == "skipped"
    # Rules that don't concern a disk make no verdict, only a count: io-mode-valid, direct-io-for-async,
    # native-not-sparse and io-uring-supported on vda (no io attribute), io-uring-supported on vdb (native).
    assert ("disk-native-not-sparse", "offline/vm01.xml:vm01/vda") not in verdicts
    assert document["rules"]["disk-io-uring-supported"] == {"not_applicable": 2}
    assert document["totals"]["not_applicable"] == 5
    # 8 disk rules x 2 disks: every one either judged once or counted as not applicable.
    assert len(verdicts) + document["totals"]["not_applicable"] == 16
    assert len(document["verdicts"]) == len(verdicts)
    assert document["totals"]["failed"] == sum(1 for v in verdicts.values() if v["outcome"] == "failed")
    result.stdout.fnmatch_lines(
        ["*kvmio verdicts*", "rule*passed*failed*skipped*not applicable*", "disk-cache-safe*1*1*", "disk-io-uring-supported*0*2"]
    )


def test_writeback_is_reported_not_failed(pytester: pytest.Pytester, xml_dir) -> None:
    write_domain(xml_dir, "vm01", {"vda": "cache='writeback'"})
    out = pytester.path / "v.json"
    pytester.runpytest(str(SUITES / "test_disks.py"), "--domain-xml", str(xml_dir), "--kvmio-json", str(out),
                       "-k", "cache")
    verdict = verdicts_of(out)[("disk-cache-safe", "offline/vm01.xml:vm01/vda")]
    assert verdict["outcome"] == "passed"
    assert "writeback" in verdict["message"] and "flush" in verdict["message"]


def test_requirement_markers_skip_with_the_fact_found(pytester: pytest.Pytester, xml_dir) -> None:
    write_domain(xml_dir, "vm01", {"vda": ""})
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.requires_kernel(">=5.10")
        def test_kernel(disk): pass

        @pytest.mark.requires_io_uring
        def test_uring(disk): pass

        @pytest.mark.requires_qemu(">=5.0")
        def test_qemu(disk): pass
        """
    )
    result = pytester.runpytest("--domain-xml", str(xml_dir), "--assume", "kernel=4.19,qemu=7.2,libvirt=9.0", "-rs")
    result.assert_outcomes(passed=1, skipped=2)
    result.stdout.fnmatch_lines(
        ["*requires kernel >=5.10: offline has kernel 4.19*", "*requires io_uring: offline has kernel 4.19 < 5.1*"]
    )
    result = pytester.runpytest("--domain-xml", str(xml_dir), "-rs")
    result.stdout.fnmatch_lines(["*requires kernel >=5.10: kernel version of offline unknown (offline; supply it with --assume*"])


@pytest.mark.parametrize(
    "args, message",
    [
        (["--assume", "kernel=six"], "*argument --assume: 'kernel=six': 'six' is not a version number*"),
        (["--assume", "colour=blue"], "*expected KEY=VALUE with KEY one of kernel, qemu, libvirt, io_uring_disabled, cpus*"),
        (["--domain-xml", "nowhere/"], "*--domain-xml*nowhere/: no such file or directory*"),
        (["--host", "ssh://"], "*--host*names no host*"),
        (["--fio-repeat", "0"], "*--fio-repeat*expected a whole number of at least 1*"),
    ],
)
def test_bad_option_values_are_usage_errors(pytester: pytest.Pytester, args: list[str], message: str) -> None:
    pytester.makepyfile("def test_x(): pass")
    result = pytester.runpytest_subprocess(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])


def test_offline_and_live_targets_together_are_refused(pytester: pytest.Pytester, xml_dir) -> None:
    write_domain(xml_dir, "vm01", {"vda": ""})
    pytester.makepyfile("def test_x(disk): pass")
    result = pytester.runpytest("--domain-xml", str(xml_dir), "--host", "hv01")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--domain-xml lints files offline and --host checks live hosts; pass one of them*"])


def test_malformed_xml_names_the_file_without_traceback(pytester: pytest.Pytester, xml_dir) -> None:
    (xml_dir / "broken.xml").write_text("<domain><name>x</name><devices><disk></devices></domain>")
    pytester.makepyfile("def test_x(disk): pass")
    result = pytester.runpytest_subprocess("--domain-xml", str(xml_dir))
    assert result.ret == pytest.ExitCode.USAGE_ERROR  # no file at all could be read (issue 18 item 5)
    result.stderr.fnmatch_lines(["ERROR: --domain-xml: no file could be read:",
                                 f"  {xml_dir / 'broken.xml'}: line 1: malformed XML: *"])
    assert "Traceback" not in result.stdout.str() + result.stderr.str()
    # With a readable file beside it, the run goes on (issue 18 item 5): the broken file is an error item.
    write_domain(xml_dir, "vm01", {"vda": ""})
    result = pytester.runpytest_subprocess("--domain-xml", str(xml_dir))
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*ERROR at call of domain-xml-readable[[]offline/broken.xml]*",
                                 f"{xml_dir / 'broken.xml'}: line 1: malformed XML: *"])
    assert "Traceback" not in result.stdout.str() + result.stderr.str()


def test_unknown_domain_glob_is_a_usage_error(pytester: pytest.Pytester, xml_dir) -> None:
    write_domain(xml_dir, "vm01", {"vda": ""})
    pytester.makepyfile("def test_x(disk): pass")
    result = pytester.runpytest_subprocess("--domain-xml", str(xml_dir), "--domain", "db-*")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: --domain db-*: matches no domain on offline*"])
    pytester.runpytest("--domain-xml", str(xml_dir), "--domain", "vm*").assert_outcomes(passed=1)


def test_unreachable_host_errors_its_items_with_a_clear_message(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.rule("host-kernel-min")
        def test_host(host): pass

        def test_disk(disk): pass
        """
    )
    out = pytester.path / "v.json"
    # Port 9 on loopback: nothing listens there, so ssh fails at once.
    result = pytester.runpytest(
        "--host", "ssh://nobody@127.0.0.1:9", "--kvmio-json", str(out), "-o", "console_output_style=classic"
    )
    result.assert_outcomes(errors=2)
    result.stdout.fnmatch_lines(
        ["*127.0.0.1:9: cannot run commands via ssh://nobody@127.0.0.1:9 (exit 255): *Connection refused*"]
    )
    assert "Traceback" not in result.stdout.str()
    verdict = verdicts_of(out)[("host-kernel-min", "127.0.0.1:9")]
    assert verdict["outcome"] == "error"
    assert "cannot run commands" in verdict["message"]


def test_ansible_inventory_names_the_hosts(pytester: pytest.Pytester) -> None:
    pytest.importorskip("ansible", reason="ansible-core (a dev extra) reads inventories")
    inventory = pytester.path / "inventory.ini"
    inventory.write_text("[hypervisors]\nhv-local ansible_connection=local\n")
    pytester.makepyfile("def test_h(hypervisor): assert hypervisor.libvirt is not None")
    result = pytester.runpytest_subprocess(
        f"--ansible-inventory={inventory}", "--libvirt-uri=test:///default", "--collect-only", "-q"
    )
    result.stdout.fnmatch_lines(["*test_h[[]hv-local]*"])
    result = pytester.runpytest_subprocess(f"--ansible-inventory={inventory}", "--libvirt-uri=test:///default")
    result.assert_outcomes(passed=1)


def test_ansible_pattern_that_matches_nothing_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytest.importorskip("ansible", reason="ansible-core (a dev extra) reads inventories")
    inventory = pytester.path / "inventory.ini"
    inventory.write_text("[hypervisors]\nhv-local ansible_connection=local\n")
    pytester.makepyfile("def test_h(hypervisor): pass")
    result = pytester.runpytest_subprocess(f"--ansible-inventory={inventory}", "--host=ansible://databases")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*ansible://databases: no host in the inventory*matches*"])


def test_offline_lint_needs_no_libvirt_library(pytester: pytest.Pytester, xml_dir, monkeypatch: pytest.MonkeyPatch) -> None:
    # A `libvirt` module that fails to import, first on the path: as on a machine without libvirt's C library.
    blocker = pytester.path / "blocker"
    blocker.mkdir()
    (blocker / "libvirt.py").write_text("raise ImportError('libvirtmod: cannot open shared object file')\n")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (str(blocker), os.environ.get("PYTHONPATH")) if p))
    write_domain(xml_dir, "vm01", {"vda": "cache='unsafe'"})
    out = pytester.path / "v.json"
    result = pytester.runpytest_subprocess(str(SUITES), "--domain-xml", str(xml_dir), "--kvmio-json", str(out))
    assert verdicts_of(out)[("disk-cache-safe", "offline/vm01.xml:vm01/vda")]["outcome"] == "failed"
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    # A live host then fails its items with the reason instead of a traceback.
    pytester.makepyfile("def test_h(hypervisor): pass")
    result = pytester.runpytest_subprocess("--host=local", "test_offline_lint_needs_no_libvirt_library.py")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*libvirt-python is not importable*install it*or lint offline with --domain-xml*"])


def test_dead_libvirt_daemon_is_named_with_its_uri(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_h(hypervisor): pass")
    uri = "qemu+unix:///system?socket=/nonexistent/libvirt-sock"
    result = pytester.runpytest_subprocess("--host=local", f"--libvirt-uri={uri}")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines([f"*local: cannot connect to libvirt at {uri}:*check that libvirtd runs there*"])
    assert "Traceback" not in result.stdout.str()


def test_requires_guest_agent_skips_with_the_reason(pytester: pytest.Pytester, xml_dir) -> None:
    write_domain(xml_dir, "vm01", {"vda": ""})
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.requires_guest_agent
        def test_agent(domain): pass
        """
    )
    result = pytester.runpytest("--domain-xml", str(xml_dir), "-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*requires a guest agent: offline lint (--domain-xml): no guest to reach*"])
    # libvirt's test driver runs its domain "test" but has no guest agent to answer.
    result = pytester.runpytest_subprocess("--host=local", "--libvirt-uri=test:///default", "-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*requires a guest agent: local/test: guest unavailable: *"])
