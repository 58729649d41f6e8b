"""Host CPU cost per I/O compared across io modes."""

from __future__ import annotations

from pytest_kvmio.report.cpucost import by_io_mode, cpu_costs, format_table
from pytest_kvmio.verdict.record import Verdict


def _verdict(target: str, io: str, profile: str, median: float | None, rule: str = "perf-host-cpu") -> Verdict:
    perf = {"profile": profile, "metric": "host_cpu_us_per_io", "median": median, "io_mode": io}
    return Verdict(rule=rule, target=target, outcome="passed", message="", facts={"io": io, "perf": perf})


def test_costs_are_compared_per_profile_and_io_mode() -> None:
    verdicts = [
        _verdict("hv01/vm1/vdb", "native", "randread-4k-qd128", 12.0),
        _verdict("hv01/vm2/vdb", "native", "randread-4k-qd128", 14.0),
        _verdict("hv01/vm3/vdb", "io_uring", "randread-4k-qd128", 8.0),
        _verdict("hv01/vm3/vdb", "io_uring", "randread-4k-qd128", None),  # not measured: left out
        _verdict("hv01/vm3/vdb", "io_uring", "randread-4k-qd128", 99.0, rule="perf-baseline"),  # other rule
    ]
    rows = cpu_costs(verdicts)
    assert [r["target"] for r in rows] == ["hv01/vm3/vdb", "hv01/vm1/vdb", "hv01/vm2/vdb"]
    assert by_io_mode(rows) == {"randread-4k-qd128": {"io_uring": 8.0, "native": 13.0}}
    lines = format_table(rows)
    assert lines[0] == "randread-4k-qd128: host CPU µs per I/O by io mode: io_uring 8, native 13 (×1.62)"
    assert "hv01/vm1/vdb" in lines[2] and "io=native" in lines[2]


def test_nothing_measured_prints_nothing() -> None:
    assert format_table(cpu_costs([_verdict("hv01/vm1/vdb", "native", "seqread-1m", None)])) == []
