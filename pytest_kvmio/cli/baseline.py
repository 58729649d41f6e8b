"""`kvmio baseline record`: write baselines from perf results files into thresholds/baselines/.

Each results file is one session (one `pytest --kvmio-perf-results=PATH` run). Several files
recorded minutes apart make one baseline: its median is the median of all their samples (for a latency
percentile whose sessions all carry fio json+ histograms: the percentile of every run's histogram merged,
`estimator: pooled-histogram`), and its
`noise` (perfgate.session_noise) combines the drift between the sessions' medians with the
dispersion inside each session. With one file the noise is that session's own dispersion only.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import re
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from pytest_kvmio.errors import CommandError, InputError
from pytest_kvmio.files.atomic import write_atomically
from pytest_kvmio.perf.decide import fingerprint_diff, session_noise
from pytest_kvmio.perf.documents import load_yaml, validate
from pytest_kvmio.perf.fio import percentile_of
from pytest_kvmio.perf.histogram import POOLED, HistogramError, merge
from pytest_kvmio.perf.loading import load_thresholds
from pytest_kvmio.perf.results import histogram_of_bins
from pytest_kvmio.perf.thresholds import (
    DEFAULT_NOISE_MULTIPLE,
    DEFAULT_TOLERANCE,
    METRIC_DIRECTIONS,
    NOISE_CONFIDENCE,
    Thresholds,
    ThresholdsError,
    band_of,
    noise_bound,
)

__all__ = ["add_parser", "record", "run_record"]

#: Metrics the results may carry that a baseline does not track (fixed by the profile).
_NOT_BASELINED = frozenset({"runtime_s"})


def _tolerance(text: str) -> float:
    """Parse --tolerance: a fraction in (0, 1), or a percentage like 15%."""
    try:
        value = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a fraction like 0.15 or a percentage like 15%, got {text!r}") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"expected a value between 0 and 1 (exclusive), got {text!r}")
    return value


def _date(text: str) -> str:
    """Parse --at: an ISO date."""
    try:
        return dt.date.fromisoformat(text).isoformat()
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an ISO date like 2024-05-02, got {text!r}") from None


def _class_name(text: str) -> str:
    """Parse --class: a storage class name as classes.yaml spells them."""
    if not re.fullmatch(r"[a-z0-9][a-z0-9._-]*", text):
        raise argparse.ArgumentTypeError(f"expected a lower-case class name like nvme-local, got {text!r}")
    return text


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Add the `baseline` command and its `record` action to the `kvmio` subparsers."""
    parser: argparse.ArgumentParser = sub.add_parser(
        "baseline", help="record performance baselines", description=__doc__
    )
    actions = parser.add_subparsers(dest="baseline_command", required=True, metavar="ACTION")
    rec = actions.add_parser(
        "record",
        help="record medians, samples and noise of perf results files as baselines",
        description=(
            "Record the median, raw samples, noise and environment fingerprint of every target, profile and "
            "metric in perf results files (schema: perf-results.schema.json) into a baseline YAML file. "
            "Each --results file is one session; give several recorded minutes apart so the noise includes "
            "the drift between sessions (the gate widens its band to 3 x that noise). "
            "Entries already in the file for other targets or profiles are kept; an entry with the same "
            "target and profile is replaced."
        ),
    )
    rec.add_argument(
        "--results",
        required=True,
        type=Path,
        action="append",
        metavar="FILE",
        help="perf results JSON written by the perf suite (--kvmio-perf-results); repeat it for several sessions",
    )
    rec.add_argument("--out", required=True, type=Path, metavar="FILE", help="baseline YAML, e.g. thresholds/baselines/nvme-local.yaml")
    rec.add_argument(
        "--tolerance",
        type=_tolerance,
        default=None,
        help=f"relative tolerance of every recorded metric (default: keep the replaced entry's, else {DEFAULT_TOLERANCE})",
    )
    rec.add_argument(
        "--class",
        dest="storage_class",
        type=_class_name,
        default=None,
        metavar="NAME",
        help="storage class to record in the fingerprint (must agree with the results' own)",
    )
    rec.add_argument(
        "--thresholds",
        type=Path,
        default=None,
        metavar="DIR",
        help="check profiles against this thresholds directory and fill in the storage class from it",
    )
    rec.add_argument("--at", type=_date, default=None, metavar="DATE", help="recording date (default: today, UTC)")
    rec.set_defaults(func=run_record)
    return parser


