"""Version numbers of kernels, QEMU and libvirt, and requirement specs like ">=5.10"."""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import total_ordering
from typing import Any

_LEADING = re.compile(r"^\s*v?(\d+(?:\.\d+)*)")
_OPS: dict[str, Callable[[Any, Any], bool]] = {
    ">=": operator.ge,
    "<=": operator.le,
    "==": operator.eq,
    "!=": operator.ne,
    ">": operator.gt,
    "<": operator.lt,
}


@total_ordering
@dataclass(frozen=True)
class Version:
    """A dotted numeric version; `6.1.0-27-amd64` reads as 6.1.0."""

    parts: tuple[int, ...]
    text: str

    @classmethod
    def parse(cls, text: str) -> Version:
        """Parse the leading dotted numbers of `text`; raise ValueError when there are none."""
        match = _LEADING.match(text)
        if not match:
            raise ValueError(f"not a version number: {text!r}")
        return cls(tuple(int(p) for p in match.group(1).split(".")), text.strip())

    @classmethod
    def from_libvirt(cls, number: int) -> Version:
        """Decode libvirt's packed integer (major*1e6 + minor*1e3 + micro)."""
        major, rest = divmod(number, 1_000_000)
        minor, micro = divmod(rest, 1_000)
        return cls((major, minor, micro), f"{major}.{minor}.{micro}")

    def _key(self, width: int) -> tuple[int, ...]:
        return self.parts + (0,) * (width - len(self.parts))

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Version):
            return NotImplemented
        width = max(len(self.parts), len(other.parts))
        return self._key(width) < other._key(width)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Version):
            return NotImplemented
        width = max(len(self.parts), len(other.parts))
        return self._key(width) == other._key(width)

    def __hash__(self) -> int:
        parts = list(self.parts)
        while parts and parts[-1] == 0:
            parts.pop()
        return hash(tuple(parts))

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True)
class Requirement:
    """A comparison such as `>=5.10` applied to a Version."""

    op: str
    version: Version

    @classmethod
    def parse(cls, spec: str) -> Requirement:
        """Parse `>=5.10`, `>5`, `==7.2` or a bare `5.10` (meaning >=)."""
        text = spec.strip()
        for op in sorted(_OPS, key=len, reverse=True):
            if text.startswith(op):
                return cls(op, Version.parse(text[len(op):]))
        return cls(">=", Version.parse(text))

    def __call__(self, found: Version) -> bool:
        return _OPS[self.op](found, self.version)

    def __str__(self) -> str:
        return f"{self.op}{self.version}"
