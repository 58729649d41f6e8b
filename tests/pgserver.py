"""A throwaway PostgreSQL server for the results history tests: a cluster in a temporary directory, run as `postgres`.

`initdb` and `pg_ctl` come from /usr/lib/postgresql/*/bin (Debian's `postgresql` package, scripts/setup.sh); the
server listens on a unix socket in that directory only (no TCP port). Anything that stops it from starting is an
error naming the step and its output, never a skip: the tests that need it must run.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

USER = "postgres"


class ServerError(Exception):
    """The throwaway server could not be started; says which step failed and why."""


def _bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        raise ServerError(f"no /usr/lib/postgresql/*/bin/{name}: install Debian's postgresql package "
                          "(scripts/setup.sh does)")
    return found[-1]


def _as_postgres(*command: str, timeout: int = 120) -> subprocess.CompletedProcess[str]:
    prefix: list[str] = [] if os.geteuid() != 0 else ["runuser", "-u", USER, "--"]
    return subprocess.run([*prefix, *command], capture_output=True, text=True, timeout=timeout)


@contextmanager
def server() -> Iterator[str]:
    """Start a cluster in a temporary directory; yield the directory of its socket (the URL's host); stop it after."""
    if os.geteuid() == 0:
        try:
            import pwd

            pwd.getpwnam(USER)
        except KeyError:
            raise ServerError(f"no {USER!r} user: install Debian's postgresql package (scripts/setup.sh does)") from None
    base = Path(tempfile.mkdtemp(prefix="kvmio-pg-"))
    if os.geteuid() == 0:
        shutil.chown(base, USER)
    data, log = base / "data", base / "server.log"
    init = _as_postgres(_bin("initdb"), "-D", str(data), "-A", "trust", "-U", USER, "--no-sync", "-E", "UTF8")
    if init.returncode != 0:
        shutil.rmtree(base, ignore_errors=True)
        raise ServerError(f"initdb failed ({init.returncode}): {init.stderr.strip() or init.stdout.strip()}")
    options = f"-k {base} -c listen_addresses='' -c fsync=off -c max_connections=50"
    start = _as_postgres(_bin("pg_ctl"), "-D", str(data), "-o", options, "-l", str(log), "-w", "-t", "60", "start")
    if start.returncode != 0:
        text = log.read_text() if log.exists() else ""
        shutil.rmtree(base, ignore_errors=True)
        raise ServerError(f"pg_ctl start failed ({start.returncode}): {start.stderr.strip()} {text[-2000:]}")
    try:
        yield str(base)
    finally:
        _as_postgres(_bin("pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop")
        shutil.rmtree(base, ignore_errors=True)


def new_database(socket_dir: str) -> str:
    """Create an empty database on the server; return its URL."""
    import psycopg  # the tests that use PostgreSQL need the driver; scripts/setup.sh installs it

    name = f"kvmio_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(f"postgresql:///postgres?host={socket_dir}&user={USER}", autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    return f"postgresql:///{name}?host={socket_dir}&user={USER}"
