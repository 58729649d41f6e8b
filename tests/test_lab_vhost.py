"""The lab's vhost-user backends (qemu-storage-daemon) on this machine, in a state directory of their own: `up` starts
them once, a second `up` restarts nothing, `down` leaves no process and no socket. The shared lab is not touched."""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

import pytest

from pytest_kvmio.lab import images, vhost
from pytest_kvmio.lab.paths import LabPaths
from pytest_kvmio.lab.topology import DiskSpec, DomainSpec, ImageSpec

pytestmark = pytest.mark.integration

IMAGE = ImageSpec("kvmio-t-vhost", "raw", "prealloc", size_mib=16)
DOMAINS = (DomainSpec("t", "test", (DiskSpec("vdc", IMAGE, None, vhost=True, reconnect=10, queues=2, backend_queues=2),)),)


@pytest.fixture
def paths(tmp_path_factory: pytest.TempPathFactory) -> LabPaths:
    if shutil.which("qemu-storage-daemon") is None or os.geteuid() != 0:
        pytest.skip("needs qemu-storage-daemon (qemu-system-common) and root")
    root = Path(tmp_path_factory.mktemp("vh", numbered=True))  # short: a UNIX socket path has at most 107 bytes
    lab = LabPaths(root)
    images.ensure([IMAGE], lab.images)
    return lab


def test_up_starts_the_backend_once_and_down_leaves_nothing(paths: LabPaths) -> None:
    try:
        started, kept = vhost.ensure(paths, DOMAINS)
        assert (started, kept) == (["t/vdc"], [])
        (state,) = vhost.status(paths, DOMAINS)
        assert state["pid"] in vhost.lab_daemons(paths)
        assert state["owner"] == f"{vhost.qemu_user()}:" + state["owner"].split(":")[1]  # QEMU can connect
        with socket.socket(socket.AF_UNIX) as client:  # it serves vhost-user on the socket
            client.connect(state["socket"])
        assert vhost.ensure(paths, DOMAINS) == ([], ["t/vdc"])  # up twice restarts nothing
        assert vhost.status(paths, DOMAINS)[0]["pid"] == state["pid"]
    finally:
        stopped = vhost.stop_all(paths, DOMAINS)
    assert stopped == [state["pid"]]
    assert vhost.lab_daemons(paths) == []
    assert not Path(state["socket"]).exists() and list(paths.vhost.iterdir()) == []


def test_a_backend_that_died_is_started_again(paths: LabPaths) -> None:
    try:
        vhost.ensure(paths, DOMAINS)
        pid = vhost.status(paths, DOMAINS)[0]["pid"]
        os.kill(pid, 9)
        vhost._stop_pid(pid)  # reaped by init; wait until it is gone
        assert vhost.status(paths, DOMAINS)[0]["pid"] is None
        assert vhost.ensure(paths, DOMAINS) == (["t/vdc"], [])
        assert vhost.status(paths, DOMAINS)[0]["pid"] not in (None, pid)
    finally:
        vhost.stop_all(paths, DOMAINS)
    assert vhost.lab_daemons(paths) == []
