"""Points from measurements: a perf result (live or --fio-results), a perf results file, a fio results directory,
the arms of an A/B experiment; the run id and the CI metadata they carry.

One point per metric with a direction (iops, bw_bytes, latencies, errors, CPU, host CPU per I/O), its value the
verdict's: the median of the repeated runs (a latency percentile: the pooled json+ histogram's, where there is one).
A point's digest hashes its series, time and samples, so the same measurement imported twice is one point.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import secrets
import statistics
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pytest

from pytest_kvmio.history.fingerprint import XML, XML_HASH, storage_xml, xml_hash
from pytest_kvmio.history.series import Point
from pytest_kvmio.perf.fio import FioError, read_fio
from pytest_kvmio.perf.offline import HOSTCPU_FILE, RUN_FILE, offline_hosts, run_files
from pytest_kvmio.perf.results import HOST_CPU, RUN_METRICS, PerfResult, fingerprint_of, metrics_of
from pytest_kvmio.perf.thresholds import METRIC_DIRECTIONS, Thresholds

#: Metrics a series is kept for: every recorded metric that has a better direction (runtime_s has none).
METRICS = tuple(m for m in (*RUN_METRICS, HOST_CPU) if m in METRIC_DIRECTIONS)


def now() -> str:
    """Return the current time as the history writes it (ISO 8601, UTC, seconds)."""
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def new_run_id(env: Mapping[str, str] | None = None) -> str:
    """Return a run id: the UTC time and a random suffix (`20261204T2321Z-3fa2c1`), the CI pipeline's where there is one."""
    ci = ci_metadata(env)
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    suffix = secrets.token_hex(3)
    if ci.get("pipeline"):
        return f"{ci['provider']}-{ci['pipeline']}-{stamp}-{suffix}"
    return f"{stamp}-{suffix}"


