"""Read fio JSON output and normalize it to metrics per job and direction.

Strict about meaning, tolerant about packaging: text before the document (fio
notes, a `2>&1` capture), several concatenated documents (`--status-interval`,
the last is the final result), fio 2.x (latencies in µs, `io_bytes` in KiB) and
3.x (`*_ns`, bytes), `json+` bins, group_reporting or per-job output, read,
write, trim and unified "mixed", and client/server output (`client_stats`, one
entry per job and client, plus fio's "All clients" sum). Latency that fio did
not record (gtod_reduce, disable_clat) is None and noted, never 0 µs; so are
job options fio did not report (fio 2.x without "job options"). Completion
latency (fio's `clat`) is `clat_*_us`, total latency (fio's `lat`, submission
included) is `tlat_*_us`; neither stands in for the other.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import math
import os
import re
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import jsonschema

from pytest_kvmio.files.yamldoc import schema as schema_of
from pytest_kvmio.perf.histogram import HistogramError, LatencyHistogram, parse_bins

DIRECTIONS = ("read", "write", "trim", "mixed")

# Latency statistics per kind and the fio percentile each reads ("99.900000" → 99.9).
PERCENTILES = {"p50": 50.0, "p90": 90.0, "p99": 99.0, "p99_9": 99.9, "p99_99": 99.99}
LATENCY_STATS = ("mean", *PERCENTILES)
# Metric prefix → fio latency block: completion latency and total latency.
LATENCY_KINDS = {"clat": "clat", "tlat": "lat"}
LATENCY_METRICS = tuple(f"{kind}_{stat}_us" for kind in LATENCY_KINDS for stat in LATENCY_STATS)



def percentile_of(metric: str) -> tuple[str, float] | None:
    """Return (latency kind, percentile) of a percentile metric (`clat_p99_us` → ("clat", 99.0)), else None."""
    for kind in LATENCY_KINDS:
        for name, pct in PERCENTILES.items():
            if metric == f"{kind}_{name}_us":
                return kind, pct
    return None


# fio's name of the aggregate entry of client/server output.
ALL_CLIENTS = "All clients"
# fio's default server port: not shown in host names.
FIO_DEFAULT_PORT = 8765

# Options under which fio deliberately leaves the queue idle: no lower bound.
THROTTLING_OPTIONS = ("rate", "rate_iops", "rate_min", "rate_iops_min", "thinktime")

# Little's law bounds, see check_plausibility().
CONCURRENCY_MARGIN = 1.5
MIN_CONCURRENCY = 1e-3

_JSON_START = re.compile(r"^[ \t]*\{", re.MULTILINE)
# fio opens every document with "{" alone on its line; such a line must parse.
_FIO_OPENING = re.compile(r"\{[ \t]*\r?\n")


class FioError(ValueError):
    """fio output that can't be read; the message names the source and JSON path."""

    def __init__(
        self, source: str, message: str, path: str | None = None, document: str = ""
    ) -> None:
        self.source = source
        self.path = path
        where = ": ".join(part for part in (source, document, path) if part)
        super().__init__(f"{where}: {message}")


class FioJobError(FioError):
    """fio ran, but a job reported an error: its numbers are not a measurement."""

    def __init__(self, source: str, message: str, job_errors: list[str]) -> None:
        self.job_errors = list(job_errors)
        super().__init__(source, message)


