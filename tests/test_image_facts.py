"""The host command's image part: what it reads of each image equals what `qemu-img info` says of it.

Raw files (every disk on them declares raw) are read by one `stat`, the others by `qemu-img info` in parallel
batches; a host without GNU stat, with one CPU or without `xargs -P` reads them the old way. Each way runs here in
the real shell on real images (`qemu-img create`), with names a shell would split or a parser would misread.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from pytest_kvmio.facts.host import COMMAND_TIMEOUT, HostFacts, host_script, parse_host_output

pytestmark = pytest.mark.skipif(shutil.which("qemu-img") is None, reason="needs qemu-img")

NAMES = ["plain", "a b", "new\nline", "it's", "$(touch pwned)", "-rf", "@PATHS@", "@RAW@", "ü ñ"]
#: The script's fallbacks, each taken by changing the one probe that chooses it.
WAYS = {
    "parallel, stat": None,
    "one CPU": ("kvmio_jobs=$(getconf _NPROCESSORS_ONLN 2>/dev/null)", "kvmio_jobs=1"),
    "no GNU stat": ("stat -L --printf '' -- / 2>/dev/null", "false"),
    "no xargs -P": ("printf '' | xargs -0 -P 2 true 2>/dev/null", "false"),
}


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, object]]:
    """Create raw (sparse and full) and qcow2 images with hostile names; return qemu-img's info of each by path."""
    directory = tmp_path_factory.mktemp("images")
    found = {}
    for i, name in enumerate(NAMES):
        fmt = "qcow2" if i % 3 == 2 else "raw"
        path = directory / f"{name}.{fmt}"
        options = ["-o", "preallocation=full"] if i % 3 == 1 else []
        subprocess.run(["qemu-img", "create", "-q", "-f", fmt, *options, "--", str(path), "1M"], check=True)
        info = subprocess.run(["qemu-img", "info", "-U", "--output=json", "--", str(path)], check=True,
                              capture_output=True, text=True)
        found[str(path)] = json.loads(info.stdout)
    return found


@pytest.mark.parametrize("way", list(WAYS))
def test_every_way_reads_each_image_as_qemu_img_does(images: dict[str, dict[str, object]], tmp_path: Path,
                                                     way: str) -> None:
    raw = {p for p, info in images.items() if info["format"] == "raw"}
    missing, directory = str(tmp_path / "gone.raw"), str(tmp_path)
    script = host_script([*images, missing, directory], raw=raw | {missing, directory})
    change = WAYS[way]
    if change is not None:
        assert change[0] in script
        script = script.replace(change[0], change[1])
    done = subprocess.run(["timeout", str(COMMAND_TIMEOUT), "sh", "-c", script], capture_output=True, text=True,
                          cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert not (tmp_path / "pwned").exists()
    facts = HostFacts(name="local")
    parse_host_output(facts, done.stdout)
    assert set(facts.images) == {*images, missing, directory}
    for path, info in images.items():
        image = facts.images[path]
        assert (image.format, image.virtual_size, image.actual_size, image.error) == (
            info["format"], info["virtual-size"], info["actual-size"], None), path
    assert facts.images[missing].error == "no such file on the host"
    assert "regular file" in (facts.images[directory].error or ""), "not a file: qemu-img says why"


def test_sparse_and_full_raw_files_stay_apart(images: dict[str, dict[str, object]]) -> None:
    """The allocation stat reads is what tells a sparse raw file from a preallocated one."""
    raw = {p for p, info in images.items() if info["format"] == "raw"}
    done = subprocess.run(["sh", "-c", host_script(sorted(raw), raw=raw)], capture_output=True, text=True, check=True)
    facts = HostFacts(name="local")
    parse_host_output(facts, done.stdout)
    sparse = {Path(p).stem for p in raw if facts.images[p].sparse}
    full = {Path(p).stem for p in raw if facts.images[p].sparse is False}
    assert sparse == {NAMES[i] for i in range(len(NAMES)) if i % 3 == 0}
    assert full == {NAMES[i] for i in range(len(NAMES)) if i % 3 == 1}
