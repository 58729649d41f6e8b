"""`kvmio facts save --host HOST [--out FILE]`: save a host's facts as JSON, for offline lint with `--host-facts FILE`.

Reads the host as a live run does (one read-only libvirt connection, one shell command): versions, CPUs by NUMA node,
the io_uring switch, block devices and their schedulers, machine types and their aliases, the allocation of every
image its domains use, and its vhost-user backends. Secrets stay out (URIs are masked; a backend's command line keeps
only its --export options). Without --out the JSON goes to standard output. --host and --libvirt-uri are pytest's
settings (KVMIO_HOSTS, ini kvmio_hosts, ...); one host per file. Exit 0 when saved, 1 when the host can't be read,
4 on usage errors.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, TextIO

from pytest_kvmio.errors import CommandError, InputError
from pytest_kvmio.facts.connection import parse_host_spec
from pytest_kvmio.facts.saved import facts_json
from pytest_kvmio.facts.targets import load_host
from pytest_kvmio.files.atomic import write_atomically
from pytest_kvmio.model.redact import redact_uri
from pytest_kvmio.plugin.options import add_shared
from pytest_kvmio.runconfig import RunConfig
from pytest_kvmio.settings import output_file


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Add the `facts` subcommand (and its `save` action) to the `kvmio` subparsers `sub`."""
    parser = sub.add_parser("facts", help="save a host's facts for offline lint (--host-facts)", description=__doc__)
    actions = parser.add_subparsers(dest="facts_command", required=True, metavar="ACTION")
    save = actions.add_parser("save", help="write a host's facts as JSON", description=__doc__)
    add_shared(save.add_argument, ("--host", "--libvirt-uri"))
    save.add_argument("--out", metavar="FILE", help="write the facts to FILE (whole or not at all); default: stdout")
    save.add_argument("--name", metavar="NAME",
                      help="the host name the file carries (default: the host's name, e.g. local or hv01); "
                      "offline targets of several --host-facts files are offline@NAME")
    save.set_defaults(func=run_save)
    return parser


def run_save(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Read one host's facts and write them as JSON to --out (or `out`, standard output by default)."""
    out = out or sys.stdout
    if args.out is not None:
        try:
            output_file(args.out)
        except ValueError as exc:
            raise InputError(f"--out {exc}") from None
    if args.name is not None and (not args.name.strip() or any(c in args.name for c in "/ \t\n")):
        raise InputError(f"--name {args.name!r}: expected a host name without spaces or slashes, such as hv01")
    run = RunConfig.for_command(args)
    spec = run.one_host("kvmio facts save") or parse_host_spec("local")
    host = load_host(spec, run.libvirt_uri, lambda line: print(line, file=sys.stderr))
    try:
        if host.error:
            raise CommandError(f"{host.error}; no facts saved")
        text = facts_json(host.facts, name=args.name or host.name)
    finally:
        if host.connection is not None:
            host.connection.close()
    if args.out is None:
        out.write(text)
        return 0
    try:
        write_atomically(args.out, text)
    except OSError as exc:
        raise InputError(f"--out {args.out}: cannot write: {exc.strerror or exc}") from None
    print(redact_uri(f"kvmio: saved the facts of {args.name or host.name} ({len(host.facts.images)} images, "
                     f"{len(host.facts.block_devices)} block devices) to {args.out}"), file=sys.stderr)
    return 0
