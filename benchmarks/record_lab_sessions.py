"""Record N short perf sessions on the lab's scratch disk, for the detector power study. Lab time, not CI.

Each session is what one run of the perf suite measures on one disk: `--fio-repeat` runs of one profile
(default randread-4k-qd32x4, 3 s + 1 s ramp, 3 runs, as tests/test_perf_lab.py's short sessions) through the
project's own runner (perf/runner.py: the scratch checks, the pre-fill, fio json+ in the guest over the
agent), on a blank scratch disk only (default kvmio-lab-good/vdc, serial kvmio-scratch-0). Sessions start
`--interval` seconds apart so the recording spans the drift of an hour or two, as nightly runs would.

Per session it stores each run's metrics (IOPS, bandwidth, mean and percentile completion latency as fio
reported them) and the percentiles of the runs' pooled latency histogram, in a JSON file that is rewritten
atomically after every session. A session that fails (the lab restarted under it, the agent went away) is
listed under `failed` and the recorder goes on; rerunning with the same `--out` resumes until `--sessions`
sessions are recorded. A session during which the disk carried an iotune cap (another test throttling it) is
kept but marked `iotune`, and the power study leaves it out. Raw fio output stays in `--raw DIR`.

    python benchmarks/record_lab_sessions.py --sessions 40 --interval 90 \\
        --out benchmarks/data/lab-sessions.json

A real series for the power study's sanity check: `--cap-iops N --cap-from K` caps the disk's IOPS (virsh
blkdeviotune --live, on the scratch disk only) before session K and every later one of the file, marks those
sessions `capped`, and removes the cap when it stops (also on Ctrl-C or an error):

    python benchmarks/record_lab_sessions.py --sessions 15 --interval 20 --cap-iops 4300 --cap-from 11 \\
        --out benchmarks/data/lab-capped-1.json
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import fcntl
import json
import platform
import shlex
import signal
import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from pytest_kvmio.files.atomic import write_atomically  # noqa: E402
from pytest_kvmio.perf.fio import FioReport, parse_fio  # noqa: E402
from pytest_kvmio.perf.loading import load_thresholds  # noqa: E402
from pytest_kvmio.perf.results import metrics_of, pooled_percentiles  # noqa: E402
from pytest_kvmio.perf.runner import GuestFio  # noqa: E402

URI = "qemu:///system"
#: Metrics kept per run (FioMetrics fields).
RUN_FIELDS = ("iops", "bw_bytes", "clat_mean_us", "clat_p50_us", "clat_p99_us", "clat_p99_9_us")
SCRATCH_PATTERN = "kvmio-scratch*"
IOTUNE_FIELDS = ("total_bytes_sec", "read_bytes_sec", "write_bytes_sec", "total_iops_sec", "read_iops_sec",
                 "write_iops_sec")


def log(line: str) -> None:
    print(f"{dt.datetime.now(dt.timezone.utc):%H:%M:%S} {line}", flush=True)


def virsh(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["virsh", "-c", URI, *args], capture_output=True, text=True, timeout=60)


def serial_of(domain: str, disk: str) -> str | None:
    """Return the libvirt serial of a domain's disk (None when it has none)."""
    import xml.etree.ElementTree as ET

    xml = ET.fromstring(virsh("dumpxml", domain).stdout)
    for node in xml.iterfind("./devices/disk"):
        target = node.find("target")
        if target is not None and target.get("dev") == disk:
            return node.findtext("serial")
    raise SystemExit(f"record_lab_sessions: {domain} has no disk {disk}")


def iotune(domain: str, disk: str) -> dict[str, int]:
    """Return the iotune caps set on a disk right now (empty: none)."""
    out = virsh("blkdeviotune", domain, disk).stdout
    caps = {}
    for line in out.splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if key in IOTUNE_FIELDS and value.isdigit() and int(value):
            caps[key] = int(value)
    return caps


def guest_device(guest: Any, serial: str) -> str:
    """Return the guest's block device whose serial is `serial` (the guest names disks in its own order)."""
    script = f'for d in /sys/block/*; do [ "$(cat $d/serial 2>/dev/null)" = {shlex.quote(serial)} ] && echo ${{d##*/}}; done'
    found = guest.run(script).stdout.split()
    if len(found) != 1:
        raise RuntimeError(f"serial {serial}: expected one guest device, found {found or 'none'}")
    return found[0]


class RecordingFio(GuestFio):
    """The project's runner, keeping fio's raw output of the last run (for the raw directory)."""

    last_stdout = ""

    def _parse(self, result: Any, what: str, command: str) -> FioReport:
        self.last_stdout = result.stdout
        return super()._parse(result, what, command)