def ci_metadata(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """Return the CI job's pipeline id, job, commit and provider (GitLab, GitHub Actions, Jenkins), empty outside CI."""
    env = os.environ if env is None else env
    found: dict[str, str | None] = {}
    if env.get("GITLAB_CI"):
        found = {"provider": "gitlab", "pipeline": env.get("CI_PIPELINE_ID"), "job": env.get("CI_JOB_ID"),
                 "commit": env.get("CI_COMMIT_SHA"), "url": env.get("CI_PIPELINE_URL")}
    elif env.get("GITHUB_ACTIONS"):
        found = {"provider": "github", "pipeline": env.get("GITHUB_RUN_ID"), "job": env.get("GITHUB_JOB"),
                 "commit": env.get("GITHUB_SHA"), "attempt": env.get("GITHUB_RUN_ATTEMPT")}
    elif env.get("JENKINS_URL"):
        found = {"provider": "jenkins", "pipeline": env.get("BUILD_TAG") or env.get("BUILD_NUMBER"),
                 "job": env.get("JOB_NAME"), "commit": env.get("GIT_COMMIT"), "url": env.get("BUILD_URL")}
    elif env.get("CI"):
        found = {"provider": "ci", "pipeline": env.get("CI_PIPELINE_ID") or env.get("BUILD_ID"),
                 "commit": env.get("CI_COMMIT_SHA") or env.get("GIT_COMMIT")}
    return {k: str(v) for k, v in found.items() if v}


def digest_of(key: tuple[str, str, str, str], time: str, samples: Iterable[float | None]) -> str:
    """Return the unique key of a point within the history: series, time and samples hashed."""
    text = json.dumps([list(key), time, list(samples)], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def value_of(result: PerfResult, metric: str) -> float | None:
    """Return the value the verdicts use: a pooled percentile where the runs carry json+ histograms, else the median."""
    pooled = getattr(result, "pooled", None)
    if pooled is not None:
        found = pooled(metric)
        if found is not None:
            return float(found)
    return result.median(metric)


def disk_fingerprint(result: PerfResult, disk: Any, *, host_uuid: str | None = None,
                     guest_kernel: str | None = None) -> dict[str, Any]:
    """Return the fingerprint stored with a result's points: the result's, fio, the guest kernel, the storage XML."""
    fingerprint: dict[str, Any] = dict(result.fingerprint)
    fingerprint["fio"] = result.fio_version
    fingerprint["guest_kernel"] = guest_kernel
    if host_uuid:
        fingerprint["host_uuid"] = host_uuid
    xml = storage_xml(getattr(disk.domain, "xml", "") or "", disk.target) if disk is not None else None
    fingerprint[XML] = xml
    fingerprint[XML_HASH] = xml_hash(xml)
    return fingerprint


def series_host(target: str, host_uuid: str | None) -> str:
    """Return the host part of a series key: the host's UUID, else the host part of the target id."""
    return host_uuid or target.split("/")[0]


def points_of_result(result: PerfResult, *, run: str, fingerprint: Mapping[str, Any], source: str,
                     host_uuid: str | None = None, ci: Mapping[str, Any] | None = None,
                     time: str | None = None) -> list[Point]:
    """Return one point per metric of a result that measured it in every run."""
    when = result.time or time or now()
    host = series_host(result.target, host_uuid)
    points = []
    for metric in METRICS:
        samples = result.samples(metric)
        if not samples or any(s is None for s in samples):
            continue
        value = value_of(result, metric)
        if value is None:
            continue
        key = (host, result.target, result.profile, metric)
        points.append(Point(
            host=host, target=result.target, profile=result.profile, metric=metric, run=run, time=when,
            value=value, samples=tuple(samples), source=source, fingerprint=dict(fingerprint), ci=dict(ci or {}),
            digest=digest_of(key, when, samples),
        ))
    return points


# --- files: earlier --fio-results directories and --kvmio-perf-results files -----------------------------------


class ImportProblem(Exception):
    """A file or directory that can't be imported; the message names it and why."""


def fio_results_run(root: str | Path) -> str:
    """Return the run id of a --fio-results directory: its name (`nightly/2026-12-01` → `2026-12-01`)."""
    return Path(root).resolve().name


def points_of_fio_results(root: str | Path, thresholds: Thresholds, *, ci: Mapping[str, Any] | None = None
                          ) -> tuple[list[Point], list[str]]:
    """Return the points of a --fio-results directory (as a pytest run over it would add), and the files left out.

    Profiles come from the thresholds (a file of a profile they don't have is left out, with why).
    """
    try:
        hosts = offline_hosts(str(root))
    except pytest.UsageError as exc:  # offline_hosts reports a bad layout as pytest's usage error
        raise ImportProblem(str(exc)) from None
    run = fio_results_run(root)
    points: list[Point] = []
    skipped: list[str] = []
    for host in hosts:
        for domain in host.domains:
            for disk in domain.disks:
                directory = Path(root, *disk.id.split("/"))
                costs = run_files(directory, HOSTCPU_FILE)
                for profile_name, runs in sorted(run_files(directory, RUN_FILE).items()):
                    if profile_name not in thresholds.profiles:
                        skipped.extend(f"{p}: no profile {profile_name!r} in {thresholds.directory}/profiles.yaml"
                                       for _, p in sorted(runs))
                        continue
                    profile = thresholds.profiles[profile_name]
                    storage_class = thresholds.class_for(disk.id, disk.serial)
                    result = PerfResult(target=disk.id, profile=profile_name, serial=disk.serial,
                                        readonly=not profile.write, storage_class=storage_class.name if storage_class else None,
                                        fingerprint=fingerprint_of(host.facts, disk, storage_class.name if storage_class else None))
                    cost_files = dict(costs.get(profile_name, []))
                    try:
                        for n, path in sorted(runs):
                            report = read_fio(path)
                            result.runs.append(metrics_of(report, profile, target=disk.id))
                            result.sources.append(str(path))
                            if result.time is None and report.final.timestamp_ms:
                                stamp = dt.datetime.fromtimestamp(report.final.timestamp_ms / 1000, dt.timezone.utc)
                                result.time = stamp.isoformat(timespec="seconds")
                            result.fio_version = result.fio_version or report.version
                            cost = cost_files.get(n)
                            result.host_cpu.append(float(cost.read_text().strip()) if cost else None)
                    except (FioError, OSError, ValueError) as exc:
                        skipped.append(f"{directory}/{profile_name}: {exc}")
                        continue
                    points += points_of_result(result, run=run, fingerprint=disk_fingerprint(result, disk),
                                               source="fio-results", ci=ci)
    return points, skipped


def points_of_perf_results(path: str | Path, document: Mapping[str, Any], *, ci: Mapping[str, Any] | None = None
                           ) -> list[Point]:
    """Return the points of a --kvmio-perf-results file (validated by the caller against its schema).

    Its run is the file's `run` (written since the history exists), else the file's name; its time each result's
    `time`, else the file's `time`, else the file's modification time.
    """
    file = Path(path)
    run = str(document.get("run") or file.stem)
    default_time = document.get("time") or dt.datetime.fromtimestamp(file.stat().st_mtime, dt.timezone.utc).isoformat(
        timespec="seconds")
    host_facts = dict(document.get("fingerprint") or {})
    points: list[Point] = []
    for entry in document["results"]:
        target, profile = entry["target"], entry["profile"]
        host_uuid = entry.get("host_uuid") or document.get("host_uuid")
        when = str(entry.get("time") or default_time)
        fingerprint = host_facts | dict(entry.get("fingerprint") or {})
        fingerprint.setdefault("fio", entry.get("fio_version"))
        if entry.get("storage_xml"):
            fingerprint[XML] = entry["storage_xml"]
            fingerprint[XML_HASH] = xml_hash(entry["storage_xml"])
        host = series_host(target, host_uuid)
        for metric, samples in sorted(entry["samples"].items()):
            if metric not in METRICS or not samples or any(s is None for s in samples):
                continue
            value = float(statistics.median(samples))
            key = (host, target, profile, metric)
            points.append(Point(
                host=host, target=target, profile=profile, metric=metric, run=run, time=when, value=value,
                samples=tuple(samples), source="perf-results", fingerprint=fingerprint, ci=dict(ci or {}),
                digest=digest_of(key, when, samples),
            ))
    return points


# --- A/B experiments ------------------------------------------------------------------------------------------


def points_of_ab(result: Any, host: Any, *, run: str, ci: Mapping[str, Any] | None = None,
                 time: str | None = None) -> list[Point]:
    """Return one point per arm and metric of an A/B experiment (perf.ab.AbResult) on a host (HostTarget).

    A guest arm's target is its disk id; an arm run on the hypervisor (`@host`) is a series of its own, `<disk>@host`.
    """
    when = time or now()
    facts = host.facts
    host_uuid = getattr(facts, "host_uuid", None)
    points: list[Point] = []
    for arm in (result.a, result.b):
        disk = arm.disk
        target = disk.id + ("@host" if arm.spec.on_host else "")
        fake = PerfResult(target=target, profile=result.profile.name, serial=disk.serial,
                          fingerprint=fingerprint_of(facts, disk, None))
        fingerprint = disk_fingerprint(fake, disk, host_uuid=host_uuid)
        fingerprint["ab_arm"] = arm.label
        series = series_host(target, host_uuid)
        for metric, samples in sorted(result.samples[arm.name].items()):
            if metric not in METRICS or not samples or any(s is None for s in samples):
                continue
            key = (series, target, result.profile.name, metric)
            points.append(Point(
                host=series, target=target, profile=result.profile.name, metric=metric, run=run, time=when,
                value=float(statistics.median(samples)), samples=tuple(samples), source="ab",
                fingerprint=fingerprint, ci=dict(ci or {}), digest=digest_of(key, when, samples),
            ))
    return points
