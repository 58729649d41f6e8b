"""`kvmio lab up|down|status`: bring the lab to its declared state, remove it, describe it."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import libvirt
import libvirt_qemu
from lxml import etree

from pytest_kvmio.errors import CommandError
from pytest_kvmio.files.atomic import write_atomically
from pytest_kvmio.lab import (
    accel,
    daemons,
    guest,
    guestssh,
    images,
    lock,
    manifest,
    preflight,
    seeds,
    sshd,
    topology,
    vhost,
    xmlgen,
)
from pytest_kvmio.lab.paths import (
    DOMAIN_PREFIX,
    LIBVIRT_URI,
    LabPaths,
    guest_ssh_port,
    ssh_port,
)
from pytest_kvmio.lab.progress import Progress
from pytest_kvmio.lab.shell import tail

AGENT_TIMEOUT = 300.0  # TCG, 2 cores, three guests booting at once


def agent_ping(dom: libvirt.virDomain, timeout: int = 2) -> bool:
    """Return whether the domain's guest agent answers guest-ping."""
    try:
        libvirt_qemu.qemuAgentCommand(dom, '{"execute":"guest-ping"}', timeout, 0)
        return True
    except libvirt.libvirtError:
        return False


def lab_domains(conn: libvirt.virConnect) -> list[libvirt.virDomain]:
    """Return every defined or running domain whose name starts with kvmio-lab-."""
    return [d for d in conn.listAllDomains(0) if d.name().startswith(DOMAIN_PREFIX)]


def _lookup(conn: libvirt.virConnect, name: str) -> libvirt.virDomain | None:
    try:
        return conn.lookupByName(name)
    except libvirt.libvirtError:
        return None


def _remove_domain(dom: libvirt.virDomain) -> None:
    if dom.isActive():
        dom.destroy()
    dom.undefine()


def _define(
    conn: libvirt.virConnect, paths: LabPaths, boot: xmlgen.GuestBoot, guest_ports: dict[str, int], progress: Progress
) -> tuple[dict[str, str], list[str]]:
    """Define every lab domain whose XML changed; return (xml paths, names (re)defined)."""
    paths.xml.mkdir(parents=True, exist_ok=True)
    paths.logs.mkdir(parents=True, exist_ok=True)
    xml_paths, changed = {}, []
    wanted = {d.name for d in topology.DOMAINS}
    for dom in lab_domains(conn):
        if dom.name() not in wanted:  # left over from an older topology
            _remove_domain(dom)
    for spec in topology.DOMAINS:
        xml = xmlgen.render(spec, boot, paths.images, paths.console_log(spec.name), guest_ports.get(spec.name))
        path = paths.xml / f"{spec.name}.xml"
        path.write_text(xml)
        xml_paths[spec.name] = str(path)
        existing = _lookup(conn, spec.name)
        if existing is not None:
            in_effect = seeds.pending_in_effect(existing, spec)
            if in_effect:
                state = "runs" if existing.isActive() else "would start"
                progress.say(f"define: {spec.name} {state} with its pending-restart seed ({', '.join(in_effect)}), "
                             "so nothing would be pending: defining it afresh")
            elif xmlgen.spec_hash(existing.XMLDesc(0)) == xmlgen.spec_hash(xml) and not _drifted(existing, spec, paths):
                continue
            _remove_domain(existing)
        try:
            defined = conn.defineXML(xml)
        except libvirt.libvirtError as exc:
            raise CommandError(f"libvirt refused {path}: {exc}") from exc
        if spec.restore_drift:
            defined_xml(paths, spec.name).write_text(defined.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
        changed.append(spec.name)
    return xml_paths, changed


def defined_xml(paths: LabPaths, name: str) -> Path:
    """Return where the lab keeps the persistent XML libvirt reported right after defining a domain it restores."""
    return paths.xml / f"{name}.defined.xml"


def _drifted(dom: libvirt.virDomain, spec: topology.DomainSpec, paths: LabPaths) -> bool:
    """Return whether a domain the lab restores (tests change it) no longer has the persistent XML it was defined with."""
    if not spec.restore_drift:
        return False
    recorded = defined_xml(paths, spec.name)
    return not recorded.is_file() or _normalized(recorded.read_text()) != _normalized(
        dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))


def _normalized(xml: str) -> bytes:
    """Return persistent XML without what libvirt changes by itself: blank text, the order of <devices> (its first
    start moves the controllers it added at define time)."""
    root = etree.fromstring(xml.encode(), parser=etree.XMLParser(remove_blank_text=True, resolve_entities=False))
    devices = root.find("devices")
    if devices is not None:
        children = sorted(devices, key=lambda el: etree.tostring(el, method="c14n"))
        for child in children:
            devices.append(child)
    return etree.tostring(root, method="c14n")


