"""`kvmio fix`: patch domain XML so that the rules kvmio can fix in XML pass.

Offline, `kvmio fix FILE... --out DIR` writes fixed copies (same names) into DIR. Live, `kvmio fix --host HOST
--domain GLOB` prints the diffs and commands (a dry run); only `--apply` defines the patched XML, over a read-write
connection. Exit 0 when every XML-fixable failure is fixed, 1 when some remain (each listed with why), 4 on usage errors.

--host and --libvirt-uri are pytest's settings: unset, they come from KVMIO_HOSTS / KVMIO_LIBVIRT_URI or the ini keys
kvmio_hosts / kvmio_libvirt_uri of the ini file pytest would read here (a FILE given makes the fix offline all the
same; a setting that lists several hosts is refused).
"""

from __future__ import annotations

import argparse
import fnmatch
import sys
from pathlib import Path
from typing import Any, TextIO

from lxml import etree

from pytest_kvmio.errors import CommandError, InputError
from pytest_kvmio.facts.connection import HostSpec, HostUnreachable, open_connection
from pytest_kvmio.facts.host import HostFacts, assumed_facts
from pytest_kvmio.facts.targets import load_host
from pytest_kvmio.fix.patch import FixResult, fix_domain, parse_root
from pytest_kvmio.fix.remedies import OTHER_REMEDIES, XML_REMEDIES
from pytest_kvmio.model.domain import DomainXMLError
from pytest_kvmio.model.redact import redact_uri
from pytest_kvmio.model.xmlfiles import xml_files
from pytest_kvmio.plugin.options import add_shared
from pytest_kvmio.runconfig import RunConfig
from pytest_kvmio.settings import assumptions

#: libvirt's flags: the inactive (persistent) definition, with its secrets (so defining it back drops none).
XML_INACTIVE, XML_SECURE = 2, 1


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Add the `fix` subcommand to the `kvmio` subparsers `sub`."""
    parser = sub.add_parser("fix", help="patch domain XML so the XML-fixable rules pass", description=__doc__)
    parser.add_argument("files", nargs="*", metavar="FILE", help="domain XML files (offline)")
    parser.add_argument("--out", metavar="DIR", help="write the fixed copies here, under the same names "
                        "(live: DOMAIN.xml, redacted, for review)")
    parser.add_argument("--diff", action="store_true", help="print the diff of each changed file")
    parser.add_argument("--rule", action="append", metavar="ID", help="only these rules (repeatable)")
    parser.add_argument("--assume", metavar="FACTS", help="offline host facts, e.g. cpus=16,qemu=7.2")
    add_shared(parser.add_argument, ("--host",))
    parser.add_argument("--domain", metavar="GLOB", help="live: the domains to fix")
    add_shared(parser.add_argument, ("--libvirt-uri",))
    parser.add_argument("--apply", action="store_true", help="live: define the patched XML (never by default)")
    parser.set_defaults(func=run_fix)
    return parser


def _rules(args: argparse.Namespace) -> list[str]:
    known = {**XML_REMEDIES, **OTHER_REMEDIES}
    if not args.rule:
        return list(XML_REMEDIES)
    unknown = [r for r in args.rule if r not in known]
    if unknown:
        raise InputError(f"--rule {', '.join(unknown)}: not a rule kvmio has fixes for; one of {', '.join(sorted(known))}")
    return list(args.rule)


def run_fix(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Fix files (offline) or a host's domains (live)."""
    out = out or sys.stdout
    rules = _rules(args)
    if args.kvmio_hosts and args.files:
        raise InputError("--host fixes live domains; FILE and --assume are for offline files: pass one or the other")
    run = RunConfig.for_command(args, mode="domain_xml" if args.files else "hosts")
    spec = None if args.files else run.one_host("kvmio fix")
    if spec is not None:
        host_source = run.sources["hosts"]
        if args.assume:
            raise InputError(f"{host_source} fixes live domains; FILE and --assume are for offline files: pass one or the other")
        if not args.domain:
            raise InputError(f"{host_source} needs --domain GLOB (which domains to fix)")
        return _live(args, spec, run, rules, out)
    if args.apply or args.domain or args.kvmio_libvirt_uri:
        raise InputError("--apply, --domain and --libvirt-uri need --host")
    if not args.files:
        raise InputError("give domain XML FILEs (with --out DIR), or --host HOST --domain GLOB")
    if not args.out:
        raise InputError("--out DIR: where to write the fixed copies (the inputs are never changed)")
    return _offline(args, rules, out)


