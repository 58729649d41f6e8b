"""Load fio profiles, storage classes, limits and baselines from a `thresholds/` directory.

Layout (all YAML, each file validated by a JSON Schema in `pytest_kvmio/schemas/`):

    thresholds/profiles.yaml      fio profiles          (profiles.schema.json)
    thresholds/classes.yaml       storage classes + limits (classes.schema.json)
    thresholds/baselines/*.yaml   recorded baselines    (baselines.schema.json), optional

A bad file raises `ThresholdsError` naming the file, the path inside it and what was expected.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

import jsonschema
import yaml

__all__ = [
    "DEFAULT_MAX_SPREAD",
    "DEFAULT_NOISE_MULTIPLE",
    "DEFAULT_REPEAT",
    "DEFAULT_TOLERANCE",
    "FINGERPRINT_FIELDS",
    "METRIC_DIRECTIONS",
    "RENAMED_METRICS",
    "Baseline",
    "Direction",
    "Limit",
    "MatchRule",
    "Profile",
    "StorageClass",
    "Thresholds",
    "ThresholdsError",
    "direction_of",
    "renamed_metric",
    "load_thresholds",
    "load_yaml",
    "match_target",
    "validate",
]

Direction = Literal["higher-is-better", "lower-is-better"]

#: Which way is better for each metric a limit or baseline may name (fio.py keys + host CPU cost).
METRIC_DIRECTIONS: Mapping[str, Direction] = MappingProxyType(
    {
        "iops": "higher-is-better",
        "bw_bytes": "higher-is-better",
        # Completion latency (fio's clat), then total latency (fio's lat: submission included).
        "clat_mean_us": "lower-is-better",
        "clat_p50_us": "lower-is-better",
        "clat_p90_us": "lower-is-better",
        "clat_p99_us": "lower-is-better",
        "clat_p99_9_us": "lower-is-better",
        "clat_p99_99_us": "lower-is-better",
        "tlat_mean_us": "lower-is-better",
        "tlat_p50_us": "lower-is-better",
        "tlat_p90_us": "lower-is-better",
        "tlat_p99_us": "lower-is-better",
        "tlat_p99_9_us": "lower-is-better",
        "tlat_p99_99_us": "lower-is-better",
        "errors": "lower-is-better",
        "cpu_usr_pct": "lower-is-better",
        "cpu_sys_pct": "lower-is-better",
        "host_cpu_us_per_io": "lower-is-better",
    }
)

#: Environment facts a baseline records; a difference makes a comparison suspect.
FINGERPRINT_FIELDS: tuple[str, ...] = (
    "cpu_model",
    "kernel",
    "qemu",
    "libvirt",
    "storage_class",
    "device_model",
    "io_mode",
    "cache",
)

DEFAULT_RUNTIME = 10
DEFAULT_RAMP_TIME = 2
DEFAULT_REPEAT = 3
DEFAULT_TOLERANCE = 0.15
DEFAULT_MAX_SPREAD = 0.25
#: A baseline's band is max(tolerance, this x its recorded noise); a baseline file may set `noise_multiple`.
DEFAULT_NOISE_MULTIPLE = 3.0

_WRITING_RW = frozenset({"write", "randwrite", "rw", "readwrite", "randrw", "trim", "randtrim", "trimwrite"})
_UNITS = {"": 1, "k": 1024, "m": 1024**2}


class ThresholdsError(ValueError):
    """A thresholds file is missing, unreadable or invalid; the message names file and path."""


#: Metric names refused since completion and total latency got names of their own: old -> (clat, tlat).
RENAMED_METRICS: Mapping[str, tuple[str, str]] = MappingProxyType(
    {
        f"lat_{stat}_us": (f"clat_{stat}_us", f"tlat_{stat}_us")
        for stat in ("mean", "p50", "p90", "p99", "p99_9", "p99_99")
    }
)


def renamed_metric(metric: str) -> str | None:
    """Return why a metric name is refused because it was renamed, None for any other name."""
    if metric not in RENAMED_METRICS:
        return None
    clat, tlat = RENAMED_METRICS[metric]
    return f"{metric} was renamed: it meant completion latency; use {clat} (or {tlat} for total latency)"


def direction_of(metric: str) -> Direction:
    """Return which way is better for `metric`; raise KeyError for a metric without one (or renamed)."""
    if metric in RENAMED_METRICS:
        raise KeyError(renamed_metric(metric))
    return METRIC_DIRECTIONS[metric]


@dataclass(frozen=True)
class Profile:
    """One fio job definition, run `repeat` times per disk."""

    name: str
    description: str
    rw: str
    bs: str
    iodepth: int
    numjobs: int
    runtime: int
    ramp_time: int
    write: bool
    repeat: int = DEFAULT_REPEAT
    ioengine: str = "libaio"
    direct: bool = True
    group_reporting: bool = True
    rwmixread: int | None = None
    size: str | None = None

    @property
    def bs_bytes(self) -> int:
        """Return the block size in bytes."""
        number, unit = re.fullmatch(r"(\d+)([kKmM]?)", self.bs).groups()  # type: ignore[union-attr]
        return int(number) * _UNITS[unit.lower()]

    @property
    def total_seconds(self) -> int:
        """Return the wall time of all repeats, ramp included (for progress and timeouts)."""
        return (self.runtime + self.ramp_time) * self.repeat

    def with_timing(
        self, runtime: int | None = None, ramp_time: int | None = None, repeat: int | None = None
    ) -> Profile:
        """Return a copy with runtime, ramp time or repeat count overridden where given."""
        return dataclasses.replace(
            self,
            runtime=self.runtime if runtime is None else runtime,
            ramp_time=self.ramp_time if ramp_time is None else ramp_time,
            repeat=self.repeat if repeat is None else repeat,
        )

    def fio_args(self) -> list[str]:
        """Return the fio options of this job, without filename, output format or --readonly."""
        args = [
            f"--name={self.name}",
            f"--rw={self.rw}",
            f"--bs={self.bs}",
            f"--iodepth={self.iodepth}",
            f"--numjobs={self.numjobs}",
            f"--ioengine={self.ioengine}",
            f"--direct={int(self.direct)}",
            f"--runtime={self.runtime}",
            f"--ramp_time={self.ramp_time}",
            "--time_based",
        ]
        if self.group_reporting:
            args.append("--group_reporting")
        if self.rwmixread is not None:
            args.append(f"--rwmixread={self.rwmixread}")
        if self.size is not None:
            args.append(f"--size={self.size}")
        return args


@dataclass(frozen=True)
class MatchRule:
    """A membership rule: every glob given must match (target glob is matched per part)."""

    target: str | None = None
    serial: str | None = None

    def matches(self, target_id: str, serial: str | None) -> bool:
        """Return True when the target id and serial satisfy every glob of this rule."""
        if self.target is not None and not match_target(self.target, target_id):
            return False
        if self.serial is not None and (serial is None or not fnmatch.fnmatchcase(serial, self.serial)):
            return False
        return True


@dataclass(frozen=True)
class Limit:
    """A fixed bound of one metric for one profile in one storage class."""

    storage_class: str
    profile: str
    metric: str
    floor: float | None = None
    ceiling: float | None = None


@dataclass(frozen=True)
class StorageClass:
    """A named group of disks sharing limits; membership by target and/or serial glob."""

    name: str
    description: str
    match: tuple[MatchRule, ...]
    max_spread: float
    limits: Mapping[str, Mapping[str, Limit]] = field(default_factory=lambda: MappingProxyType({}))

    def matches(self, target_id: str, serial: str | None) -> bool:
        """Return True when any membership rule matches."""
        return any(rule.matches(target_id, serial) for rule in self.match)


@dataclass(frozen=True)
class Baseline:
    """A recorded median of one metric for one target glob and profile."""

    target: str
    profile: str
    metric: str
    median: float
    tolerance: float
    direction: Direction
    at: str
    fingerprint: Mapping[str, Any]
    samples: tuple[float, ...] = ()
    source: str = ""
    noise: float | None = None  # relative dispersion over the recorded sessions; None in files before it
    sessions: int | None = None
    noise_multiple: float = DEFAULT_NOISE_MULTIPLE

    @property
    def band(self) -> float:
        """Return the relative band the gate allows: the tolerance, widened to noise_multiple x noise."""
        if self.noise is None:
            return self.tolerance
        return max(self.tolerance, self.noise_multiple * self.noise)


@dataclass(frozen=True)
class Thresholds:
    """Everything in a thresholds directory, validated and cross-checked."""

    directory: str
    profiles: Mapping[str, Profile]
    classes: Mapping[str, StorageClass]
    baselines: tuple[Baseline, ...] = ()

    def profile(self, name: str) -> Profile:
        """Return the profile called `name`; raise ThresholdsError naming the known ones."""
        try:
            return self.profiles[name]
        except KeyError:
            raise ThresholdsError(
                f"{self.directory}/profiles.yaml: no profile {name!r}; known: {', '.join(self.profiles)}"
            ) from None

    def class_for(self, target_id: str, serial: str | None = None) -> StorageClass | None:
        """Return the first storage class (in classes.yaml order) whose rules match, or None."""
        for storage_class in self.classes.values():
            if storage_class.matches(target_id, serial):
                return storage_class
        return None

    def limits(self, class_name: str, profile: str) -> Mapping[str, Limit]:
        """Return metric -> Limit of a class for a profile (empty when the class sets none)."""
        try:
            storage_class = self.classes[class_name]
        except KeyError:
            raise ThresholdsError(
                f"{self.directory}/classes.yaml: no storage class {class_name!r}; known: {', '.join(self.classes)}"
            ) from None
        return storage_class.limits.get(profile, MappingProxyType({}))

    def baseline(self, target_id: str, profile: str, metric: str) -> Baseline | None:
        """Return the baseline for a target, profile and metric: exact target first, else first glob."""
        candidates = [b for b in self.baselines if b.profile == profile and b.metric == metric]
        for candidate in candidates:
            if candidate.target == target_id:
                return candidate
        for candidate in candidates:
            if match_target(candidate.target, target_id):
                return candidate
        return None

    def baselines_for(self, target_id: str, profile: str) -> dict[str, Baseline]:
        """Return metric -> Baseline for every metric with a baseline for this target and profile."""
        metrics = dict.fromkeys(b.metric for b in self.baselines if b.profile == profile)
        found = {metric: self.baseline(target_id, profile, metric) for metric in metrics}
        return {metric: b for metric, b in found.items() if b is not None}

    def with_timing(
        self, runtime: int | None = None, ramp_time: int | None = None, repeat: int | None = None
    ) -> Thresholds:
        """Return a copy whose profiles all use the given runtime, ramp time or repeat count."""
        profiles = {n: p.with_timing(runtime, ramp_time, repeat) for n, p in self.profiles.items()}
        return dataclasses.replace(self, profiles=MappingProxyType(profiles))


def match_target(pattern: str, target_id: str) -> bool:
    """Return True when a host/domain/disk glob matches a target id part by part ('*' stays in a part)."""
    pattern_parts = pattern.split("/")
    target_parts = target_id.split("/")
    if len(pattern_parts) != len(target_parts):
        return False
    return all(fnmatch.fnmatchcase(t, p) for p, t in zip(pattern_parts, target_parts))


# --- YAML and schema validation -------------------------------------------------------------


class _Loader(yaml.SafeLoader):
    """A safe loader that rejects duplicate keys and keeps dates as strings."""


def _construct_mapping(loader: _Loader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: dict[Any, yaml.Node] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        try:
            hash(key)
        except TypeError:
            continue  # let the constructor report an unhashable key
        if key in seen:
            first = seen[key].start_mark.line + 1
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (first defined on line {first})", key_node.start_mark
            )
        seen[key] = key_node
    return loader.construct_mapping(node, deep=deep)


def _construct_timestamp(loader: _Loader, node: yaml.ScalarNode) -> str:
    """Keep `at: 2024-05-02` a string, as the schema and the Baseline model expect."""
    return str(loader.construct_scalar(node))


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_Loader.add_constructor("tag:yaml.org,2002:timestamp", _construct_timestamp)


def load_yaml(path: Path | str, label: str | None = None) -> Any:
    """Parse one YAML file; raise ThresholdsError with line and column on bad syntax or duplicate keys."""
    name = label or str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ThresholdsError(f"{name}: file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ThresholdsError(f"{name}: cannot read: {exc}") from None
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader derives from SafeLoader
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{name}:{mark.line + 1}:{mark.column + 1}" if mark else name
        problem = exc.problem or "invalid YAML"
        context = f" ({exc.context})" if exc.context and exc.context != problem else ""
        raise ThresholdsError(f"{where}: YAML error: {problem}{context}") from None
    except yaml.YAMLError as exc:
        raise ThresholdsError(f"{name}: YAML error: {exc}") from None


def _schema(kind: str) -> dict[str, Any]:
    text = resources.files("pytest_kvmio").joinpath("schemas", f"{kind}.schema.json").read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


def validate(kind: str, document: Any, label: str) -> None:
    """Validate a document against schemas/<kind>.schema.json; raise ThresholdsError listing every problem."""
    validator = jsonschema.Draft202012Validator(_schema(kind))
    errors = sorted(validator.iter_errors(document), key=lambda e: [str(p) for p in e.absolute_path])
    if errors:
        raise ThresholdsError("\n".join(f"{label}: {_describe(e)}" for e in errors[:20]))


def format_path(parts: Iterable[Any]) -> str:
    """Return a JSON path like `classes.nvme-local.match[0].serial`."""
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _show(value: Any) -> str:
    if value is None:
        return "nothing (an empty value)"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return repr(value)


_TYPE_WORDS = {
    "number": "a number",
    "integer": "an integer",
    "string": "a string",
    "object": "a mapping",
    "array": "a list",
    "boolean": "true or false",
    "null": "nothing",
}


def _describe(error: jsonschema.ValidationError) -> str:
    """Return `path: expected ..., got ...` for one schema error."""
    path = format_path(error.absolute_path)
    prefix = f"{path}: " if path else ""
    validator, expected, value = error.validator, error.validator_value, error.instance
    description = error.schema.get("description") if isinstance(error.schema, dict) else None
    renamed = renamed_metric(value) if isinstance(value, str) else None
    if "propertyNames" in error.schema_path and renamed:
        return f"{format_path([*error.absolute_path, value])}: {renamed}"
    if "propertyNames" in error.schema_path:
        allowed = f"expected one of {', '.join(expected)}" if validator == "enum" else f"expected {description or error.message}"
        return f"{prefix}key {value!r} is not allowed: {allowed}"
    if validator == "type":
        wanted = [expected] if isinstance(expected, str) else list(expected)
        return f"{prefix}expected {' or '.join(_TYPE_WORDS.get(w, w) for w in wanted)}, got {_show(value)}"
    if validator == "required":
        missing = [k for k in expected if k not in value]
        return f"{prefix}missing required key {', '.join(repr(k) for k in missing)}"
    if validator == "additionalProperties" and isinstance(value, dict):
        known = list(error.schema.get("properties", {}))
        extra = [k for k in value if k not in known]
        hint = f"; expected one of {', '.join(known)}" if known else ""
        return f"{prefix}unknown key {', '.join(repr(k) for k in extra)}{hint}"
    if validator == "enum":
        return f"{prefix}expected one of {', '.join(map(str, expected))}, got {_show(value)}"
    if validator == "const":
        return f"{prefix}expected {expected!r}, got {_show(value)}"
    bounds = {"minimum": ">=", "maximum": "<=", "exclusiveMinimum": ">", "exclusiveMaximum": "<"}
    if validator in bounds:
        return f"{prefix}expected a number {bounds[validator]} {expected}, got {_show(value)}"
    if validator == "pattern":
        return f"{prefix}expected {description or f'a string matching {expected}'}, got {_show(value)}"
    if validator == "minProperties" and description:
        return f"{prefix}expected {description}, got {_show(value) if value else 'an empty mapping'}"
    if validator in ("minItems", "minProperties"):
        return f"{prefix}expected at least {expected} entr{'y' if expected == 1 else 'ies'}, got {len(value)}"
    if validator in ("minLength", "maxLength"):
        return f"{prefix}expected a string of {'at least' if validator == 'minLength' else 'at most'} {expected} characters, got {_show(value)}"
    return f"{prefix}{error.message}"


# --- building the model -------------------------------------------------------------------------


def load_thresholds(directory: Path | str) -> Thresholds:
    """Load and cross-check profiles.yaml, classes.yaml and baselines/*.yaml from `directory`."""
    root = Path(directory)
    label = str(directory).rstrip("/") or "."
    if not root.is_dir():
        raise ThresholdsError(f"{label}: not a directory; pass a thresholds directory (default thresholds/)")

    profiles_label = f"{label}/profiles.yaml"
    profiles_doc = load_yaml(root / "profiles.yaml", profiles_label)
    validate("profiles", profiles_doc, profiles_label)
    profiles = _build_profiles(profiles_doc, profiles_label)

    classes_label = f"{label}/classes.yaml"
    classes_doc = load_yaml(root / "classes.yaml", classes_label)
    validate("classes", classes_doc, classes_label)
    classes = _build_classes(classes_doc, classes_label, profiles)

    baselines: list[Baseline] = []
    seen: dict[tuple[str, str], str] = {}
    baseline_dir = root / "baselines"
    if baseline_dir.is_dir():
        for path in sorted([*baseline_dir.glob("*.yaml"), *baseline_dir.glob("*.yml")]):
            file_label = f"{label}/baselines/{path.name}"
            document = load_yaml(path, file_label)
            validate("baselines", document, file_label)
            baselines.extend(_build_baselines(document, file_label, profiles, seen))

    return Thresholds(
        directory=label,
        profiles=MappingProxyType(profiles),
        classes=MappingProxyType(classes),
        baselines=tuple(baselines),
    )


def _build_profiles(document: Mapping[str, Any], label: str) -> dict[str, Profile]:
    defaults = document.get("defaults", {})
    profiles: dict[str, Profile] = {}
    for name, spec in document["profiles"].items():
        writes = spec["rw"] in _WRITING_RW
        if spec.get("write") is False and writes:
            raise ThresholdsError(
                f"{label}: profiles.{name}.write: false contradicts rw {spec['rw']!r}, which writes; "
                "remove 'write' or set it to true"
            )
        numjobs = spec["numjobs"]
        profiles[name] = Profile(
            name=name,
            description=spec["description"],
            rw=spec["rw"],
            bs=spec["bs"],
            iodepth=spec["iodepth"],
            numjobs=numjobs,
            runtime=spec.get("runtime", defaults.get("runtime", DEFAULT_RUNTIME)),
            ramp_time=spec.get("ramp_time", defaults.get("ramp_time", DEFAULT_RAMP_TIME)),
            repeat=spec.get("repeat", defaults.get("repeat", DEFAULT_REPEAT)),
            write=spec.get("write", writes),
            ioengine=spec.get("ioengine", defaults.get("ioengine", "libaio")),
            direct=spec.get("direct", defaults.get("direct", True)),
            group_reporting=spec.get("group_reporting", True),
            rwmixread=spec.get("rwmixread"),
            size=spec.get("size"),
        )
    return profiles


def _build_classes(
    document: Mapping[str, Any], label: str, profiles: Mapping[str, Profile]
) -> dict[str, StorageClass]:
    default_spread = document.get("defaults", {}).get("max_spread", DEFAULT_MAX_SPREAD)
    classes: dict[str, StorageClass] = {}
    for name, spec in document["classes"].items():
        limits: dict[str, Mapping[str, Limit]] = {}
        for profile, metrics in spec.get("limits", {}).items():
            if profile not in profiles:
                raise ThresholdsError(
                    f"{label}: classes.{name}.limits.{profile}: unknown profile {profile!r}; "
                    f"profiles.yaml defines {', '.join(profiles)}"
                )
            per_metric: dict[str, Limit] = {}
            for metric, bound in metrics.items():
                floor, ceiling = bound.get("floor"), bound.get("ceiling")
                if floor is not None and ceiling is not None and floor > ceiling:
                    raise ThresholdsError(
                        f"{label}: classes.{name}.limits.{profile}.{metric}: floor {floor} is above ceiling "
                        f"{ceiling}; no value can pass"
                    )
                per_metric[metric] = Limit(name, profile, metric, floor, ceiling)
            limits[profile] = MappingProxyType(per_metric)
        classes[name] = StorageClass(
            name=name,
            description=spec["description"],
            match=tuple(MatchRule(rule.get("target"), rule.get("serial")) for rule in spec["match"]),
            max_spread=spec.get("max_spread", default_spread),
            limits=MappingProxyType(limits),
        )
    return classes


def _build_baselines(
    document: Mapping[str, Any],
    label: str,
    profiles: Mapping[str, Profile],
    seen: dict[tuple[str, str], str],
) -> list[Baseline]:
    baselines: list[Baseline] = []
    for index, entry in enumerate(document["baselines"]):
        where = f"{label}: baselines[{index}]"
        target, profile = entry["target"], entry["profile"]
        if profile not in profiles:
            raise ThresholdsError(
                f"{where}.profile: unknown profile {profile!r}; profiles.yaml defines {', '.join(profiles)}"
            )
        key = (target, profile)
        if key in seen:
            raise ThresholdsError(
                f"{where}: duplicate baseline for target {target!r} and profile {profile!r} "
                f"(also in {seen[key]}); keep one"
            )
        seen[key] = f"{label}: baselines[{index}]"
        fingerprint = MappingProxyType(dict(entry["fingerprint"]))
        for metric, spec in entry["metrics"].items():
            natural = METRIC_DIRECTIONS[metric]
            direction = spec.get("direction", natural)
            if direction != natural:
                raise ThresholdsError(
                    f"{where}.metrics.{metric}.direction: {metric} is {natural}, not {direction}; "
                    "remove 'direction' to derive it"
                )
            median = float(spec["median"])
            if not math.isfinite(median):
                raise ThresholdsError(f"{where}.metrics.{metric}.median: expected a finite number, got {median}")
            baselines.append(
                Baseline(
                    target=target,
                    profile=profile,
                    metric=metric,
                    median=median,
                    tolerance=float(spec.get("tolerance", entry.get("tolerance", DEFAULT_TOLERANCE))),
                    direction=direction,
                    at=str(entry["at"]),
                    fingerprint=fingerprint,
                    samples=tuple(float(s) for s in spec.get("samples", ())),
                    source=label,
                    noise=None if spec.get("noise") is None else float(spec["noise"]),
                    sessions=spec.get("sessions"),
                    noise_multiple=float(
                        entry.get("noise_multiple", document.get("noise_multiple", DEFAULT_NOISE_MULTIPLE))
                    ),
                )
            )
    return baselines
