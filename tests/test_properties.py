"""Property tests: whatever the input, the readers raise only their documented error type (never a traceback)."""

from __future__ import annotations

import json
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_kvmio.model.cpuset import format_cpuset, parse_cpuset
from pytest_kvmio.model.domain import DomainXMLError, parse_domain
from pytest_kvmio.perf.documents import load_yaml
from pytest_kvmio.perf.fio import FioError, parse_fio
from pytest_kvmio.perf.thresholds import ThresholdsError
from pytest_kvmio.report.waivers import load_waivers

TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=300)
ATTR = st.sampled_from(["", "0", "-1", "2", "x", "1e9", "99999999999999999999", "native", "io_uring", "uring",
                        "none", "default", "'", "\"", "&amp;", "0-3,^2", "^0-1", "4-2"])


@settings(max_examples=300)
@given(TEXT)
def test_cpuset_parser_raises_only_value_error(text: str) -> None:
    try:
        cpus = parse_cpuset(text, source="t")
    except ValueError:
        return
    assert cpus and parse_cpuset(format_cpuset(cpus)) == cpus  # what it accepts, it can write back


@settings(max_examples=200)
@given(st.sets(st.integers(0, 255), min_size=1))
def test_cpuset_round_trips(cpus: set[int]) -> None:
    assert parse_cpuset(format_cpuset(frozenset(cpus))) == cpus


@settings(max_examples=300)
@given(TEXT)
def test_domain_parser_on_any_text_raises_only_domain_xml_error(text: str) -> None:
    try:
        parse_domain(text, source="t.xml")
    except DomainXMLError as exc:
        assert "t.xml" in str(exc)


@settings(max_examples=400)
@given(vcpu=ATTR, current=ATTR, iothreads=ATTR, io=ATTR, cache=ATTR, queues=ATTR, iothread=ATTR, pin=ATTR,
       queue_id=ATTR)
def test_domain_parser_on_hostile_values_raises_only_domain_xml_error(**v: str) -> None:
    xml = (
        f"<domain type='kvm'><name>vm</name><vcpu current=\"{v['current']}\">{v['vcpu']}</vcpu>"
        f"<iothreads>{v['iothreads']}</iothreads><cputune><iothreadpin iothread='1' cpuset=\"{v['pin']}\"/></cputune>"
        "<devices><disk type='file' device='disk'>"
        f"<driver name='qemu' io=\"{v['io']}\" cache=\"{v['cache']}\" queues=\"{v['queues']}\" iothread=\"{v['iothread']}\">"
        f"<iothreads><iothread id=\"{v['iothread']}\"><queue id=\"{v['queue_id']}\"/></iothread></iothreads></driver>"
        "<target dev='vda' bus='virtio'/></disk></devices></domain>"
    )
    try:
        domain = parse_domain(xml, source="t.xml")
    except DomainXMLError as exc:
        assert str(exc).startswith("t.xml")
        return
    disk = domain.disks[0]
    assert disk.effective_io and disk.effective_cache and disk.allocation.why  # the facts the rules read


@settings(max_examples=300)
@given(st.recursive(st.none() | st.booleans() | st.floats(allow_nan=True) | st.integers() | st.text(max_size=20),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
                    max_leaves=30))
def test_fio_reader_raises_only_fio_error(document: object) -> None:
    for text in (json.dumps(document), json.dumps({"fio version": "fio-3.33", "jobs": [document]})):
        try:
            parse_fio(text, "t.json")
        except FioError as exc:
            assert "t.json" in str(exc)


@settings(max_examples=200)
@given(TEXT)
def test_yaml_loaders_raise_only_their_error(tmp_path_factory, text: str) -> None:
    path = Path(tmp_path_factory.mktemp("yaml")) / "f.yaml"
    path.write_text(text, encoding="utf-8")
    try:
        load_yaml(path, "f.yaml")
    except ThresholdsError as exc:
        assert "f.yaml" in str(exc)
    try:
        load_waivers(path, "--waivers")
    except Exception as exc:  # the waivers loader reports usage errors the way pytest prints them
        assert type(exc).__name__ == "UsageError" and "f.yaml" in str(exc), repr(exc)


def test_huge_counts_and_cpu_ids_are_errors_not_hangs() -> None:
    """Found by the property tests: <iothreads>1e20</iothreads> made kvmio count IOThread ids for ever."""
    import pytest

    for xml, message in [
        ("<domain><name>d</name><iothreads>99999999999999999999</iothreads></domain>", "out of range (0 to 65536)"),
        ("<domain><name>d</name><vcpu>100000</vcpu></domain>", "out of range (0 to 65536)"),
        ("<domain><name>d</name><cputune><vcpupin vcpu='0' cpuset='0-99999999'/></cputune></domain>", "not a CPU number (0 to 65535)"),
    ]:
        with pytest.raises(DomainXMLError, match=message.replace("(", r"\(").replace(")", r"\)")):
            parse_domain(xml, source="t.xml")