def run_record(args: argparse.Namespace) -> int:
    """Run `kvmio baseline record` from parsed arguments."""
    summary, warnings = record(
        args.results,
        args.out,
        tolerance=args.tolerance,
        storage_class=args.storage_class,
        thresholds_dir=args.thresholds,
        at=args.at,
    )
    for warning in warnings:
        print(f"kvmio baseline record: warning: {warning}", file=sys.stderr)
    print(summary)
    return 0


class _NotANumber(ValueError):
    """NaN or Infinity in a results file: Python's JSON reader accepts them, JSON does not."""


def _refuse_constant(name: str) -> Any:
    raise _NotANumber(name)


def _read_results(path: Path) -> dict[str, Any]:
    label = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"--results {label}: file not found; pass the JSON the perf suite wrote") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"--results {label}: cannot read: {exc}") from None
    try:
        document = json.loads(text, parse_constant=_refuse_constant)
    except _NotANumber as exc:
        raise InputError(
            f"--results {label}: {exc} is not a number; the perf suite writes null where fio measured nothing"
        ) from None
    except json.JSONDecodeError as exc:
        raise InputError(f"--results {label}:{exc.lineno}:{exc.colno}: not JSON: {exc.msg}") from None
    try:
        validate("perf-results", document, f"--results {label}")
    except ThresholdsError as exc:
        raise InputError(str(exc)) from None
    result: dict[str, Any] = document
    return result


def _read_existing(path: Path) -> tuple[str, dict[str, Any]]:
    """Return the leading comment block and the document of an existing baseline file."""
    if not path.exists():
        return "", {"version": 1, "baselines": []}
    label = f"--out {path}"
    try:
        document = load_yaml(path, label)
        if document is None:
            document = {"version": 1, "baselines": []}
        validate("baselines", document, label)
    except ThresholdsError as exc:
        raise InputError(f"{exc}\n(fix or move the existing file; nothing was written)") from None
    header_lines: list[str] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("#") or (header_lines and not line.strip()):
            header_lines.append(line)
        else:
            break
    header = "\n".join(header_lines).rstrip()
    return (header + "\n" if header else ""), document


def _number(value: float) -> float | int:
    """Return an integral float as int, so the YAML reads 142240 rather than 142240.0."""
    return int(value) if float(value).is_integer() else round(float(value), 3)


def _pooled(metric: str, measured: list[dict[str, Any]], label: str) -> float | None:
    """Return a latency percentile of every session's json+ histogram merged, None for other metrics or when a
    session has none (then the baseline is the median of the samples)."""
    found = percentile_of(metric)
    if found is None:
        return None
    kind, pct = found
    documents = [result.get("histograms", {}).get(kind) for result in measured]
    if any(document is None for document in documents):
        return None
    try:
        histogram = merge(histogram_of_bins(document) for document in documents if document is not None)
    except HistogramError as exc:
        raise CommandError(f"{label}: histograms.{kind}: {exc}") from None
    return histogram.percentile(pct) if histogram.total else None