def pooled(raw_files: list[Path], profile: Any) -> dict[str, float] | None:
    """Return the pooled-histogram percentiles of a session's runs, None when the runs carry no json+ bins."""
    metrics = [metrics_of(parse_fio(p.read_text(), str(p)), profile) for p in raw_files]
    return pooled_percentiles(metrics) or None


def run_session(args: argparse.Namespace, profile: Any, serial: str, prefilled: set[str],
                raw: Path, index: int) -> dict[str, Any]:
    """Run one session: connect, check the scratch disk, pre-fill when needed, `repeat` measured runs."""
    from pytest_kvmio.facts.guest import agent_host  # libvirt: only when recording, not for --rebuild

    guest = agent_host(args.domain, URI, agent_timeout=30, command_timeout=120)
    device = guest_device(guest, serial)
    label = f"local/{args.domain}/{args.disk}"
    runner = RecordingFio(guest, device, label=label, serial=serial, scratch_pattern=SCRATCH_PATTERN,
                          prefilled=prefilled, progress=log)
    runner.prefill()  # once per recorder process (and after a failure: the lab may have made the disk anew)
    caps_before = iotune(args.domain, args.disk)
    runs, files = [], []
    at = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    started = time.monotonic()
    for n in range(1, args.repeat + 1):
        out = runner.run_once(profile)
        path = raw / f"session-{index:03d}.run-{n}.json"
        path.write_text(runner.last_stdout)
        files.append(path)
        metrics = metrics_of(out.report, profile, target=label)
        runs.append({name: getattr(metrics, name) for name in RUN_FIELDS})
    caps = caps_before | iotune(args.domain, args.disk)
    session: dict[str, Any] = {
        "index": index,
        "started": at,
        "seconds": round(time.monotonic() - started, 1),
        "device": device,
        "runs": runs,
    }
    found = pooled(files, profile)
    if found is not None:
        session["pooled"] = found
    if caps:
        session["iotune"] = caps
    return session


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold `path` locked (flock, exclusive) for one session."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=40, help="sessions to record (default 40)")
    parser.add_argument("--interval", type=float, default=90, help="seconds between session starts (default 90)")
    parser.add_argument("--domain", default="kvmio-lab-good")
    parser.add_argument("--disk", default="vdc", help="a blank scratch disk of the domain (default vdc)")
    parser.add_argument("--profile", default="randread-4k-qd32x4")
    parser.add_argument("--runtime", type=int, default=3)
    parser.add_argument("--ramp", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=3, help="runs per session (default 3, as --fio-repeat)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks/data/lab-sessions.json")
    parser.add_argument("--raw", type=Path, default=None,
                        help="directory for the raw fio json+ output of every run (default "
                             "/var/tmp/kvmio-lab-sessions/<the --out file's stem>)")
    parser.add_argument("--max-failures", type=int, default=30, help="give up after this many failed sessions")
    parser.add_argument("--cap-iops", type=int, default=None, help="cap the disk at this many IOPS (iotune, --live)")
    parser.add_argument("--cap-fraction", type=float, default=None,
                        help="cap at this fraction of the median IOPS of the file's uncapped sessions (e.g. 0.65)")
    parser.add_argument("--cap-from", type=int, default=None, help="first session (1-based) that runs capped")
    parser.add_argument("--lock", type=Path, default=Path("/var/tmp/kvmio-lab-sessions/session.lock"),
                        help="a session holds this file locked: two recorders (say, a capped series on another "
                             "disk) never run fio at the same time")
    parser.add_argument("--rebuild", action="store_true",
                        help="only recompute every session's pooled percentiles from the raw directory")
    args = parser.parse_args()
    args.raw = args.raw or Path("/var/tmp/kvmio-lab-sessions") / args.out.stem
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so that `finally` removes a cap

    serial = serial_of(args.domain, args.disk)
    if not serial or not serial.startswith("kvmio-scratch"):
        raise SystemExit(f"record_lab_sessions: {args.domain}/{args.disk} has serial {serial!r}, not a lab "
                         "scratch disk (kvmio-scratch*); refusing to run fio on it")
    profile = load_thresholds(REPO / "thresholds").profile(args.profile).with_timing(
        runtime=args.runtime, ramp_time=args.ramp)
    if args.out.exists():
        data = json.loads(args.out.read_text())
        log(f"resuming {args.out}: {len(data['sessions'])} sessions recorded, {len(data['failed'])} failed")
    else:
        data = {
            "what": "per-session fio metrics of short perf sessions on the lab's scratch disk, for "
                    "benchmarks/bench_detector_power.py",
            "recorded_with": "python benchmarks/record_lab_sessions.py " + " ".join(
                shlex.quote(a) for a in sys.argv[1:]),
            "note": "TCG guests on the 2-core lab machine, other sessions' tests running alongside (the noise a "
                    "shared CI host meets); sessions marked `iotune` ran while another test capped the disk",
            "target": f"local/{args.domain}/{args.disk}",
            "serial": serial,
            "profile": args.profile,
            "runtime": args.runtime,
            "ramp_time": args.ramp,
            "runs_per_session": args.repeat,
            "host": {"kernel": platform.release(), "machine": platform.machine()},
            "sessions": [],
            "failed": [],
        }
    if args.rebuild:
        for session in data["sessions"]:
            files = sorted(args.raw.glob(f"session-{session['index']:03d}.run-*.json"))
            found = pooled(files, profile) if len(files) == len(session["runs"]) else None
            if found is not None:
                session["pooled"] = found
        write_atomically(args.out, json.dumps(data, indent=1) + "\n")
        log(f"rebuilt pooled percentiles of {sum('pooled' in s for s in data['sessions'])} sessions")
        return 0
    args.raw.mkdir(parents=True, exist_ok=True)
    capping = args.cap_iops is not None or args.cap_fraction is not None
    if capping != (args.cap_from is not None) or (args.cap_iops is not None and args.cap_fraction is not None):
        raise SystemExit("record_lab_sessions: --cap-from goes with one of --cap-iops, --cap-fraction")
    try:
        return record(args, data, profile, serial)
    finally:
        if capping:
            virsh("blkdeviotune", args.domain, args.disk, "--total-iops-sec", "0", "--live")
            log(f"cap removed from {args.domain}/{args.disk}")


