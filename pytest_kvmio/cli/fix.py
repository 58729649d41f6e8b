"""`kvmio fix`: patch domain XML so that the rules kvmio can fix in XML pass.

Offline, `kvmio fix FILE... --out DIR` writes fixed copies (same names) into DIR. Live, `kvmio fix --host HOST
--domain GLOB` prints the diffs and commands (a dry run); only `--apply` defines the patched XML, over a read-write
connection. Exit 0 when every XML-fixable failure is fixed, 1 when some remain (each listed with why), 4 on usage errors.

--host and --libvirt-uri are pytest's settings: unset, they come from KVMIO_HOSTS / KVMIO_LIBVIRT_URI or the ini keys
kvmio_hosts / kvmio_libvirt_uri of the ini file pytest would read here (a FILE given makes the fix offline all the
same; a setting that lists several hosts is refused).

--apply first saves each domain's current persistent XML (secure: with its secrets; mode 0600) in the backup
directory (--backup-dir, $KVMIO_BACKUP_DIR, else /var/lib/kvmio/backups for root, ~/.local/state/kvmio/backups for
others) and prints `kvmio fix --rollback FILE`, which defines it again. --restart then shuts the domain down (up to
--shutdown-timeout seconds; past it, --force destroys it), starts it and judges it again on facts read afresh.
--ansible FILE writes the same changes as an idempotent Ansible playbook (virt-xml edits, never a domain XML).
"""

from __future__ import annotations

import argparse
import fnmatch
import glob
import math
import sys
from pathlib import Path
from typing import Any, TextIO