@dataclass(frozen=True)
class FioMetrics:
    """Normalized result of one fio job (or merged group) in one direction."""

    job: str
    direction: str
    groupid: int
    iops: float
    bw_bytes: float
    clat_mean_us: float | None
    clat_p50_us: float | None
    clat_p90_us: float | None
    clat_p99_us: float | None
    clat_p99_9_us: float | None
    clat_p99_99_us: float | None
    tlat_mean_us: float | None
    tlat_p50_us: float | None
    tlat_p90_us: float | None
    tlat_p99_us: float | None
    tlat_p99_9_us: float | None
    tlat_p99_99_us: float | None
    runtime_s: float
    io_bytes: int
    total_ios: int | None
    errors: int
    error_code: int
    cpu_usr_pct: float | None
    cpu_sys_pct: float | None
    rw: str | None
    bs: str | None
    iodepth: int | None
    numjobs: int | None
    ioengine: str | None
    filename: str | None
    jobs_merged: int | None
    latency_known: bool
    hostname: str | None = None
    port: int | None = None
    notes: tuple[str, ...] = ()
    options: dict[str, str] = field(default_factory=dict, compare=False)
    #: json+ latency histograms by kind ("clat", "tlat"), where fio printed `bins` (see perf/histogram.py).
    histograms: dict[str, LatencyHistogram] = field(default_factory=dict, compare=False)

    @property
    def client(self) -> str | None:
        """Return the fio server this entry ran on (`host`, `host:port` off fio's port), None if local."""
        return _client_name(self.hostname, self.port)

    @property
    def label(self) -> str:
        """Return `job/direction` (`job/direction on host` for a client), the name used in messages."""
        on = f" on {self.client}" if self.client else ""
        return f"{self.job}/{self.direction}{on}"

    @property
    def max_in_flight(self) -> int | None:
        """Return the most I/Os fio may keep outstanding for this entry, None if unknown."""
        if self.iodepth is None or self.jobs_merged is None:
            return None
        return self.iodepth * self.jobs_merged

    def as_dict(self) -> dict[str, Any]:
        """Return the metrics as plain JSON-serializable values."""
        data = asdict(self)
        data["notes"] = list(self.notes)
        data["histograms"] = sorted(self.histograms)  # which kinds carry json+ bins; the bins stay out
        return data


@dataclass(frozen=True)
class FioSnapshot:
    """One fio JSON document: an interim report or the final one."""

    version: str
    timestamp_ms: int | None
    metrics: tuple[FioMetrics, ...]
    all_clients: tuple[FioMetrics, ...] = ()
    job_errors: tuple[str, ...] = ()


@dataclass(frozen=True)
class FioReport:
    """Everything read from one fio output file; `metrics` are the final result."""

    source: str
    snapshots: tuple[FioSnapshot, ...]
    preamble: str = ""

    @property
    def final(self) -> FioSnapshot:
        """Return the last document, fio's final result."""
        return self.snapshots[-1]

    @property
    def version(self) -> str:
        """Return the fio version that wrote the final document."""
        return self.final.version

    @property
    def metrics(self) -> tuple[FioMetrics, ...]:
        """Return the final metrics, one entry per job (per client) and direction."""
        return self.final.metrics

    @property
    def all_clients(self) -> tuple[FioMetrics, ...]:
        """Return fio's "All clients" sums of client/server output (empty otherwise)."""
        return self.final.all_clients

    def job_errors(self) -> list[str]:
        """Return one line per job of the final result that reported an error (fio exits 1 then)."""
        return list(self.final.job_errors)

    def get(self, job: str, direction: str) -> FioMetrics:
        """Return the first final entry of `job` in `direction`."""
        for m in self.metrics:
            if m.job == job and m.direction == direction:
                return m
        have = ", ".join(m.label for m in self.metrics)
        raise KeyError(f"{self.source}: no {job}/{direction} in the result (have {have})")

    def problems(self) -> list[str]:
        """Return the plausibility problems of all final entries, "All clients" sums included."""
        return [p for m in (*self.metrics, *self.all_clients) for p in check_plausibility(m)]


