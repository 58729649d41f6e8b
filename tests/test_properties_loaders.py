"""Property tests of the loaders: whatever a document holds, only the documented error type comes out.

Documents are made by mutating a valid one (one value replaced by anything YAML or JSON can hold, or one key
dropped), so the loaders get past the syntax and meet wrong types, NaN, huge numbers and hostile text deep
inside — where a missing check turns into a KeyError or a TypeError traceback.
"""

from __future__ import annotations

import copy
import json
import math
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import DATA
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pytest_kvmio.cli.baseline import record
from pytest_kvmio.errors import CommandError
from pytest_kvmio.facts.connection import parse_host_spec
from pytest_kvmio.model.yamlsafe import load_text
from pytest_kvmio.perf.loading import load_thresholds
from pytest_kvmio.perf.thresholds import ThresholdsError
from pytest_kvmio.report.waivers import load_waivers
from pytest_kvmio.settings import assumptions, host_list, uri_template, whole_number

GOOD = DATA / "thresholds" / "good"
HOSTILE_TEXT = st.sampled_from([
    "", " ", "-", "--filename=/dev/sda", "'", '"', ";", "$(touch kvmio-pwned)", "`id`", "a\nb", "ü", "\u202e",
    "*", "[", "**/", "hv01/vm01/vdb", "2099-02-30", "2024-05-02", "randread-4k-qd32x4", "iops", "floor",
])
SCALARS = (
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True) | HOSTILE_TEXT | st.text(max_size=12)
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(HOSTILE_TEXT | st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
PROPERTY = settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Return the path of every value inside a document (the root excluded)."""
    out: list[tuple[Any, ...]] = []
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else []
    for key, child in items:
        out.append(prefix + (key,))
        out.extend(paths(child, prefix + (key,)))
    return out


def mutate(document: Any, data: st.DataObject) -> Any:
    """Return a copy of `document` with one value replaced (or its key dropped)."""
    doc = copy.deepcopy(document)
    path = data.draw(st.sampled_from(paths(doc)), label="path")
    parent = doc
    for key in path[:-1]:
        parent = parent[key]
    if data.draw(st.booleans(), label="drop") and isinstance(parent, dict):
        del parent[path[-1]]
    else:
        parent[path[-1]] = data.draw(VALUES, label="value")
    return doc


def _yaml(document: Any) -> str:
    return yaml.safe_dump(document, allow_unicode=True, sort_keys=False)


THRESHOLD_FILES = {
    name: yaml.safe_load((GOOD / name).read_text()) for name in ("profiles.yaml", "classes.yaml", "baselines/nvme-local.yaml")
}


@PROPERTY
@given(data=st.data(), name=st.sampled_from(sorted(THRESHOLD_FILES)))
def test_thresholds_loader_raises_only_thresholds_error(tmp_path_factory: pytest.TempPathFactory, data: st.DataObject,
                                                        name: str) -> None:
    root = tmp_path_factory.mktemp("thresholds")
    (root / "baselines").mkdir()
    for other, document in THRESHOLD_FILES.items():
        (root / other).write_text(_yaml(mutate(document, data) if other == name else document), encoding="utf-8")
    try:
        loaded = load_thresholds(root)
    except ThresholdsError as exc:
        assert str(root) in str(exc)
        return
    numbers = [v for b in loaded.baselines for v in (b.median, b.tolerance, *(b.samples or ()))]
    assert all(math.isfinite(v) for v in numbers), "a non-finite number was accepted"


WAIVERS = yaml.safe_load((DATA / "waivers" / "valid.yaml").read_text())


@PROPERTY
@given(data=st.data())
def test_waivers_loader_raises_only_usage_error(tmp_path_factory: pytest.TempPathFactory, data: st.DataObject) -> None:
    path = tmp_path_factory.mktemp("waivers") / "w.yaml"
    path.write_text(_yaml(mutate(WAIVERS, data)), encoding="utf-8")
    try:
        waivers = load_waivers(path, "--waivers")
    except pytest.UsageError as exc:
        assert "w.yaml" in str(exc)
        return
    assert all(w.rule and w.target and w.justification for w in waivers)


RESULTS = {
    "fingerprint": {"kernel": "6.1.0", "qemu": "7.2.0"},
    "results": [
        {"target": "hv01/vm01/vdb", "profile": "randread-4k-qd32x4", "serial": "kvmio-scratch-1",
         "samples": {"iops": [1000, 1100, 1050], "clat_p99_us": [900, 950, None]}},
    ],
}


@PROPERTY
@given(data=st.data())
def test_baseline_record_raises_only_command_error(tmp_path_factory: pytest.TempPathFactory, data: st.DataObject) -> None:
    directory = tmp_path_factory.mktemp("results")
    results, out = directory / "r.json", directory / "b.yaml"
    results.write_text(json.dumps(mutate(RESULTS, data)), encoding="utf-8")  # NaN and Infinity as Python writes them
    try:
        record(results, out, thresholds_dir=GOOD)
    except CommandError as exc:
        assert str(exc).strip(), "an error without a message"
        assert not out.exists(), "a refused input still wrote the baseline"
        return
    written = load_text(out.read_text(encoding="utf-8"))
    assert all(math.isfinite(m["median"]) for e in written["baselines"] for m in e["metrics"].values())


@settings(max_examples=300)
@given(st.text(max_size=200))
def test_yaml_reader_raises_only_yaml_errors(text: str) -> None:
    try:
        load_text(text)
    except yaml.YAMLError:
        pass


SAFE_HOST = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*|[0-9A-Fa-f:.%A-Za-z]+")
SPEC_TEXT = st.text(alphabet=st.sampled_from(list("hv01@:/?=&;$()`'\" -_.[]%\n\tü")), max_size=40)


@settings(max_examples=500)
@given(st.one_of(SPEC_TEXT, st.text(max_size=40)))
def test_host_spec_parser_raises_only_value_error_and_accepts_only_plain_names(text: str) -> None:
    try:
        spec = parse_host_spec(text)
    except ValueError:
        return
    if spec.is_local:
        return
    assert spec.hostname is not None and SAFE_HOST.fullmatch(spec.hostname), spec
    assert shlex.split(shlex.quote(spec.hostname)) == [spec.hostname]
    assert not spec.hostname.startswith("-") and not (spec.user or "x").startswith("-")
    assert spec.user is None or re.fullmatch(r"[A-Za-z0-9_.-]+", spec.user), spec


@settings(max_examples=300)
@given(st.text(max_size=60))
def test_option_validators_raise_only_value_error(text: str) -> None:
    for validate in (assumptions, uri_template, whole_number(1), host_list):
        try:
            validate(text)
        except ValueError:
            pass
