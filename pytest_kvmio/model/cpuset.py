"""libvirt cpuset strings such as `0-3,^2,8`."""

from __future__ import annotations

#: The largest host CPU id a cpuset may name; beyond it is a typo (and a range up to it stays cheap).
MAX_CPU = 65535


def parse_cpuset(text: str, *, source: str = "cpuset") -> frozenset[int]:
    """Return the CPUs of a libvirt cpuset: ranges, single CPUs and `^N` exclusions.

    Exclusions apply to the whole set regardless of position, as libvirt does.
    """
    included: set[int] = set()
    excluded: set[int] = set()
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            raise ValueError(f"{source}: empty element in cpuset {text!r}")
        target = excluded if item.startswith("^") else included
        item = item.lstrip("^")
        try:
            if "-" in item:
                low_s, high_s = item.split("-", 1)
                low, high = int(low_s), int(high_s)
                if high < low or high > MAX_CPU:
                    raise ValueError
                target.update(range(low, high + 1))
            else:
                cpu = int(item)
                if cpu > MAX_CPU:
                    raise ValueError
                target.add(cpu)
        except ValueError:
            raise ValueError(
                f"{source}: {raw.strip()!r} in cpuset {text!r} is not a CPU number (0 to {MAX_CPU}) or range like 0-3"
            ) from None
    cpus = frozenset(included - excluded)
    if not cpus:
        raise ValueError(f"{source}: cpuset {text!r} selects no CPU (libvirt refuses it)")
    return cpus


def format_cpuset(cpus: frozenset[int] | set[int]) -> str:
    """Write CPUs back as compact ranges: {0,1,2,5} -> '0-2,5'."""
    ordered = sorted(cpus)
    runs: list[str] = []
    start = prev = None
    for cpu in ordered + [None]:  # type: ignore[list-item]
        if start is not None and (cpu is None or cpu != prev + 1):  # type: ignore[operator]
            runs.append(str(start) if start == prev else f"{start}-{prev}")
            start = None
        if cpu is not None and start is None:
            start = cpu
        prev = cpu
    return ",".join(runs)