def _undefine_changed(conn: libvirt.virConnect, names: list[str]) -> None:
    for name in names:
        dom = _lookup(conn, name)
        if dom is not None:
            _remove_domain(dom)


def _boot(conn: libvirt.virConnect, paths: LabPaths, progress: Progress, started: list[str],
          guest_ports: dict[str, int]) -> None:
    """Start the running domains and wait until every guest agent answers."""
    for spec in topology.DOMAINS:
        dom = conn.lookupByName(spec.name)
        if spec.running and not dom.isActive():
            port = guest_ports.get(spec.name)
            if port is not None and guestssh.port_in_use(port):
                raise CommandError(f"{spec.name}: 127.0.0.1:{port} (its SSH port forward) is taken by another "
                                   "process; set KVMIO_LAB_GUEST_SSH_PORT to a free port")
            paths.console_log(spec.name).unlink(missing_ok=True)
            try:
                dom.create()
            except libvirt.libvirtError as exc:
                raise CommandError(f"{spec.name} did not start: {exc}") from exc
            started.append(spec.name)
        elif not spec.running and dom.isActive():
            dom.destroy()
    pending = {s.name for s in topology.DOMAINS if s.running}
    deadline = time.monotonic() + AGENT_TIMEOUT
    t0 = time.monotonic()
    while pending:
        for name in sorted(pending):
            dom = conn.lookupByName(name)
            if not dom.isActive():
                raise CommandError(f"{name} stopped while booting; console log "
                                   f"{paths.console_log(name)}:\n{tail(paths.console_log(name))}")
            if agent_ping(dom):
                pending.discard(name)
                progress.say(f"boot: {name} agent answered after {time.monotonic() - t0:.1f}s")
        if pending and time.monotonic() > deadline:
            name = sorted(pending)[0]
            log = paths.console_log(name)
            raise CommandError(
                f"guest agent of {', '.join(sorted(pending))} did not answer guest-ping within "
                f"{AGENT_TIMEOUT:.0f}s; tail of {log}:\n{tail(log)}\n"
                "Check that the guest build is complete (kvmio lab down --purge; kvmio lab up)."
            )
        if pending:
            time.sleep(1)


def _host_cpus() -> int:
    return os.cpu_count() or 1


def up(args: Any) -> int:
    """Bring the lab up (idempotent); one `up`/`down` at a time per state directory."""
    paths = LabPaths.from_env()
    progress = Progress()
    with lock.exclusive(paths.root, say=progress.say):
        return _up(args, paths, progress)


