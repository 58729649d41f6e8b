"""What sets a guest disk's I/O scheduler at boot: the kernel's default, udev rules, boot scripts and units.

guest-scheduler-persistent asks whether a virtio disk's scheduler will still be `none` after the guest reboots. A
scheduler written by hand to /sys/block/DEV/queue/scheduler is lost at reboot; what counts is what the boot does,
in the order it does it:

1. The kernel's default when the device appears: blk-mq gives a device with more than one hardware queue no scheduler
   (`none`) and a single-queue device `mq-deadline` when the kernel has it (Linux block/elevator.c,
   elevator_get_default; since 5.0 every block driver is blk-mq). The `elevator=` kernel parameter is ignored by blk-mq
   kernels (block/elevator.c elevator_setup: "does not have any effect anymore").
2. udev rules that assign ATTR{queue/scheduler} to a matching block device (udev(7): files in /etc/udev/rules.d,
   /run/udev/rules.d, /usr/lib/udev/rules.d, /lib/udev/rules.d, a name in /etc hiding the same name below it, read
   in lexical order of their names; a later assignment overrides an earlier one).
3. Boot scripts and units that write a scheduler to /sys/block/DEV/queue/scheduler: /etc/rc.local (systemd's
   rc-local.service runs it when executable), OpenRC's /etc/local.d/*.start (executable), and enabled systemd units
   (linked from /etc/systemd/system/*.wants/) whose ExecStart writes it.

Not counted: tuned profiles (they apply only while tuned runs) and anything run by hand.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

UDEV_DIRS = ("/etc/udev/rules.d", "/run/udev/rules.d", "/usr/lib/udev/rules.d", "/lib/udev/rules.d")
_UDEV_TOKEN = re.compile(r'\s*([A-Za-z_]+)(?:\{([^}]*)\})?\s*(==|!=|\+=|-=|:=|=)\s*"([^"]*)"\s*(?:,|$)')
_WRITE = re.compile(
    r"""(?:echo|printf)\s+(?:-n\s+)?["']?([\w-]+)["']?\s*(?:>>?|\|\s*tee\s+(?:-a\s+)?)\s*["']?"""
    r"""(/sys/block/[^/\s"']+|\$\{?\w+\}?)/queue/scheduler"""
)
_LOOP = re.compile(r"""\bfor\s+(\w+)\s+in\s+["']?/sys/block/([^\s"';]+)""")


@dataclass(frozen=True)
class SchedulerSetting:
    """One place the boot sets a scheduler: which devices (glob), which scheduler, where it is written."""

    devices: str
    scheduler: str
    where: str
    #: Conditions the rule also has that kvmio did not evaluate (e.g. ATTRS{vendor}=="…").
    unchecked: tuple[str, ...] = ()

    def matches(self, device: str) -> bool:
        return any(fnmatch.fnmatchcase(device, glob) for glob in self.devices.split("|"))


@dataclass
class GuestBoot:
    """The guest's boot-time scheduler settings, in the order the boot applies them."""

    udev: list[SchedulerSetting] = field(default_factory=list)
    scripts: list[SchedulerSetting] = field(default_factory=list)
    cmdline: str = ""


def udev_order(paths: Iterable[str]) -> list[str]:
    """Return the rules files udev reads, in its order: by file name, /etc hiding /run hiding /usr/lib and /lib."""
    chosen: dict[str, str] = {}
    rank = {d: i for i, d in enumerate(UDEV_DIRS)}
    for path in paths:
        folder, _, name = path.rpartition("/")
        if folder not in rank or not name.endswith(".rules"):
            continue
        if name not in chosen or rank[folder] < rank[chosen[name].rpartition("/")[0]]:
            chosen[name] = path
    return [chosen[name] for name in sorted(chosen)]


def parse_udev_line(line: str, where: str, attrs: Mapping[str, str] | None = None) -> SchedulerSetting | None:
    """Return the scheduler a udev rule line assigns to block devices, or None when it assigns none.

    KERNEL, SUBSYSTEM and ACTION are evaluated (a rule must fire on `add` or `change`); ATTR{…}== conditions are
    evaluated against `attrs` where given (e.g. queue/rotational); anything else is kept as unchecked.
    """
    text = line.strip()
    if not text or text.startswith("#"):
        return None
    devices, scheduler = "*", None
    unchecked: list[str] = []
    for key, attr, op, value in _UDEV_TOKEN.findall(text):
        if key == "ATTR" and attr == "queue/scheduler" and op in ("=", ":="):
            scheduler = value
        elif key == "KERNEL" and op == "==":
            devices = value
        elif key == "KERNEL" and op == "!=":
            unchecked.append(f'KERNEL!="{value}"')
        elif key == "SUBSYSTEM":
            if (op == "==") != ("block" in value.split("|")):
                return None
        elif key == "ACTION":
            fires = any(a in ("add", "change") for a in value.split("|"))
            if (op == "==") != fires:
                return None
        elif key == "ATTR" and op in ("==", "!=") and attrs is not None and attr in attrs:
            if (attrs[attr] == value) != (op == "=="):
                return None
        elif op in ("==", "!="):
            unchecked.append(f'{key}{"{" + attr + "}" if attr else ""}{op}"{value}"')
    if scheduler is None:
        return None
    return SchedulerSetting(devices, scheduler, where, tuple(unchecked))


def parse_script(lines: Iterable[tuple[int, str]], path: str) -> list[SchedulerSetting]:
    """Return the schedulers a boot script (or a unit's ExecStart) writes, with the devices they target.

    `echo none > /sys/block/vda/queue/scheduler`, `echo none | tee /sys/block/vd*/queue/scheduler`, and a loop
    `for d in /sys/block/vd*; do echo none > $d/queue/scheduler; done` (the loop's glob names the devices).
    """
    loops: dict[str, str] = {}
    found = []
    for number, line in lines:
        for var, glob in _LOOP.findall(line):
            loops[var] = glob.rstrip("/")
        for scheduler, target in _WRITE.findall(line):
            if target.startswith("/sys/block/"):
                devices = target.removeprefix("/sys/block/")
            else:
                devices = loops.get(target.strip("${}"), "*")
            found.append(SchedulerSetting(devices, scheduler, f"{path}:{number}"))
    return found


def kernel_default(hw_queues: int | None, available: tuple[str, ...]) -> tuple[str | None, str]:
    """Return the scheduler blk-mq gives a device when it appears, and why."""
    if hw_queues is None:
        return None, "its hardware queue count is unknown"
    if hw_queues > 1:
        return "none", f"the kernel's default for a device with {hw_queues} hardware queues"
    if "mq-deadline" in available or not available:
        return "mq-deadline", "the kernel's default for a single-queue device"
    return "none", "the kernel's default for a single-queue device without mq-deadline"


@dataclass(frozen=True)
class AfterReboot:
    """What a device's scheduler will be after a reboot, and what sets it."""

    scheduler: str | None
    why: str
    unchecked: tuple[str, ...] = ()

    @property
    def persistent_none(self) -> bool | None:
        return None if self.scheduler is None else self.scheduler == "none"


def scheduler_after_reboot(device: str, hw_queues: int | None, available: tuple[str, ...], boot: GuestBoot) -> AfterReboot:
    """Return the scheduler `device` will have after a reboot: the kernel's default, then udev, then boot scripts."""
    scheduler, why = kernel_default(hw_queues, available)
    unchecked: tuple[str, ...] = ()
    for setting in [*boot.udev, *boot.scripts]:
        if setting.matches(device):
            kind = "udev rule" if setting in boot.udev else "boot script"
            scheduler, why, unchecked = setting.scheduler, f"{kind} {setting.where} sets {setting.scheduler}", setting.unchecked
    if "elevator=" in boot.cmdline:
        why += " (elevator= on the kernel command line is ignored by blk-mq kernels)"
    return AfterReboot(scheduler, why, unchecked)


# --- the guest probe's output ---------------------------------------------------------------------------------------


@dataclass
class BootProbe:
    """What the guest's boot probe printed: the boot's settings, the udev rule lines by file (in udev's order), and
    each block device's sysfs attributes that rules match on and the schedulers it offers."""

    boot: GuestBoot
    udev_lines: dict[str, list[tuple[int, str]]]
    attrs: dict[str, dict[str, str]]
    available: dict[str, tuple[str, ...]]

    def after_reboot(self, device: str, hw_queues: int | None) -> AfterReboot:
        """Return what `device`'s scheduler will be after a reboot (its udev rules read against its attributes)."""
        boot = for_device(self.udev_lines, self.boot, self.attrs.get(device, {}))
        return scheduler_after_reboot(device, hw_queues, self.available.get(device, ()), boot)


def parse_boot_probe(output: str) -> BootProbe:
    """Return what a guest probe printed (`udev-file=`, `udev-line=PATH:N:TEXT`, `boot-line=…`, `cmdline=`,
    `blockdev=DEV ROTATIONAL SCHEDULERS…`)."""
    udev_files: list[str] = []
    udev_lines: dict[str, list[tuple[int, str]]] = {}
    script_lines: dict[str, list[tuple[int, str]]] = {}
    boot = GuestBoot()
    attrs: dict[str, dict[str, str]] = {}
    available: dict[str, tuple[str, ...]] = {}
    for line in output.splitlines():
        key, _, value = line.partition("=")
        if key == "blockdev":
            name, *fields = value.split()
            if fields:
                attrs[name] = {"queue/rotational": fields[0]}
                available[name] = tuple(f.strip("[]") for f in fields[1:])
        elif key == "udev-file":
            udev_files.append(value)
        elif key in ("udev-line", "boot-line"):
            path, _, rest = value.partition(":")
            number, _, text = rest.partition(":")
            if number.isdigit():
                (udev_lines if key == "udev-line" else script_lines).setdefault(path, []).append((int(number), text))
        elif key == "cmdline":
            boot.cmdline = value
    for path in udev_order(udev_files):
        for line_no, text in udev_lines.get(path, []):
            setting = parse_udev_line(text, f"{path}:{line_no}")
            if setting is not None:
                boot.udev.append(setting)
    for path in sorted(script_lines):
        boot.scripts.extend(parse_script(script_lines[path], path))
    ordered = {p: udev_lines.get(p, []) for p in udev_order(udev_files)}
    return BootProbe(boot, ordered, attrs, available)


def for_device(udev_lines: Mapping[str, list[tuple[int, str]]], boot: GuestBoot, attrs: Mapping[str, str]) -> GuestBoot:
    """Return `boot` with its udev rules re-read against one device's sysfs attributes (ATTR{…}== conditions)."""
    udev = [s for path, lines in udev_lines.items() for number, text in lines
            if (s := parse_udev_line(text, f"{path}:{number}", attrs)) is not None]
    return GuestBoot(udev=udev, scripts=boot.scripts, cmdline=boot.cmdline)
