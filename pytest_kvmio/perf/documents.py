"""YAML and JSON Schema for the perf files (profiles, classes, baselines, perf results): parse, validate, explain.

Errors are `ThresholdsError`s that name the file, the line and column (YAML) or the path inside the
document (schema), say what was expected and what was found.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from pytest_kvmio.files.yamldoc import YamlFileError, read_yaml, schema_errors
from pytest_kvmio.perf.thresholds import ThresholdsError, renamed_metric

# --- YAML and schema validation -------------------------------------------------------------


def load_yaml(path: Path | str, label: str | None = None) -> Any:
    """Parse one YAML file; raise ThresholdsError with line and column on bad syntax or duplicate keys."""
    name = label or str(path)
    try:
        return read_yaml(path)  # safe tags only, duplicate keys refused, aliases bounded
    except YamlFileError as error:
        exc = error.cause
    if isinstance(exc, FileNotFoundError):
        raise ThresholdsError(f"{name}: file not found")
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        where = f"{name}:{mark.line + 1}:{mark.column + 1}" if mark else name
        problem = exc.problem or "invalid YAML"
        context = f" ({exc.context})" if exc.context and exc.context != problem else ""
        raise ThresholdsError(f"{where}: YAML error: {problem}{context}")
    if isinstance(exc, yaml.YAMLError):
        raise ThresholdsError(f"{name}: YAML error: {exc}")
    raise ThresholdsError(f"{name}: cannot read: {exc}")


def validate(kind: str, document: Any, label: str) -> None:
    """Validate a document against schemas/<kind>.schema.json; raise ThresholdsError listing every problem."""
    found = _non_finite(document)
    if found is not None:  # YAML's .nan and .inf pass a schema's "number" and would make every comparison false
        path, value = found
        raise ThresholdsError(f"{label}: {format_path(path)}: expected a finite number, got {value}")
    errors = schema_errors(kind, document)
    if errors:
        raise ThresholdsError("\n".join(f"{label}: {_describe(e)}" for e in errors[:20]))


def _non_finite(document: Any) -> tuple[list[Any], float] | None:
    """Return the path and value of the first NaN or infinity in a document, or None."""
    stack: list[tuple[list[Any], Any]] = [([], document)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, float) and not math.isfinite(value):
            return path, value
        if isinstance(value, dict):
            stack.extend((path + [k], v) for k, v in reversed(list(value.items())))
        elif isinstance(value, list):
            stack.extend((path + [i], v) for i, v in reversed(list(enumerate(value))))
    return None


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