def _offline(args: argparse.Namespace, rules: list[str], out: TextIO) -> int:
    try:
        facts = assumed_facts("offline", assumptions(args.assume)) if args.assume else HostFacts(name="offline", offline=True)
    except ValueError as exc:
        raise InputError(f"--assume: {exc}") from None
    try:
        files = xml_files(args.files)
    except DomainXMLError as exc:
        raise InputError(str(exc)) from None
    outdir = Path(args.out)
    if any(outdir.resolve() == f.path.parent.resolve() for f in files):
        raise InputError(f"--out {args.out}: is where the inputs are; give another directory (the inputs are never changed)")
    outdir.mkdir(parents=True, exist_ok=True)
    left = 0
    for file in files:  # the copies keep the inputs' paths relative to the folders given
        try:
            root = parse_root(file.path.read_bytes(), str(file.path))
        except DomainXMLError as exc:
            out.write(f"{file.rel}: not fixed: {exc}\n")
            left += 1
            continue
        except OSError as exc:
            out.write(f"{file.rel}: not fixed: {file.path}: cannot read: {exc.strerror}\n")
            left += 1
            continue
        name = (root.findtext("name") or "").strip() or file.path.stem
        result = fix_domain(root, facts, rules, source=str(file.path), label=f"{file.rel}:{name}")  # lint's ids
        copy = outdir / file.rel
        copy.parent.mkdir(parents=True, exist_ok=True)
        copy.write_bytes(etree.tostring(root, xml_declaration=False, encoding="utf-8") + b"\n")
        left += _report(result, file.rel, args.diff, out)
    return 1 if left else 0


def _report(result: FixResult, label: str, diff: bool, out: TextIO, applied: bool = False) -> int:
    """Print what was fixed and what is left; return how many are left."""
    if diff and result.changed:
        out.write(result.diff(label))
    for finding in result.fixed:
        remedy = finding.applied
        assert remedy is not None
        out.write(f"{label}: fixed {finding.rule}: {remedy.summary} (takes effect: {remedy.takes_effect})\n")
        out.writelines(f"    {cmd}\n" for cmd in remedy.virt_xml)
        preferred = finding.remedies[0]
        if preferred is not remedy:
            out.write(f"    preferred instead: {preferred.summary}\n")
            out.writelines(f"      {cmd}\n" for cmd in preferred.host_commands)
    for finding in result.left:
        out.write(f"{label}: left {finding.rule} on {finding.target}: {finding.why_left}\n")
    if not result.fixed and not result.left:
        out.write(f"{label}: nothing to fix\n")
    return len(result.left)


def _live(args: argparse.Namespace, spec: HostSpec, run: RunConfig, rules: list[str], out: TextIO) -> int:
    host = load_host(spec, run.libvirt_uri, lambda msg: print(msg, file=sys.stderr))
    if host.error:
        raise CommandError(host.error)
    chosen = [d for d in host.domains if fnmatch.fnmatchcase(d.name, args.domain)]
    if not chosen:
        raise InputError(f"--domain {args.domain!r}: matches none of {spec.name}'s domains ({', '.join(d.name for d in host.domains)})")
    uri = spec.libvirt_uri(run.libvirt_uri)
    conn = host.connection
    if args.apply:
        try:
            conn = open_connection(uri, host=spec.name, readonly=False)
        except HostUnreachable as exc:
            raise CommandError(str(exc)) from None
    outdir = Path(args.out) if args.out else None
    if outdir is not None:
        outdir.mkdir(parents=True, exist_ok=True)
    left = 0
    for domain in chosen:
        flags = XML_INACTIVE | (XML_SECURE if args.apply else 0)
        text = conn.lookupByName(domain.name).XMLDesc(flags)
        root = parse_root(text.encode(), f"{spec.name}/{domain.name}")  # with --apply: secrets inside; never printed
        result = fix_domain(root, host.facts, rules, source=f"{spec.name}/{domain.name}", running=domain.running,
                            template=domain, stand_in=host.stand_in)
        left += _report(result, f"{domain.name}.xml", True, out)
        if outdir is not None:  # the redacted patched XML, for review: never the secure one
            (outdir / f"{domain.name}.xml").write_text(result.after + "\n")
        if not result.changed:
            continue
        if not args.apply:
            out.write(f"{domain.name}: dry run; pass --apply to define the patched XML\n")
            continue
        conn.defineXML(etree.tostring(root, encoding="unicode"))
        restart = domain.running and any(f.applied and f.applied.takes_effect == "restart" for f in result.fixed)
        out.write(f"{domain.name}: defined on {redact_uri(uri)}"
                  + ("; restart the domain (shut down, then start) for the changes to take effect\n" if restart else "\n"))
    return 1 if left else 0