from pytest_kvmio.errors import CommandError, InputError
from pytest_kvmio.facts.connection import HostSpec, HostUnreachable, open_connection
from pytest_kvmio.facts.host import HostFacts, apply_host_facts, assumed_facts
from pytest_kvmio.facts.saved import as_target
from pytest_kvmio.facts.targets import load_host
from pytest_kvmio.files.atomic import write_atomically
from pytest_kvmio.fix.ansible import BACKUP_DIR, DomainChanges, playbook
from pytest_kvmio.fix.apply import (
    BACKUP_ENV,
    SHUTDOWN_TIMEOUT,
    XML_INACTIVE,
    XML_SECURE,
    default_backup_dir,
    load_backup,
    restart,
    restore,
    save_backup,
)
from pytest_kvmio.fix.patch import FixedDocument, FixResult, fix_document, parse_root
from pytest_kvmio.fix.remedies import OTHER_REMEDIES, XML_REMEDIES
from pytest_kvmio.fix.verify import judge_in_effect
from pytest_kvmio.model.domain import DomainXMLError, domain_of
from pytest_kvmio.model.redact import redact_uri
from pytest_kvmio.model.xmlfiles import xml_files
from pytest_kvmio.plugin.options import add_shared
from pytest_kvmio.runconfig import RunConfig
from pytest_kvmio.settings import assumptions


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Add the `fix` subcommand to the `kvmio` subparsers `sub`."""
    parser = sub.add_parser("fix", help="patch domain XML so the XML-fixable rules pass", description=__doc__)
    parser.add_argument("files", nargs="*", metavar="FILE", help="domain XML files (offline)")
    parser.add_argument("--out", metavar="DIR", help="write the fixed copies here, under the same names "
                        "(live: DOMAIN.xml, redacted, for review)")
    parser.add_argument("--diff", action="store_true", help="print the diff of each changed file")
    parser.add_argument("--rule", action="append", metavar="ID", help="only these rules (repeatable)")
    parser.add_argument("--assume", metavar="FACTS", help="offline host facts, e.g. cpus=16,qemu=7.2 (with "
                        "--host-facts: overrides the facts it names)")
    add_shared(parser.add_argument, ("--host-facts",))
    add_shared(parser.add_argument, ("--host",))
    parser.add_argument("--domain", metavar="GLOB", help="live: the domains to fix")
    add_shared(parser.add_argument, ("--libvirt-uri",))
    parser.add_argument("--apply", action="store_true", help="live: define the patched XML (never by default), "
                        "after saving the current definition in the backup directory")
    parser.add_argument("--backup-dir", metavar="DIR", help=f"with --apply: where the definitions replaced are saved "
                        f"(default: ${BACKUP_ENV}, else /var/lib/kvmio/backups for root, ~/.local/state/kvmio/backups)")
    parser.add_argument("--rollback", metavar="FILE", help="define again the definition --apply saved in FILE "
                        "(the host and URI come from FILE.json unless --host is given)")
    parser.add_argument("--restart", action="store_true", help="with --apply: shut each changed running domain down, "
                        "start it and judge it again on facts read afresh (with --rollback: restart it)")
    parser.add_argument("--shutdown-timeout", metavar="SECONDS", type=_seconds, default=SHUTDOWN_TIMEOUT,
                        help=f"with --restart: how long to wait for the guest to shut down (default {SHUTDOWN_TIMEOUT:g})")
    parser.add_argument("--force", action="store_true", help="with --restart: destroy (power off) a domain still "
                        "running after --shutdown-timeout, instead of stopping with an error")
    parser.add_argument("--ansible", metavar="FILE", help="write the same changes as an idempotent Ansible playbook")
    parser.set_defaults(func=run_fix)
    return parser


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a number of seconds above 0, got {text!r}")
    return value


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
    if args.rollback:
        if args.files or args.apply or args.domain or args.ansible or args.out:
            raise InputError("--rollback FILE defines a saved definition again; it takes no FILE, --apply, --domain, "
                             "--out or --ansible")
        return _rollback(args, out)
    if args.restart and not args.apply:
        raise InputError("--restart restarts what --apply changed: pass --apply too")
    if args.force and not args.restart:
        raise InputError("--force destroys a domain that did not shut down in time: it needs --restart")
    if args.kvmio_hosts and args.files:
        raise InputError("--host fixes live domains; FILE and --assume are for offline files: pass one or the other")
    run = RunConfig.for_command(args, mode="domain_xml" if args.files else "hosts")
    spec = None if args.files else run.one_host("kvmio fix")
    if spec is not None:
        host_source = run.sources["hosts"]
        if args.assume or args.kvmio_host_facts:
            given = "--assume" if args.assume else "--host-facts"
            raise InputError(f"{host_source} fixes live domains; FILE and {given} are for offline files: pass one or the other")
        if not args.domain:
            raise InputError(f"{host_source} needs --domain GLOB (which domains to fix)")
        return _live(args, spec, run, rules, out)
    if args.apply or args.domain or args.kvmio_libvirt_uri:
        raise InputError("--apply, --domain and --libvirt-uri need --host")
    if not args.files:
        raise InputError("give domain XML FILEs (with --out DIR), or --host HOST --domain GLOB")
    if not args.out:
        raise InputError("--out DIR: where to write the fixed copies (the inputs are never changed)")
    return _offline(args, rules, out, run)


def _offline(args: argparse.Namespace, rules: list[str], out: TextIO, run: RunConfig) -> int:
    try:
        assumed = assumptions(args.assume) if args.assume else None
    except ValueError as exc:
        raise InputError(f"--assume: {exc}") from None
    if len(run.host_facts) > 1:
        raise InputError(f"--host-facts: {len(run.host_facts)} files; kvmio fix writes one copy of each FILE, for one "
                         "host: pass one --host-facts file")
    if run.host_facts:  # the saved host's facts, --assume overriding those it names
        facts = as_target(run.host_facts[0], "offline", assumed)
    else:
        facts = assumed_facts("offline", assumed) if assumed else HostFacts(name="offline", offline=True)
    try:
        files = xml_files(args.files)
    except DomainXMLError as exc:
        raise InputError(str(exc)) from None
    outdir = Path(args.out)
    if any(outdir.resolve() == f.path.parent.resolve() for f in files):
        raise InputError(f"--out {args.out}: is where the inputs are; give another directory (the inputs are never changed)")
    outdir.mkdir(parents=True, exist_ok=True)
    left = 0
    plays: list[DomainChanges] = []
    for file in files:  # the copies keep the inputs' paths relative to the folders given
        try:
            data = file.path.read_bytes()
            root = parse_root(data, str(file.path))
            name = (root.findtext("name") or "").strip() or file.path.stem
            template = None
            if facts.facts_file:  # images, backends and machine types as the saved host has them
                template = domain_of(root, source=str(file.path), host=facts.name, name=file.path.stem)
                apply_host_facts(facts, [template])
            fixed = fix_document(data, facts, rules, source=str(file.path), label=f"{file.rel}:{name}",  # lint's ids
                                 template=template)
        except DomainXMLError as exc:
            out.write(f"{file.rel}: not fixed: {exc}\n")
            left += 1
            continue
        except OSError as exc:
            out.write(f"{file.rel}: not fixed: {file.path}: cannot read: {exc.strerror}\n")
            left += 1
            continue
        copy = outdir / file.rel
        copy.parent.mkdir(parents=True, exist_ok=True)
        copy.write_bytes(fixed.data)
        plays.append(_changes_of(name, fixed))
        if fixed.rewritten:
            out.write(f"{file.rel}: written out anew, not edited in place ({fixed.rewritten})\n")
        left += _report(fixed.result, file.rel, args.diff, out)
    if args.ansible:  # templates: the play edits domains of the same names on the hosts it runs on
        _write_playbook(args.ansible, [p for p in plays if p.xml or p.host_commands or p.left_out], None, None, out,
                        args.backup_dir or BACKUP_DIR)
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
    say = lambda msg: print(msg, file=sys.stderr)
    host = load_host(spec, run.libvirt_uri, say, (args.domain,))  # only the chosen domains' images are read
    if host.error:
        raise CommandError(host.error)
    chosen = [d for d in host.domains if fnmatch.fnmatchcase(d.name, args.domain)]
    if not chosen:
        raise InputError(f"--domain {args.domain!r}: matches none of {spec.name}'s domains ({', '.join(d.name for d in host.domains)})")
    uri = spec.libvirt_uri(run.libvirt_uri)
    conn = host.connection
    backups = _backup_dir(args) if args.apply else None
    if args.apply:
        try:
            conn = open_connection(uri, host=spec.name, readonly=False)
        except HostUnreachable as exc:
            raise CommandError(str(exc)) from None
    outdir = Path(args.out) if args.out else None
    if outdir is not None:
        outdir.mkdir(parents=True, exist_ok=True)
    left = 0
    plays: list[DomainChanges] = []
    for domain in chosen:
        dom = conn.lookupByName(domain.name)
        # With --apply the secure XML (defining it back keeps the secrets); never printed: diffs show redacted text.
        # A playbook's virt-xml edits need no secrets: they leave what they do not name as it is.
        text = dom.XMLDesc(XML_INACTIVE | (XML_SECURE if args.apply else 0))
        neighbours = [d for d in host.domains if d.name != domain.name]
        fixed = fix_document(text.encode(), host.facts, rules, source=f"{spec.name}/{domain.name}",
                             running=domain.running, template=domain, stand_in=host.stand_in, neighbours=neighbours)
        result = fixed.result
        if fixed.rewritten:
            out.write(f"{domain.name}: written out anew, not edited in place ({fixed.rewritten})\n")
        left += _report(result, f"{domain.name}.xml", True, out)
        if args.ansible:
            plays.append(_changes_of(domain.name, fixed))
        if outdir is not None:  # the redacted patched XML, for review: never the secure one
            (outdir / f"{domain.name}.xml").write_text(result.after + "\n")
        if not result.changed:
            if args.restart and domain.running:  # fixed before, maybe not yet running: restart what still fails live
                live = dom.XMLDesc(0)  # what runs: the fix it would need is the fix not yet in effect
                pending = fix_document(live.encode(), host.facts, rules, source=f"{spec.name}/{domain.name}",
                                       running=True, template=domain, stand_in=host.stand_in,
                                       neighbours=neighbours).result.fixed
                if pending:
                    out.write(f"{domain.name}: its definition is fixed, but what runs still fails "
                              f"{', '.join(sorted({f.rule for f in pending}))}: restarting it\n")
                    left += _restart_and_judge(args, spec, run, conn.lookupByName(domain.name),
                                               [(f.rule, f.target) for f in pending], out, say)
            continue
        if not args.apply:
            out.write(f"{domain.name}: dry run; pass --apply to define the patched XML\n")
            continue
        assert backups is not None
        backup = save_backup(backups[0], host=spec.raw, libvirt_uri=uri, domain=domain.name, uuid=dom.UUIDString(),
                             xml=text, source=backups[1])
        out.write(f"{domain.name}: saved its definition to {backup.path}; to undo: kvmio fix --rollback {backup.path}\n")
        conn.defineXML(fixed.text)
        restart = domain.running and any(f.applied and f.applied.takes_effect == "restart" for f in result.fixed)
        out.write(f"{domain.name}: defined on {redact_uri(uri)}"
                  + ("; restart the domain (shut down, then start) for the changes to take effect\n"
                     if restart and not args.restart else "\n"))
        if args.restart:
            left += _restart_and_judge(args, spec, run, dom, [(f.rule, f.target) for f in result.fixed], out, say)
    if args.ansible:
        _write_playbook(args.ansible, plays, spec, run.libvirt_uri and uri, out, args.backup_dir or BACKUP_DIR)
    return 1 if left else 0


def _backup_dir(args: argparse.Namespace) -> tuple[Path, str]:
    if args.backup_dir:
        return Path(args.backup_dir), "--backup-dir"
    return default_backup_dir()


def _restart_and_judge(args: argparse.Namespace, spec: HostSpec, run: RunConfig, dom: Any,
                       fixed: list[tuple[str, str]], out: TextIO, say: Any) -> int:
    """Restart a changed domain, judge it again on facts read afresh; return how many fixed rules are not in effect."""
    name = dom.name()
    if not dom.isActive():
        out.write(f"{name}: not running: the new definition takes effect when it starts (--restart starts no domain)\n")
        return 0
    restart(dom, timeout=args.shutdown_timeout, force=args.force, say=lambda msg: print(msg, file=out))
    fresh = load_host(spec, run.libvirt_uri, say, (glob.escape(name),))
    if fresh.error:
        raise CommandError(f"{name}: restarted, but its host could not be read again: {fresh.error}")
    judged = judge_in_effect(fresh, name, fixed)
    out.writelines(j.line() + "\n" for j in judged)
    return sum(not j.in_effect for j in judged)


def _changes_of(name: str, fixed: FixedDocument) -> DomainChanges:
    rules = sorted({f.rule for f in fixed.result.fixed})
    changes = DomainChanges(name, rules, xml=[c.virt_xml for c in fixed.changes if c.kind != "remove"])
    changes.left_out = [f"virt-xml cannot remove {c.xpath}; apply this domain's fix with kvmio fix --apply"
                        for c in fixed.changes if c.kind == "remove"]
    if fixed.rewritten and fixed.result.changed:
        changes.left_out.append(f"its XML changes ({fixed.rewritten}); apply them with kvmio fix --apply")
    changes.host_commands = [c for f in fixed.result.left for c in f.remedies[0].host_commands]
    return changes


def _write_playbook(path: str, plays: list[DomainChanges], spec: HostSpec | None, uri: str | None,
                    out: TextIO, backup_dir: str = BACKUP_DIR) -> None:
    local = spec is None or spec.is_local
    hosts = "localhost" if spec is not None and spec.is_local else (spec.hostname or spec.name) if spec else "all"
    text = playbook(plays, hosts=hosts, local=local and spec is not None, libvirt_uri=uri, backup_dir=backup_dir)
    try:
        write_atomically(path, text)
    except OSError as exc:
        raise CommandError(f"--ansible {path}: cannot write it: {exc.strerror or exc}") from None
    for play in plays:
        out.writelines(f"{play.name}: not in the playbook: {why}\n" for why in play.left_out)
    out.write(f"wrote {path}: ansible-playbook {path} --check shows what it would change\n")


def _rollback(args: argparse.Namespace, out: TextIO) -> int:
    backup, xml = load_backup(Path(args.rollback))
    run = RunConfig.for_command(args, mode="hosts")
    given = run.one_host("kvmio fix --rollback") if args.kvmio_hosts else None
    if given is not None:
        uri = given.libvirt_uri(run.libvirt_uri)
    else:
        uri = args.kvmio_libvirt_uri or backup.libvirt_uri
    try:
        conn = open_connection(uri, host=backup.host, readonly=False)
    except HostUnreachable as exc:
        raise CommandError(str(exc)) from None
    dom = restore(conn, backup, xml)
    out.write(f"{backup.domain}: defined again from {backup.path} on {redact_uri(uri)}\n")
    if args.restart:
        restart(dom, timeout=args.shutdown_timeout, force=args.force, say=lambda msg: print(msg, file=out))
    elif dom.isActive():
        out.write(f"{backup.domain}: running: restart it (shut down, then start) to run the restored definition\n")
    return 0
