"""The ini file pytest would read, found as pytest finds it, so that `kvmio ab` and `kvmio fix` read the same settings.

pytest's `locate_config` (`_pytest/config/findpaths.py`, private) looks in the directory it was started in and in
each directory above it, and in each for these names in this order, taking the first file that holds pytest
configuration:

- `pytest.toml`, `.pytest.toml` (pytest 9): always; its `[pytest]` table;
- `pytest.ini`, `.pytest.ini`: always; its `[pytest]` section, if any;
- `pyproject.toml`: with a `[tool.pytest.ini_options]` table (values as text, as in an ini file) or, pytest 9,
  `[tool.pytest]` (TOML values);
- `tox.ini`: with a `[pytest]` section;
- `setup.cfg`: with a `[tool:pytest]` section.

When none does, the first `pyproject.toml` seen is the (empty) ini file. The directory of the file is pytest's
rootdir, where a relative `kvmio_thresholds` is looked up. The commands have no `-c`, `--rootdir` or `-o`.
"""

from __future__ import annotations

import shlex
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import iniconfig

from pytest_kvmio.errors import InputError

#: pytest's order (`locate_config`).
NAMES = ("pytest.toml", ".pytest.toml", "pytest.ini", ".pytest.ini", "pyproject.toml", "tox.ini", "setup.cfg")


@dataclass(frozen=True)
class IniFile:
    """The ini file found (None when there is none), its pytest keys, and the rootdir it makes."""

    path: Path | None
    rootpath: Path
    values: Mapping[str, Any] = field(default_factory=dict)

    def get(self, key: str, kind: str | None = "string") -> Any:
        """Return a key as pytest's `getini` gives an option of this kind (`string`, `args`); None when unset."""
        value = self.values.get(key)
        if value is None:
            return None
        if kind == "args":
            return shlex.split(value) if isinstance(value, str) else [str(v) for v in value]
        return value if isinstance(value, str) else str(value)


def find_inifile(start: Path | None = None) -> IniFile:
    """Return the ini file pytest started in `start` (default: the current directory) would read."""
    here = (start or Path.cwd()).absolute()
    pyproject: Path | None = None
    for base in (here, *here.parents):
        for name in NAMES:
            path = base / name
            if not path.is_file():
                continue
            if name == "pyproject.toml" and pyproject is None:
                pyproject = path
            values = _pytest_keys(path)
            if values is not None:
                return IniFile(path, base, values)
    if pyproject is not None:
        return IniFile(pyproject, pyproject.parent)
    return IniFile(None, here)


def _pytest_keys(path: Path) -> dict[str, Any] | None:
    """Return the pytest keys of a candidate file, or None when it holds no pytest configuration."""
    if path.suffix in (".ini", ".cfg"):
        try:
            parsed = iniconfig.IniConfig(str(path))
        except iniconfig.ParseError as exc:
            raise InputError(f"{path}: {exc}") from None
        section = "pytest" if path.suffix == ".ini" else "tool:pytest"
        if section in parsed:
            return dict(parsed[section].items())
        return {} if path.name in ("pytest.ini", ".pytest.ini") else None
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise InputError(f"{path}: {exc}") from None
    if path.name in ("pytest.toml", ".pytest.toml"):
        return dict(document.get("pytest", {}))
    tool = document.get("tool", {}).get("pytest", {})
    native = {k: v for k, v in tool.items() if k != "ini_options"}
    if native:
        return native
    ini_options = tool.get("ini_options")
    if ini_options is None:
        return None
    return {k: v if isinstance(v, list) else str(v) for k, v in ini_options.items()}
