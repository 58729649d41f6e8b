"""Keep one hypervisor's items on one pytest-xdist worker, grouped by the machine's identity.

fio runs must not overlap on one machine (they would measure each other), and two `--host` specs
can reach the same machine (`local` and `ssh://root@127.0.0.1:2222`). So items are grouped by
libvirt's host UUID, not by the spec, and pytest-xdist's `loadgroup` scheduler sends a group to one
worker, where its items run one after another. Other hosts' groups run on other workers meanwhile.
"""

from __future__ import annotations

from typing import Any

import pytest

from pytest_kvmio.facts.targets import item_target

#: Prefix of the xdist group names kvmio gives (pytest-xdist appends `@GROUP` to the node ids).
GROUP_PREFIX = "kvmio-host-"


def group_of(item: pytest.Item) -> str | None:
    """Return the xdist group of an item of a live host: its host UUID, else its host name."""
    target = item_target(item)
    if target is None or target.host.offline:
        return None
    identity = target.host.facts.host_uuid or target.host.name
    return GROUP_PREFIX + identity


#: The key of pytest-xdist's workerinput that tells a worker the controller schedules by group.
WORKER_FLAG = "kvmio_loadgroup"


def pytest_configure(config: pytest.Config) -> None:
    """Under `-n`, schedule by group: pytest-xdist's implied `load` becomes `loadgroup`.

    An explicit other mode (`--dist loadscope`, `each`, …) is the user's choice and stays. A worker
    rebuilds its options from the command line (where `load` was only implied), so it learns the
    mode from its workerinput, and then pytest-xdist's own hook appends the groups to the node ids.
    """
    workerinput = getattr(config, "workerinput", None)
    if workerinput is not None:
        if workerinput.get(WORKER_FLAG):
            config.option.loadgroup = True
    elif config.pluginmanager.hasplugin("xdist") and config.getoption("dist", "no") == "load":
        config.option.dist = "loadgroup"


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """Tell each pytest-xdist worker whether the controller schedules by group."""
    node.workerinput[WORKER_FLAG] = node.config.getoption("dist") == "loadgroup"


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every item of a live host with its machine's xdist group (on workers under loadgroup)."""
    if not getattr(config.option, "loadgroup", False):  # set by pytest-xdist on its workers
        return
    for item in items:
        group = group_of(item)
        if group is not None:
            item.add_marker(pytest.mark.xdist_group(group))
