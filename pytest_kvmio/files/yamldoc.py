"""The one loader of kvmio's YAML input files (thresholds, baselines, waivers) and their JSON Schemas.

`read_yaml` reads a file with the safe loader of `model.yamlsafe` (safe tags only, duplicate keys refused, aliases
bounded); `schema_errors` lists what a document breaks in `schemas/<kind>.schema.json`. Each caller words the problems
for its own input (`YamlFileError.cause` is the original error), so a message names the option and the file.
"""

from __future__ import annotations

import functools
import json
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from pytest_kvmio.model.yamlsafe import load_text


class YamlFileError(Exception):
    """A YAML file that could not be read or parsed; `cause` is the OSError, UnicodeDecodeError or YAMLError."""

    def __init__(self, path: Path, cause: Exception) -> None:
        super().__init__(f"{path}: {cause}")
        self.path = path
        self.cause = cause


def read_yaml(path: str | Path) -> Any:
    """Return the document of a YAML file; YamlFileError when it can't be read (or isn't UTF-8) or isn't YAML."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise YamlFileError(file, exc) from None
    try:
        return load_text(text)
    except yaml.YAMLError as exc:
        raise YamlFileError(file, exc) from None


@functools.cache
def schema(kind: str) -> dict[str, Any]:
    """Return `schemas/<kind>.schema.json`, read once."""
    text = resources.files("pytest_kvmio").joinpath("schemas", f"{kind}.schema.json").read_text("utf-8")
    loaded: dict[str, Any] = json.loads(text)
    return loaded


def schema_errors(kind: str, document: Any) -> list[jsonschema.ValidationError]:
    """Return every way `document` breaks `schemas/<kind>.schema.json`, in the order of where they are in it."""
    validator = jsonschema.Draft202012Validator(schema(kind))
    return sorted(validator.iter_errors(document), key=lambda e: [str(p) for p in e.absolute_path])