def _up(args: Any, paths: LabPaths, progress: Progress) -> int:
    port = ssh_port()
    guest_port = guest_ssh_port()
    guest_ports = guestssh.ports(guest_port)
    if port in guest_ports.values():
        raise CommandError(f"KVMIO_LAB_SSH_PORT and KVMIO_LAB_GUEST_SSH_PORT both use {port}; pick two ports")
    with progress.step("preflight"):
        preflight.check()
        for d in (paths.root, paths.cache):
            d.mkdir(parents=True, exist_ok=True)
            d.chmod(0o755)  # libvirt-qemu reads kernel, initrd and images below
    state = _load_state(paths)
    started_daemons: list[str] = []

    def stop_started_daemons() -> None:
        for name in started_daemons:
            for pid in daemons.pids_of(name):
                os.kill(pid, 15)

    with progress.step("daemons", cleanup=stop_started_daemons) as info:
        started_daemons.extend(daemons.ensure_running())
        conn = daemons.connect(LIBVIRT_URI, timeout=args.daemon_timeout)
        info.note = f"started {', '.join(started_daemons)}" if started_daemons else "already running"
    state.setdefault("daemons_started", [])
    state["daemons_started"] = sorted(set(state["daemons_started"]) | set(started_daemons))
    _save_state(paths, state)
    with progress.step("guest") as info:
        progress.say("guest: resolving package versions (a cold build downloads ~70 MB and takes ~30 s)")
        built = guest.ensure(paths)
        info.note = f"cache hit {built.key}" if built.cache_hit else f"built {built.key}"
    with progress.step("accelerator") as info:
        domain_type, why = accel.choose(built.kernel, built.initrd, paths.cache, built.key)
        info.note = f"{accel.accel_name(domain_type)}: {why}"
    boot = xmlgen.GuestBoot(built.kernel, built.initrd, domain_type)
    created: list[Path] = []

    def remove_created() -> None:
        for p in created:
            p.unlink(missing_ok=True)

    with progress.step("images", cleanup=remove_created) as info:
        new, kept = images.ensure(topology.images(), paths.images)
        created.extend(new)
        info.note = f"{len(new)} created, {len(kept)} kept"
    backends_started: list[str] = []

    def stop_started_backends() -> None:
        if backends_started:
            vhost.stop_all(paths)

    # Before boot: QEMU connects to a vhost-user disk's socket when the domain starts.
    with progress.step("vhost", cleanup=stop_started_backends) as info:
        started_backends, kept_backends = vhost.ensure(paths)
        backends_started.extend(started_backends)
        info.note = (f"{len(started_backends)} qemu-storage-daemon started, {len(kept_backends)} already running"
                     if started_backends or kept_backends else "no vhost-user disks")
        # A running guest whose backend was (re)started keeps a dead disk unless it reconnects: boot it again.
        for name in vhost.stranded_domains(started_backends):
            dom = _lookup(conn, name)
            if dom is not None and dom.isActive():
                progress.say(f"vhost: {name} has a vhost-user disk without <reconnect> whose backend restarted; "
                             "restarting the domain")
                dom.destroy()
    changed: list[str] = []
    with progress.step("define", cleanup=lambda: _undefine_changed(conn, changed)) as info:
        xml_paths, redefined = _define(conn, paths, boot, guest_ports, progress)
        changed.extend(redefined)
        info.note = f"{len(redefined)} (re)defined, {len(topology.DOMAINS) - len(redefined)} up to date"
    started: list[str] = []

    def stop_started() -> None:
        for name in started:
            dom = _lookup(conn, name)
            if dom is not None and dom.isActive():
                dom.destroy()

    with progress.step("boot", cleanup=stop_started) as info:
        _boot(conn, paths, progress, started, guest_ports)
        info.note = f"{len(started)} started" if started else "all guests already answering"
    offline: dict[str, topology.DomainSpec] = {}
    with progress.step("offline-xml") as info:
        paths.offline.mkdir(parents=True, exist_ok=True)
        for spec in topology.OFFLINE:
            assert spec.offline_file
            target = paths.offline / spec.offline_file
            target.write_text(xmlgen.render(spec, boot, paths.images, paths.console_log(spec.name)))
            offline[str(target)] = spec
        info.note = f"{len(offline)} files in {paths.offline}"
    sshd_running_before = sshd.running_pid(sshd.SshFiles(paths)) is not None

    def stop_new_sshd() -> None:
        if not sshd_running_before:
            sshd.stop(paths)

    with progress.step("sshd", cleanup=stop_new_sshd) as info:
        ssh, sshd_started = sshd.ensure(paths, port, guestssh.config_block(sshd.SshFiles(paths), guest_port))
        info.note = f"started on 127.0.0.1:{port}" if sshd_started else f"already running on 127.0.0.1:{port}"
    with progress.step("guest-ssh") as info:
        guest_ssh = guestssh.ensure(conn, sshd.SshFiles(paths), guest_port)
        info.note = ", ".join(f"{name} on 127.0.0.1:{p}" for name, p in guest_ssh["ports"].items())
    with progress.step("seeds") as info:
        for line in seeds.apply(conn):
            progress.say(f"seeds: {line}")
        info.note = "runtime seeds applied (lab/seeds.py)"
    with progress.step("manifest") as info:
        doc = manifest.build(topology.DOMAINS, offline, xml_paths, _host_cpus(), ssh,
                             accel.accel_name(domain_type), LIBVIRT_URI, guest_ssh=guest_ssh,
                             vhost=vhost.manifest_entries(paths))
        write_atomically(paths.manifest, json.dumps(doc, indent=2) + "\n")
        info.note = str(paths.manifest)
    state.update(accel=accel.accel_name(domain_type), accel_reason=why, guest_key=built.key)
    _save_state(paths, state)
    progress.say(f"lab up: {sum(s.running for s in topology.DOMAINS)} guests answering, "
                 f"accel {accel.accel_name(domain_type)}; `kvmio lab status` for details")
    return 0


def down(args: Any) -> int:
    """Remove every lab domain, image, offline file and the lab's sshd; keep the guest cache unless --purge."""
    paths = LabPaths.from_env()
    progress = Progress()
    with lock.exclusive(paths.root, say=progress.say):
        return _down(args, paths, progress)


def _down(args: Any, paths: LabPaths, progress: Progress) -> int:
    with progress.step("domains") as info:
        removed: list[str] = []
        if daemons.pids_of("libvirtd"):
            conn = daemons.connect(LIBVIRT_URI, timeout=10)
            for dom in lab_domains(conn):
                _remove_domain(dom)
                removed.append(dom.name())
        if not daemons.pids_of("libvirtd"):
            info.note = "libvirtd is not running: any kvmio-lab-* domains stay defined; start it and run down again"
        else:
            info.note = f"removed {', '.join(removed)}" if removed else "none defined"
    with progress.step("vhost") as info:
        # After the domains: no QEMU is connected any more when the backends stop.
        stopped = vhost.stop_all(paths)
        info.note = f"stopped qemu-storage-daemon pid {', '.join(map(str, stopped))}" if stopped else "none running"
    with progress.step("sshd") as info:
        info.note = "stopped, key removed from authorized_keys" if sshd.stop(paths) else "not running"
    with progress.step("files") as info:
        gone = []
        for d in (paths.images, paths.xml, paths.offline, paths.logs, paths.ssh, paths.vhost):
            if d.exists():
                _rmtree(d)
                gone.append(d.name)
        for f in (paths.manifest, paths.state):
            f.unlink(missing_ok=True)
        if args.purge and paths.cache.exists():
            _rmtree(paths.cache)
            gone.append("cache")
        if args.purge and paths.root.exists() and not any(paths.root.iterdir()):
            paths.root.rmdir()
        info.note = f"removed {', '.join(gone) or 'nothing'}" + ("" if args.purge else "; guest cache kept (--purge)")
    return 0