def read_fio(path: str | Path) -> FioReport:
    """Read and normalize the fio output file at `path`."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise FioError(str(path), f"can't read: {exc.strerror or exc}") from exc
    return parse_fio(text, str(path))


def parse_fio(text: str, source: str) -> FioReport:
    """Parse fio output `text` (named `source` in errors) into a report."""
    preamble, documents = _split_documents(text, source)
    schema = _validator()
    snapshots = []
    for index, doc in enumerate(documents):
        prefix = f"document {index + 1} of {len(documents)}" if len(documents) > 1 else ""
        _refuse_non_finite(doc, source, prefix)
        _validate(schema, doc, source, prefix)
        _check_bins(doc, source, prefix)
        snapshots.append(_snapshot(doc))
    return FioReport(source=source, snapshots=tuple(snapshots), preamble=preamble)


def _split_documents(text: str, source: str) -> tuple[str, list[Any]]:
    """Return the text before the first JSON document and all documents."""
    decoder = json.JSONDecoder()
    documents: list[Any] = []
    preamble = ""
    pos = 0
    while True:
        match = _JSON_START.search(text, pos)
        if match is None:
            break
        start = text.index("{", match.start())
        if not documents:
            preamble = text[:start]
        try:
            doc, end = decoder.raw_decode(text, start)
        except json.JSONDecodeError as exc:
            if not _FIO_OPENING.match(text, start):
                pos = match.end()  # a text line that happens to start with "{"
                continue
            raise _decode_error(source, text, start, len(documents), exc) from None
        documents.append(doc)
        pos = end
    if not documents:
        head = text.lstrip()[:60]
        shown = repr(head) if head else "empty input"
        raise FioError(
            source,
            f"no fio JSON document found (run fio with --output-format=json); starts with {shown}",
        )
    return preamble, documents


def _decode_error(
    source: str, text: str, start: int, done: int, exc: json.JSONDecodeError
) -> FioError:
    """Return the error for a JSON document that does not parse."""
    first = text.count("\n", 0, start) + 1
    line = text.count("\n", 0, exc.pos) + 1
    # fio ends every document with "}" in column 0; without one it was cut off.
    truncated = re.search(r"^\}", text[start:], re.MULTILINE) is None
    what = "truncated" if truncated else "invalid"
    nth = f"document {done + 1}" if done else "the JSON document"
    return FioError(
        source, f"{what} fio JSON: {nth} starting at line {first} breaks at line {line}: {exc.msg}"
    )


@lru_cache(maxsize=1)
def _validator() -> jsonschema.protocols.Validator:
    """Return the validator of the fio schema shipped with the package."""
    schema = schema_of("fio")
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def _refuse_non_finite(doc: Any, source: str, prefix: str) -> None:
    """Raise FioError for the first NaN or ±Infinity (tokens Python's json accepts, fio never writes)."""
    path = _non_finite_path(doc)
    if path is None:
        return
    value = _lookup(doc, path)
    token = "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    raise FioError(source, f"expected a finite number, got {token}", _format_path(path), prefix)


def _non_finite_path(value: Any) -> list[Any] | None:
    """Return the JSON path of the first non-finite number in `value`, None if there is none."""
    if isinstance(value, float):
        return None if math.isfinite(value) else []
    items: Any = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        found = _non_finite_path(item)
        if found is not None:
            return [key, *found]
    return None


def _check_bins(doc: dict[str, Any], source: str, prefix: str) -> None:
    """Raise FioError naming the bin of a json+ histogram that is not one of fio's buckets."""
    for entries in ("jobs", "client_stats"):
        for index, job in enumerate(doc.get(entries, [])):
            for direction in DIRECTIONS:
                for block in ("clat_ns", "lat_ns", "clat", "lat"):
                    bins = job.get(direction, {}).get(block, {}).get("bins")
                    if bins is None:
                        continue
                    try:
                        parse_bins(bins, unit_ns=1 if block.endswith("_ns") else 1000)
                    except HistogramError as exc:
                        path = [entries, index, direction, block, "bins", *([exc.key] if exc.key else [])]
                        raise FioError(source, str(exc), _format_path(path), prefix) from None


def _lookup(doc: Any, path: list[Any]) -> Any:
    """Return the value at a JSON path."""
    for part in path:
        doc = doc[part]
    return doc


def _validate(validator: Any, doc: Any, source: str, prefix: str) -> None:
    """Raise FioError for the most relevant schema violation of `doc`."""
    errors = list(validator.iter_errors(doc))
    if not errors:
        return
    error = jsonschema.exceptions.best_match(errors)
    path = list(error.absolute_path)
    if error.validator == "required":
        missing = re.match(r"'(.*)' is a required property", error.message)
        if missing:
            path.append(missing.group(1))
    more = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
    raise FioError(source, _describe(error) + more, _format_path(path), prefix)


def _describe(error: jsonschema.ValidationError) -> str:
    """Return a short reason for a schema error, naming the value found."""
    got = json.dumps(error.instance)
    if len(got) > 40:
        got = got[:37] + "..."
    if error.validator == "type":
        expected = error.validator_value
        names = expected if isinstance(expected, list) else [expected]
        wanted = " or ".join(f"{'an' if n[0] in 'aeiou' else 'a'} {n}" for n in names)
        return f"expected {wanted}, got {got}"
    if error.validator == "required":
        return "required field is missing"
    if error.validator == "minimum":
        return f"expected at least {error.validator_value}, got {got}"
    if error.validator == "minItems":
        return "expected at least one entry, got none"
    if error.validator == "anyOf" and "jobname" in error.schema.get("properties", {}):
        return "expected at least one of read, write, trim, mixed"
    return error.message


def _format_path(parts: list[Any]) -> str:
    """Return a JSON path like `jobs[0]["job options"].bs`."""
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        elif re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", str(part)):
            out += f".{part}" if out else str(part)
        else:
            out += f"[{json.dumps(part)}]"
    return out or "(document)"


def _snapshot(doc: dict[str, Any]) -> FioSnapshot:
    """Normalize one validated fio document: local `jobs`, then each client's `client_stats`."""
    entries = list(doc.get("jobs", []))
    clients = doc.get("client_stats", [])
    sums = [job for job in clients if job["jobname"] == ALL_CLIENTS]
    entries.extend(job for job in clients if job["jobname"] != ALL_CLIENTS)
    per_group: dict[tuple[str | None, int | None, int], int] = {}
    for job in entries:
        key = _group_key(job)
        per_group[key] = per_group.get(key, 0) + 1
    metrics = [
        m
        for job in entries
        for m in _job_metrics(job, _global_options(doc, job), alone=per_group[_group_key(job)] == 1)
    ]
    # "All clients" sums every client; the host fio puts in it is just the last client's.
    all_clients = [
        dataclasses.replace(m, hostname=None, port=None)
        for job in sums
        for m in _job_metrics(job, _global_options(doc, job), alone=True)
    ]
    return FioSnapshot(
        version=doc["fio version"],
        timestamp_ms=doc.get("timestamp_ms", _ms(doc.get("timestamp"))),
        metrics=tuple(metrics),
        all_clients=tuple(all_clients),
        job_errors=tuple(_job_error(job) for job in entries if job["error"]),
    )


def _group_key(job: dict[str, Any]) -> tuple[str | None, int | None, int]:
    """Return what makes a reporting group: the client (None locally) and the group id."""
    return job.get("hostname"), job.get("port"), job["groupid"]


def _global_options(doc: dict[str, Any], job: dict[str, Any]) -> dict[str, str]:
    """Return the global options that apply to a job: one mapping, or the job's client's entry.

    Newer fio clients list global options once per client, each with its hostname and port;
    fio's "All clients" sum gets the options every client shares.
    """
    found = doc.get("global options", {})
    if isinstance(found, dict):
        return dict(found)
    per_client = [{k: v for k, v in options.items() if k not in ("hostname", "port")} for options in found]
    if job["jobname"] == ALL_CLIENTS:
        first, *others = per_client or [{}]
        return {k: v for k, v in first.items() if all(other.get(k) == v for other in others)}
    for options, client in zip(found, per_client):
        if (options.get("hostname"), options.get("port")) == (job.get("hostname"), job.get("port")):
            return client
    return {}


def _job_error(job: dict[str, Any]) -> str:
    """Return `job NAME [on HOST]: fio error N (ENAME: text)` for a job that reported an error."""
    code = job["error"]
    name = errno.errorcode.get(code)
    meaning = f" ({name}: {os.strerror(code)})" if name else ""
    client = _client_name(job.get("hostname"), job.get("port"))
    on = f" on {client}" if client else ""
    return f"job {job['jobname']}{on}: fio error {code}{meaning}"


def _client_name(hostname: str | None, port: int | None) -> str | None:
    """Return `host`, or `host:port` off fio's default port; None for a local job."""
    if hostname is None:
        return None
    return hostname if port in (None, FIO_DEFAULT_PORT) else f"{hostname}:{port}"


def _ms(seconds: int | None) -> int | None:
    """Return seconds as milliseconds, None stays None."""
    return None if seconds is None else seconds * 1000


def _job_metrics(
    job: dict[str, Any], global_options: dict[str, str], alone: bool
) -> list[FioMetrics]:
    """Return one FioMetrics per direction that did I/O (or was meant to).

    `alone`: the job is the only entry of its group, so it may be a
    group_reporting merge of several jobs.
    """
    options = {**global_options, **job.get("job options", {})}
    present = [d for d in DIRECTIONS if d in job]
    active = [d for d in present if _did_io(job[d])]
    if not active:
        # A job that did no I/O (it failed early) still shows up, with its error.
        active = [d for d in _intended_directions(options) if d in present] or present[:1]
    # fio lists the options a job set; one it does not list has fio's default. Without
    # "job options" (fio 2.x, "All clients") nothing says what the job set: unknown.
    listed = "job options" in job
    return [_direction_metrics(job, d, options, alone, listed) for d in active]


def _did_io(ddir: dict[str, Any]) -> bool:
    """Return whether a direction block records completed I/O.

    total_ios is not enough: a job that failed on its first I/O counts it.
    """
    return bool(ddir["io_bytes"] or ddir["iops"])


def _intended_directions(options: dict[str, str]) -> list[str]:
    """Return the directions a job's `rw` option asks for."""
    if options.get("unified_rw_reporting", "0") not in ("0", "none"):
        return ["mixed"]
    rw = options.get("rw", options.get("readwrite", "read"))
    if rw in ("rw", "readwrite", "randrw"):
        return ["read", "write"]
    if rw == "trimwrite":
        return ["trim", "write"]
    for direction in ("trim", "write", "read"):
        if direction in rw:
            return [direction]
    return ["read"]


def _direction_metrics(
    job: dict[str, Any], direction: str, options: dict[str, str], alone: bool, listed: bool
) -> FioMetrics:
    """Normalize one direction block of one job; `listed`: fio reported the job's options."""
    ddir = job[direction]
    notes: list[str] = []
    histograms: dict[str, LatencyHistogram] = {}
    latency, known = _latency(ddir, notes, histograms)
    error_code = job["error"]
    rw = options.get("rw", options.get("readwrite", "read" if listed else None))
    iodepth = _int_option(options, "iodepth", 1 if listed else None)
    numjobs = _int_option(options, "numjobs", 1 if listed else None)
    unknown = [name for name, value in (("rw", rw), ("iodepth", iodepth), ("numjobs", numjobs)) if value is None]
    if unknown:
        notes.append(f"fio reported no job options: {', '.join(unknown)} unknown")
    return FioMetrics(
        job=job["jobname"],
        direction=direction,
        groupid=job["groupid"],
        iops=float(ddir["iops"]),
        bw_bytes=float(ddir["bw_bytes"]) if "bw_bytes" in ddir else float(ddir["bw"]) * 1024,
        **latency,
        runtime_s=ddir["runtime"] / 1000,
        # fio 3.0 made io_bytes bytes and added io_kbytes; fio 2.x io_bytes is KiB.
        io_bytes=ddir["io_bytes"] if "io_kbytes" in ddir else ddir["io_bytes"] * 1024,
        total_ios=ddir.get("total_ios"),
        errors=job.get("total_err", 0) + (1 if error_code else 0),
        error_code=error_code,
        cpu_usr_pct=_float_or_none(job.get("usr_cpu")),
        cpu_sys_pct=_float_or_none(job.get("sys_cpu")),
        rw=rw,
        bs=options.get("bs", options.get("blocksize")),
        iodepth=iodepth,
        numjobs=numjobs,
        ioengine=options.get("ioengine"),
        filename=options.get("filename"),
        jobs_merged=_jobs_merged(job, ddir, numjobs) if alone else 1,
        latency_known=known,
        hostname=job.get("hostname"),
        port=job.get("port"),
        notes=tuple(notes),
        options=options,
        histograms=histograms,
    )


def _latency(
    ddir: dict[str, Any], notes: list[str], histograms: dict[str, LatencyHistogram]
) -> tuple[dict[str, float | None], bool]:
    """Return the `clat_*_us` and `tlat_*_us` fields and whether completion latency is known; json+ histograms
    of the recorded kinds go into `histograms`.

    Each kind comes only from its own fio block: percentiles fio did not report for
    a kind (clat with lat_percentiles=1, tlat without) stay None.
    """
    values: dict[str, float | None] = dict.fromkeys(LATENCY_METRICS)
    if not _did_io(ddir):
        notes.append("no I/O completed: latency unknown")
        return values, False
    recorded = {}
    for kind, block in LATENCY_KINDS.items():
        stat, scale = _stat(ddir, block)
        recorded[kind] = stat is not None and _recorded(stat)
        if stat is None or not recorded[kind]:
            continue
        values[f"{kind}_mean_us"] = stat["mean"] / scale
        if stat.get("bins"):
            histograms[kind] = parse_bins(stat["bins"], unit_ns=1 if scale == 1000 else 1000)
        by_value = {float(k): v for k, v in (stat.get("percentile") or {}).items()}
        for name, pct in PERCENTILES.items():
            value = by_value.get(pct)
            values[f"{kind}_{name}_us"] = None if value is None else value / scale
    if not recorded["clat"]:
        notes.append("completion latency not recorded (gtod_reduce=1 or disable_clat=1)")
    elif values["clat_p99_us"] is None and values["tlat_p99_us"] is not None:
        notes.append("fio reported percentiles of total latency only (lat_percentiles=1): clat percentiles unknown")
    return values, recorded["clat"]


def _stat(ddir: dict[str, Any], name: str) -> tuple[dict[str, Any] | None, int]:
    """Return a latency block and its divisor to µs (`*_ns` in fio 3, µs in fio 2)."""
    if f"{name}_ns" in ddir:
        return ddir[f"{name}_ns"], 1000
    if name in ddir:
        return ddir[name], 1
    return None, 1


def _recorded(stat: dict[str, Any]) -> bool:
    """Return whether fio measured this latency (gtod_reduce leaves all zeros)."""
    if "N" in stat and stat["N"] == 0:
        return False
    return bool(stat["mean"] or stat["max"])


def _jobs_merged(job: dict[str, Any], ddir: dict[str, Any], numjobs: int | None) -> int | None:
    """Return how many fio jobs the only entry of a group sums up.

    fio does not list group_reporting among the job options; an entry alone in
    its group is either one job or the merge of the whole group (numjobs
    clones and any other job sections of the group). None when neither numjobs
    nor job_runtime tells.
    """
    merged = numjobs
    # job_runtime sums the runtime of every merged job: with several job
    # sections in one group it reveals more jobs than numjobs says.
    if job.get("job_runtime") and ddir["runtime"]:
        merged = max(merged or 1, round(job["job_runtime"] / ddir["runtime"]))
    return merged


def _int_option(options: dict[str, str], name: str, default: int | None) -> int | None:
    """Return an integer job option: `default` when absent, None when not a plain number."""
    if name not in options:
        return default
    try:
        return int(options[name])
    except ValueError:
        return None


def _float_or_none(value: Any) -> float | None:
    """Return value as float, None stays None."""
    return None if value is None else float(value)


def check_plausibility(metrics: FioMetrics) -> list[str]:
    """Return reasons why `metrics` can't be a real measurement (Little's law).

    Little's law: I/Os in flight L = IOPS × mean latency. fio never keeps more
    than iodepth × (jobs merged into this entry) outstanding, and completion
    latency (clat) is part of the time an I/O is in flight, so
    L > that bound × CONCURRENCY_MARGIN is impossible (the margin absorbs rate
    averaging and ramp edges). L may be far below the bound legitimately: sync
    engines cap the depth at 1, buffered libaio is synchronous, TCG guests
    spend most of the time in fio itself. Only an unthrottled job with
    L < MIN_CONCURRENCY (the queue idle 99.9% of the time) is flagged as too low;
    with rate*/thinktime options idle time is intended, so no lower bound.
    Unknown latency (gtod_reduce) and entries without I/O are never flagged, nor
    entries whose iodepth or job count fio did not report (the bound and the
    throttling options are unknown; the entry's notes say so).
    """
    if not metrics.latency_known or metrics.clat_mean_us is None or metrics.iops <= 0:
        return []
    bound = metrics.max_in_flight
    if bound is None:
        return []
    in_flight = metrics.iops * metrics.clat_mean_us / 1e6
    stated = (
        f"{metrics.label}: {metrics.iops:,.0f} IOPS × {metrics.clat_mean_us:,.2f} µs mean completion latency "
        f"= {_fmt(in_flight)} I/Os in flight"
    )
    if in_flight > bound * CONCURRENCY_MARGIN:
        jobs = f"{metrics.jobs_merged} job{'s' if metrics.jobs_merged != 1 else ''}"
        return [
            f"{stated}, but at most {bound} can be (iodepth {metrics.iodepth} × {jobs}): "
            "units can't be right (latency in ms reported as µs? IOPS summed twice?)"
        ]
    throttled = any(name in metrics.options for name in THROTTLING_OPTIONS)
    if in_flight < MIN_CONCURRENCY and not throttled:
        return [
            f"{stated}; an unthrottled job keeps at least one I/O in flight most of the time: "
            "units can't be right (latency in µs reported as ms? IOPS too low?)"
        ]
    return []


def _fmt(value: float) -> str:
    """Return a count with sensible precision."""
    if value >= 100 or math.isclose(value, round(value)):
        return f"{value:,.0f}"
    return f"{value:.3g}"
