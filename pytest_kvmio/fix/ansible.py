"""`kvmio fix --ansible FILE`: the same changes as an Ansible playbook (ansible-core's builtin modules only).

Each domain's XML changes are one `virt-xml NAME --edit --xml XPATH=VALUE ...` command (the changes the fix made to
its XML, never the XML itself: the secure XML would leak secrets and the redacted one would wipe them). Every change
is probed first, so the playbook is idempotent: a probe never changes anything and runs in check mode too
(`virt-xml ... --print-diff` prints nothing once the definition has the changes; a host command's check exits 0
once the host has it), and the task that applies runs only when its probe found work, reporting `changed`. In
`--check` mode that task runs the probe's dry form instead (virt-xml --print-diff, or nothing), so check mode reports
exactly what a real run would change. Before a domain is changed, its persistent XML (with secrets) is saved on
the host in the backup directory (`kvmio_backup_dir`, mode 0600), as `--apply` does. Changes take effect when the
domain restarts.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from typing import Any

import yaml

from pytest_kvmio import __version__

BACKUP_DIR = "/var/lib/kvmio/backups"


@dataclass
class DomainChanges:
    """One domain's changes: virt-xml --xml settings, and host commands from the findings the XML fix left."""

    name: str
    rules: list[str]
    xml: list[str] = field(default_factory=list)  # virt-xml --xml arguments
    host_commands: list[str] = field(default_factory=list)
    #: Why some of its changes are not in the playbook (virt-xml cannot remove an attribute or element).
    left_out: list[str] = field(default_factory=list)


def host_check(command: str) -> str | None:
    """Return a shell check that exits 0 once `command` has had its effect; None when kvmio knows none."""
    try:
        words = shlex.split(command)
    except ValueError:
        return None
    if len(words) == 3 and words[:2] == ["sysctl", "-w"] and "=" in words[2]:
        key, value = words[2].split("=", 1)
        return f"test \"$(sysctl -n {shlex.quote(key)})\" = {shlex.quote(value)}"
    if len(words) == 4 and words[0] == "echo" and words[2] == ">":
        line, path = words[1], words[3]
        if path.startswith("/sys/") and path.endswith("/queue/scheduler"):
            return f"grep -qF {shlex.quote('[' + line + ']')} {shlex.quote(path)}"
        return f"test \"$(cat {shlex.quote(path)} 2>/dev/null)\" = {shlex.quote(line)}"
    return None


def playbook(domains: list[DomainChanges], *, hosts: str, local: bool, libvirt_uri: str | None,
             backup_dir: str = BACKUP_DIR) -> str:
    """Return the playbook's YAML text."""
    tasks: list[dict[str, Any]] = []
    notes: list[str] = []
    for n, dom in enumerate(domains, 1):
        connect = ["--connect", libvirt_uri] if libvirt_uri else []
        if dom.xml:
            probe, argv = f"kvmio_probe_{n}", ["virt-xml", *connect, dom.name, "--edit", *[a for x in dom.xml for a in ("--xml", x)]]
            virsh = "virsh" + (f" -c {shlex.quote(libvirt_uri)}" if libvirt_uri else "")
            tasks += [
                {"name": f"{dom.name}: would its definition change? ({', '.join(dom.rules)})",
                 "ansible.builtin.command": {"argv": [*argv, "--print-diff"]},
                 "register": probe, "check_mode": False, "changed_when": False},
                {"name": f"{dom.name}: save its persistent XML (with secrets, mode 0600) before changing it",
                 "ansible.builtin.shell": ("umask 077 && mkdir -p \"$KVMIO_BACKUP_DIR\" && "
                                           f"{virsh} dumpxml --inactive --security-info {shlex.quote(dom.name)} > "
                                           f"\"$KVMIO_BACKUP_DIR\"/{shlex.quote(dom.name)}-$(date -u +%Y%m%dT%H%M%S.%NZ).xml"),
                 "environment": {"KVMIO_BACKUP_DIR": "{{ kvmio_backup_dir }}"},
                 "when": f"{probe}.stdout | length > 0 and not ansible_check_mode", "changed_when": False},
                {"name": f"{dom.name}: edit its definition (takes effect when it restarts)",
                 "ansible.builtin.command": {"argv": "{{ kvmio_argv + (['--print-diff'] if ansible_check_mode else []) }}"},
                 "vars": {"kvmio_argv": argv}, "check_mode": False,
                 "when": f"{probe}.stdout | length > 0", "changed_when": True},
            ]
        for m, command in enumerate(dom.host_commands, 1):
            check = host_check(command)
            if check is None:
                notes.append(f"{dom.name}: not automated (kvmio knows no check that makes it idempotent): {command}")
                continue
            probe = f"kvmio_host_{n}_{m}"
            tasks += [
                {"name": f"host: is it needed? {command}", "ansible.builtin.shell": check, "register": probe,
                 "check_mode": False, "changed_when": False, "failed_when": False},
                {"name": f"host: {command}", "ansible.builtin.shell": "{{ ':' if ansible_check_mode else kvmio_command }}",
                 "vars": {"kvmio_command": command}, "check_mode": False,
                 "when": f"{probe}.rc != 0", "changed_when": True},
            ]
        notes.extend(f"{dom.name}: left out: {why}" for why in dom.left_out)
    play: dict[str, Any] = {"name": f"kvmio fix: {', '.join(d.name for d in domains) or 'nothing to change'}",
                            "hosts": hosts}
    if local:
        play["connection"] = "local"
    else:
        play["become"] = True
    variables: dict[str, str] = {"kvmio_backup_dir": backup_dir}
    if local:  # the modules run here: with the Python that runs ansible-playbook, not one discovered
        variables["ansible_python_interpreter"] = "{{ ansible_playbook_python }}"
    play.update({"gather_facts": False, "vars": variables, "tasks": tasks})
    header = [f"# Written by kvmio fix (pytest-kvmio {__version__}): the changes `kvmio fix` makes, idempotent.",
              "# Run with --check first: it reports what would change; a second real run reports no change.",
              "# Changes to a domain's definition take effect when the domain restarts (shut down, then start)."]
    header += [f"# {note}" for note in notes]
    return "\n".join(header) + "\n" + yaml.safe_dump([play], sort_keys=False, width=1000)
