"""Read what sets the guest's I/O schedulers at boot (udev rules, boot scripts, enabled units), with one command."""

from __future__ import annotations

from typing import Any

from pytest_kvmio.model.guestboot import BootProbe, parse_boot_probe

#: One guest command: every udev rules file (names decide which hides which) and its lines that set a scheduler;
#: executable boot scripts and enabled systemd units with their lines that write one (and `for` loops, which name
#: the devices); each block device's rotational flag and schedulers; the kernel command line.
BOOT_PROBE_SCRIPT = r"""
for f in /etc/udev/rules.d/*.rules /run/udev/rules.d/*.rules /usr/lib/udev/rules.d/*.rules /lib/udev/rules.d/*.rules; do
  [ -f "$f" ] || continue
  echo "udev-file=$f"
  grep -n 'queue/scheduler' "$f" 2>/dev/null | sed "s|^|udev-line=$f:|"
done
for f in /etc/rc.local /etc/rc.d/rc.local /etc/local.d/*.start; do
  [ -f "$f" ] && [ -x "$f" ] || continue
  grep -n -e 'queue/scheduler' -e '^[[:space:]]*for ' "$f" 2>/dev/null | sed "s|^|boot-line=$f:|"
done
for l in /etc/systemd/system/*.wants/*.service; do
  [ -e "$l" ] || continue
  f=$(readlink -f "$l")
  grep -n 'queue/scheduler' "$f" 2>/dev/null | sed "s|^|boot-line=$f:|"
done
for d in /sys/block/*; do
  [ -r "$d/queue/scheduler" ] && echo "blockdev=${d##*/} $(cat "$d/queue/rotational" 2>/dev/null) $(cat "$d/queue/scheduler")"
done
echo "cmdline=$(cat /proc/cmdline)"
exit 0
"""


def read_guest_boot(guest: Any) -> BootProbe:
    """Read the guest's boot-time scheduler settings with one command (a testinfra Host in the guest)."""
    return parse_boot_probe(guest.check_output(BOOT_PROBE_SCRIPT))
