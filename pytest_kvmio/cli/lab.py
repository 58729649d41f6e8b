"""Add `kvmio lab up|down|status` to the kvmio command."""

from __future__ import annotations

import argparse
from typing import Any

from pytest_kvmio.lab import lifecycle


def _up(args: argparse.Namespace) -> int:
    return lifecycle.up(args)


def _down(args: argparse.Namespace) -> int:
    return lifecycle.down(args)


def _status(args: argparse.Namespace) -> int:
    return lifecycle.status(args)


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return value


def add_parser(sub: Any) -> None:
    """Register `lab` with its `up`, `down` and `status` subcommands on `sub` (argparse subparsers)."""
    lab = sub.add_parser(
        "lab",
        help="a small libvirt/QEMU hypervisor on this machine, with seeded misconfigurations",
        description="Manage the kvmio lab. State lives in $KVMIO_LAB_DIR (default /var/lib/kvmio-lab); "
        "the loopback sshd port is $KVMIO_LAB_SSH_PORT (default 2222).",
    )
    lab_sub = lab.add_subparsers(dest="lab_command", required=True, metavar="LAB_COMMAND")
    up = lab_sub.add_parser("up", help="start daemons, build the guest (cached), define and boot the domains")
    up.add_argument("--daemon-timeout", type=_positive, default=30.0, metavar="SECONDS",
                    help="how long to wait for qemu:///system to answer (default 30)")
    up.set_defaults(func=_up)
    down = lab_sub.add_parser("down", help="remove the lab's domains, images, sshd and authorized key")
    down.add_argument("--purge", action="store_true", help="also remove the cached guest kernel/initramfs")
    down.set_defaults(func=_down)
    status = lab_sub.add_parser("status", help="domains, state, accelerator, agents, images, ssh spec")
    status.add_argument("--json", action="store_true", help="print the manifest plus live status as JSON")
    status.set_defaults(func=_status)
