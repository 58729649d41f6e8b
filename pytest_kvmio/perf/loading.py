"""Load a `thresholds/` directory into the model (all YAML, each file validated by a JSON Schema in `pytest_kvmio/schemas/`).

    thresholds/profiles.yaml      fio profiles          (profiles.schema.json)
    thresholds/classes.yaml       storage classes + limits (classes.schema.json)
    thresholds/baselines/*.yaml   recorded baselines    (baselines.schema.json), optional
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from pytest_kvmio.perf.documents import load_yaml, validate
from pytest_kvmio.perf.histogram import MEDIAN_OF_RUNS
from pytest_kvmio.perf.thresholds import (
    DEFAULT_MAX_SPREAD,
    DEFAULT_NOISE_MULTIPLE,
    DEFAULT_RAMP_TIME,
    DEFAULT_REPEAT,
    DEFAULT_RUNTIME,
    DEFAULT_TOLERANCE,
    METRIC_DIRECTIONS,
    WRITING_RW,
    Baseline,
    Limit,
    MatchRule,
    Profile,
    StorageClass,
    Thresholds,
    ThresholdsError,
)


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
        writes = spec["rw"] in WRITING_RW
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
    default_tolerance = document.get("defaults", {}).get("tolerance", DEFAULT_TOLERANCE)
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
            tolerance=float(spec.get("tolerance", default_tolerance)),
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
                    estimator=str(spec.get("estimator", MEDIAN_OF_RUNS)),
                )
            )
    return baselines