def record(args: argparse.Namespace, data: dict[str, Any], profile: Any, serial: str) -> int:
    """Record sessions into data until there are args.sessions of them (capped ones as asked)."""
    prefilled: set[str] = set()
    while len(data["sessions"]) < args.sessions:
        if len(data["failed"]) >= args.max_failures:
            log(f"giving up: {len(data['failed'])} failed sessions")
            return 1
        index = len(data["sessions"]) + len(data["failed"]) + 1
        started = time.monotonic()
        log(f"session {len(data['sessions']) + 1}/{args.sessions} (attempt {index})")
        capped = args.cap_from is not None and len(data["sessions"]) + 1 >= args.cap_from
        if capped and args.cap_iops is None:
            uncapped = [statistics.median(r["iops"] for r in s["runs"]) for s in data["sessions"] if not s.get("capped")]
            args.cap_iops = int(args.cap_fraction * statistics.median(uncapped))
        if capped:
            data["cap"] = {"total_iops_sec": args.cap_iops, "from_session": args.cap_from,
                           **({"fraction_of_median": args.cap_fraction} if args.cap_fraction else {})}
            set_cap = virsh("blkdeviotune", args.domain, args.disk, "--total-iops-sec", str(args.cap_iops), "--live")
            if set_cap.returncode != 0:
                raise SystemExit(f"record_lab_sessions: cannot cap {args.domain}/{args.disk}: {set_cap.stderr}")
        try:
            with locked(args.lock):
                session = run_session(args, profile, serial, prefilled, args.raw, index)
            if capped:
                session["capped"] = True
        except Exception as exc:  # the lab re-upped, the agent timed out: note it and go on
            log(f"session attempt {index} failed: {type(exc).__name__}: {exc}")
            data["failed"].append({"index": index, "at": dt.datetime.now(dt.timezone.utc).isoformat(
                timespec="seconds"), "error": f"{type(exc).__name__}: {str(exc)[:300]}"})
            traceback.print_exc(limit=3)
            prefilled.clear()
        else:
            data["sessions"].append(session)
            iops = [r["iops"] for r in session["runs"]]
            caps = f" iotune {session['iotune']}" if "iotune" in session else ""
            log(f"session {len(data['sessions'])}/{args.sessions}: IOPS {' '.join(f'{v:.0f}' for v in iops)} "
                f"in {session['seconds']} s{caps}")
        write_atomically(args.out, json.dumps(data, indent=1) + "\n")
        if len(data["sessions"]) < args.sessions:
            time.sleep(max(5.0, args.interval - (time.monotonic() - started)))
    log(f"done: {len(data['sessions'])} sessions in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