def _rmtree(path: Path) -> None:
    """Remove a tree; retry once, since libvirt may still be releasing a just-destroyed domain's files."""
    try:
        shutil.rmtree(path)
    except OSError:
        time.sleep(1)
        shutil.rmtree(path)


def collect_status(paths: LabPaths) -> dict[str, Any]:
    """Return live facts: daemon, per-domain state and agent, images, sshd."""
    live: dict[str, Any] = {"libvirtd_running": bool(daemons.pids_of("libvirtd")), "domains": {}}
    state = _load_state(paths)
    live["accel"] = state.get("accel")
    live["accel_reason"] = state.get("accel_reason")
    if live["libvirtd_running"]:
        try:
            conn = daemons.connect(LIBVIRT_URI, timeout=5)
        except CommandError as exc:
            live["libvirt_error"] = str(exc)
        else:
            for dom in lab_domains(conn):
                active = bool(dom.isActive())
                spec = next((s for s in topology.DOMAINS if s.name == dom.name()), None)
                live["domains"][dom.name()] = {
                    "state": "running" if active else "shut off",
                    "agent": agent_ping(dom) if active else None,
                    "console_log": str(paths.console_log(dom.name())),
                    "images": [str(paths.images / d.image.filename) for d in spec.disks] if spec else [],
                }
    live["vhost"] = vhost.status(paths)
    files = sshd.SshFiles(paths)
    live["sshd_pid"] = sshd.running_pid(files)
    live["images"] = sorted(str(p) for p in paths.images.glob("*")) if paths.images.exists() else []
    return live


def status(args: Any) -> int:
    """Print the lab's state; --json prints the manifest plus a `status` section."""
    paths = LabPaths.from_env()
    doc: dict[str, Any] = json.loads(paths.manifest.read_text()) if paths.manifest.is_file() else {}
    live = collect_status(paths)
    if args.json:
        print(json.dumps({**doc, "status": live}, indent=2))
        return 0
    if not doc:
        print(f"lab is down (no {paths.manifest})")
    print(f"state dir: {paths.root}")
    print(f"accel:     {live['accel'] or '-'}  {live['accel_reason'] or ''}")
    print(f"libvirtd:  {'running' if live['libvirtd_running'] else 'not running'}  ({LIBVIRT_URI})")
    for name, info in sorted(live["domains"].items()):
        agent = {True: "agent answers", False: "agent silent", None: "-"}[info["agent"]]
        print(f"  {name:28} {info['state']:9} {agent}")
        for image in info["images"]:
            print(f"      {image}")
    for backend in live["vhost"]:
        pid = f"pid {backend['pid']}" if backend["pid"] else "NOT RUNNING"
        print(f"vhost:     {backend['target']:28} qemu-storage-daemon {pid}  {backend['socket']} "
              f"(owner {backend['owner'] or '-'}, {backend['queues']} queues)")
    if doc.get("ssh"):
        pid = live["sshd_pid"]
        print(f"sshd:      {'pid ' + str(pid) if pid else 'NOT RUNNING'}")
        print(f"  --host={doc['ssh']['host_spec']}")
        print(f"  libvirt: {doc['ssh']['libvirt_uri']}")
    if doc.get("guest_ssh"):
        ports = ", ".join(f"{n} 127.0.0.1:{p}" for n, p in doc["guest_ssh"].get("ports", {}).items())
        print(f"guest ssh: {ports}")
        print(f"  --guest={doc['guest_ssh']['spec']}")
    if doc.get("offline_xml"):
        print("offline XML:")
        for path in doc["offline_xml"]:
            print(f"  {path}")
    if doc:
        print(f"manifest:  {paths.manifest}")
    return 0


def _load_state(paths: LabPaths) -> dict[str, Any]:
    try:
        return dict(json.loads(paths.state.read_text()))
    except (OSError, ValueError):
        return {}


def _save_state(paths: LabPaths, state: dict[str, Any]) -> None:
    paths.root.mkdir(parents=True, exist_ok=True)
    paths.state.write_text(json.dumps(state, indent=2) + "\n")