def record(
    results: Path | Sequence[Path],
    out: Path,
    *,
    tolerance: float | None = None,
    storage_class: str | None = None,
    thresholds_dir: Path | None = None,
    at: str | None = None,
) -> tuple[str, list[str]]:
    """Merge baselines from one or several results files (sessions) into `out`; return a summary and warnings."""
    files = [results] if isinstance(results, Path) else list(results)
    if not files:
        raise CommandError("--results: no results file given; pass the JSON the perf suite wrote")
    documents = [(path, _read_results(path)) for path in files]
    thresholds: Thresholds | None = None
    if thresholds_dir is not None:
        try:
            thresholds = load_thresholds(thresholds_dir)
        except ThresholdsError as exc:
            raise InputError(f"--thresholds: {exc}") from None
    header, existing = _read_existing(out)
    old_entries: dict[tuple[str, str], dict[str, Any]] = {
        (e["target"], e["profile"]): e for e in existing["baselines"]
    }
    recorded_at = at or dt.datetime.now(dt.UTC).date().isoformat()
    warnings: list[str] = []
    if len(files) == 1:
        warnings.append(
            "one results file: the recorded noise is that session's own dispersion, not the drift between "
            "sessions; pass --results again with a run recorded minutes later to measure it"
        )

    # (target, profile) -> the results of every session that measured it, and where it was first seen.
    sessions: dict[tuple[str, str], list[dict[str, Any]]] = {}
    fingerprints: dict[tuple[str, str], tuple[str, dict[str, Any]]] = {}
    for path, document in documents:
        in_this_file: set[tuple[str, str]] = set()
        for index, result in enumerate(document["results"]):
            where = f"--results {path}: results[{index}]"
            target, profile = result["target"], result["profile"]
            key = (target, profile)
            if key in in_this_file:
                raise CommandError(f"{where}: a second result for {target} {profile}; merge the samples into one result")
            in_this_file.add(key)
            if thresholds is not None and profile not in thresholds.profiles:
                raise CommandError(
                    f"{where}.profile: unknown profile {profile!r}; {thresholds.directory}/profiles.yaml defines "
                    f"{', '.join(thresholds.profiles)}"
                )
            fingerprint = {
                k: v if isinstance(v, str) else json.dumps(v)
                for k, v in {**document["fingerprint"], **result.get("fingerprint", {})}.items()
                if v is not None
            }
            if storage_class is not None:
                named = fingerprint.get("storage_class")
                if named is not None and named != storage_class:
                    raise CommandError(
                        f"{where}: the results say storage class {named!r} for {target}, --class says "
                        f"{storage_class!r}; drop --class or record this target separately"
                    )
                fingerprint["storage_class"] = storage_class
            elif "storage_class" not in fingerprint and thresholds is not None:
                found = thresholds.class_for(target, result.get("serial"))
                if found is not None:
                    fingerprint["storage_class"] = found.name
            if key in fingerprints:
                first, recorded = fingerprints[key]
                differences = fingerprint_diff(recorded, fingerprint)
                if differences:
                    raise CommandError(
                        f"{where}: {target} {profile} was measured on another environment than in {first} "
                        f"({'; '.join(differences)}); record sessions of one environment into one baseline"
                    )
            else:
                fingerprints[key] = (where, fingerprint)
            sessions.setdefault(key, []).append(result)

    new_entries: dict[tuple[str, str], dict[str, Any]] = {}
    for key, measured in sessions.items():
        target, profile = key
        fingerprint = fingerprints[key][1]
        if "storage_class" not in fingerprint:
            warnings.append(f"{target} {profile}: no storage class in the fingerprint; pass --class or --thresholds")
        if len(measured) < len(files):
            warnings.append(
                f"{target} {profile}: in {len(measured)} of {len(files)} results files; its noise covers "
                f"{'that session' if len(measured) == 1 else 'those sessions'} only"
            )
        old = old_entries.get(key, {})
        previous = old.get("metrics", {})
        multiple = float(old.get("noise_multiple", existing.get("noise_multiple", DEFAULT_NOISE_MULTIPLE)))
        metrics: dict[str, Any] = {}
        names = dict.fromkeys(metric for result in measured for metric in result["samples"])
        for metric in names:
            label = f"{target} {profile} {metric}"
            if metric in _NOT_BASELINED:
                continue
            if metric not in METRIC_DIRECTIONS:
                warnings.append(f"{label}: not a metric baselines track ({', '.join(METRIC_DIRECTIONS)}); skipped")
                continue
            per_session = [result["samples"][metric] for result in measured if metric in result["samples"]]
            values = [v for session in per_session for v in session]
            if any(v is None for v in values):
                warnings.append(f"{label}: not measured in every run (None); skipped, so it has no baseline")
                continue
            if any(not math.isfinite(v) or v < 0 for v in values):
                warnings.append(f"{label}: negative or non-finite samples {values}; skipped")
                continue
            median = statistics.median(values)
            pooled = _pooled(metric, measured, label)
            if pooled is not None:
                median = pooled
            metric_tolerance = tolerance
            if metric_tolerance is None:
                metric_tolerance = previous.get(metric, {}).get("tolerance", DEFAULT_TOLERANCE)
            if len(values) < 3:
                warnings.append(f"{label}: only {len(values)} run(s); 3 or more make a robust median")
            entry: dict[str, Any] = {"median": _number(median), "tolerance": metric_tolerance}
            noise = session_noise(per_session)
            if math.isfinite(noise):
                noise = round(noise, 3)
                entry["noise"] = noise
                band = band_of(metric_tolerance, noise, multiple, METRIC_DIRECTIONS[metric])
                if band > metric_tolerance:
                    warnings.append(
                        f"{label}: noise {noise:.0%} over {len(per_session)} session(s) widens the gate's band from "
                        f"{metric_tolerance:.0%} to {band:.0%} ({multiple:g} × noise); record on a quieter system "
                        "to narrow it"
                    )
                bound = noise_bound(noise, len(values))
                outer = band_of(metric_tolerance, bound, multiple, METRIC_DIRECTIONS[metric])
                if outer > band:
                    warnings.append(
                        f"{label}: with {len(values)} samples the noise may be up to {bound:.0%} "
                        f"({NOISE_CONFIDENCE:.0%} bound): quiet runs out to {outer:.0%} are inconclusive, not failed; "
                        "more sessions narrow it"
                    )
            else:
                warnings.append(f"{label}: samples vary around a zero median; no noise recorded, the band is the tolerance")
            entry["sessions"] = len(per_session)
            if pooled is not None:
                entry["estimator"] = POOLED
            entry["direction"] = METRIC_DIRECTIONS[metric]
            entry["samples"] = [_number(v) for v in values]
            metrics[metric] = entry
        if not metrics:
            warnings.append(f"{target} {profile}: no metric could be recorded; entry skipped")
            continue
        new_entries[key] = {
            "target": target,
            "profile": profile,
            "at": recorded_at,
            **({"noise_multiple": old["noise_multiple"]} if "noise_multiple" in old else {}),
            "fingerprint": fingerprint,
            "metrics": metrics,
        }

    if not new_entries:
        named = " ".join(f"--results {path}" for path in files)
        raise CommandError(f"{named}: no result with a recordable metric; nothing was written")

    merged: list[dict[str, Any]] = []
    replaced = 0
    for old_entry in existing["baselines"]:
        key = (old_entry["target"], old_entry["profile"])
        if key in new_entries:
            merged.append(new_entries.pop(key))
            replaced += 1
        else:
            merged.append(old_entry)
    added = len(new_entries)
    merged.extend(new_entries.values())
    output: dict[str, Any] = {"version": 1}
    if "noise_multiple" in existing:
        output["noise_multiple"] = existing["noise_multiple"]
    output["baselines"] = merged
    try:
        validate("baselines", output, f"--out {out}")
    except ThresholdsError as exc:  # a bug here, not the user's: say so
        raise CommandError(f"refusing to write an invalid baseline file: {exc}") from None
    try:
        write_atomically(out, header + yaml.dump(output, Dumper=_Dumper, sort_keys=False, allow_unicode=True))
    except OSError as exc:
        raise CommandError(f"--out {out}: cannot write: {exc}") from None
    count = "1 session" if len(files) == 1 else f"{len(files)} sessions"
    return (
        f"{out}: recorded {added + replaced} entries ({added} new, {replaced} replaced), {len(merged)} in the file; "
        f"noise from {count}",
        warnings,
    )


class _Dumper(yaml.SafeDumper):
    """Write lists of numbers on one line and keep keys in the order given."""


def _represent_list(dumper: yaml.SafeDumper, data: list[Any]) -> yaml.Node:
    flow = all(isinstance(item, (int, float)) for item in data)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)


_Dumper.add_representer(list, _represent_list)
