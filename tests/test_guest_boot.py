"""guest-scheduler-persistent's model: what the guest's boot sets a disk's scheduler to (no guest needed)."""

from __future__ import annotations

import pytest

from pytest_kvmio.model.guestboot import (
    GuestBoot,
    kernel_default,
    parse_boot_probe,
    parse_script,
    parse_udev_line,
    scheduler_after_reboot,
    udev_order,
)

AVAILABLE = ("mq-deadline", "kyber", "none")


@pytest.mark.parametrize(("queues", "expected"), [(1, "mq-deadline"), (2, "none"), (8, "none"), (None, None)])
def test_the_kernel_gives_multi_queue_devices_none_and_single_queue_ones_mq_deadline(queues, expected) -> None:
    assert kernel_default(queues, AVAILABLE)[0] == expected
    assert kernel_default(1, ("none",))[0] == "none"  # a kernel without mq-deadline


def test_a_udev_rule_for_virtio_disks_makes_none_persistent_on_a_single_queue_disk() -> None:
    rule = parse_udev_line('ACTION=="add|change", KERNEL=="vd[a-z]*", ATTR{queue/scheduler}="none"', "60.rules:1")
    assert rule is not None and rule.matches("vdb") and not rule.matches("sda")
    after = scheduler_after_reboot("vdb", 1, AVAILABLE, GuestBoot(udev=[rule]))
    assert after.persistent_none is True and "udev rule 60.rules:1" in after.why
    assert scheduler_after_reboot("sda", 1, AVAILABLE, GuestBoot(udev=[rule])).persistent_none is False


@pytest.mark.parametrize("line", [
    '# ACTION=="add", KERNEL=="vd*", ATTR{queue/scheduler}="none"',            # a comment
    'ACTION=="remove", KERNEL=="vd*", ATTR{queue/scheduler}="none"',          # not at add/change
    'SUBSYSTEM=="net", KERNEL=="vd*", ATTR{queue/scheduler}="none"',          # not a block device
    'ACTION=="add|change", KERNEL=="vd*", ATTR{queue/scheduler}=="none", GOTO="end"',  # a match, no assignment
])
def test_rules_that_do_not_set_a_block_devices_scheduler_at_boot_are_ignored(line: str) -> None:
    assert parse_udev_line(line, "x.rules:1") is None


def test_attr_conditions_are_evaluated_where_the_device_attribute_is_known() -> None:
    line = 'ACTION=="add|change", KERNEL=="sd[a-z]*", ATTR{queue/rotational}=="0", ATTR{queue/scheduler}="none"'
    assert parse_udev_line(line, "r:1", {"queue/rotational": "0"}) is not None
    assert parse_udev_line(line, "r:1", {"queue/rotational": "1"}) is None
    unchecked = parse_udev_line('KERNEL=="vd*", ATTRS{vendor}=="0x1af4", ATTR{queue/scheduler}="none"', "r:2")
    assert unchecked is not None and unchecked.unchecked == ('ATTRS{vendor}=="0x1af4"',)


def test_udev_reads_files_by_name_and_etc_hides_the_same_name_below() -> None:
    order = udev_order(["/usr/lib/udev/rules.d/60-a.rules", "/etc/udev/rules.d/60-a.rules",
                        "/lib/udev/rules.d/10-b.rules", "/etc/udev/rules.d/99-z.rules", "/tmp/70-x.rules"])
    assert order == ["/lib/udev/rules.d/10-b.rules", "/etc/udev/rules.d/60-a.rules", "/etc/udev/rules.d/99-z.rules"]


def test_a_later_setting_wins_and_boot_scripts_run_after_udev() -> None:
    none = parse_udev_line('KERNEL=="vd*", ATTR{queue/scheduler}="none"', "/etc/udev/rules.d/60.rules:1")
    bfq = parse_udev_line('KERNEL=="vd*", ATTR{queue/scheduler}="bfq"', "/etc/udev/rules.d/99.rules:1")
    assert none and bfq
    assert scheduler_after_reboot("vda", 4, AVAILABLE, GuestBoot(udev=[none, bfq])).scheduler == "bfq"
    script = parse_script([(3, "echo mq-deadline > /sys/block/vda/queue/scheduler")], "/etc/rc.local")
    assert scheduler_after_reboot("vda", 4, AVAILABLE, GuestBoot(udev=[none], scripts=script)).scheduler == "mq-deadline"


@pytest.mark.parametrize(("lines", "device", "expected"), [
    ([(2, "echo none > /sys/block/vdb/queue/scheduler")], "vdb", "none"),
    ([(2, "echo none | tee /sys/block/vd*/queue/scheduler")], "vdc", "none"),
    ([(2, "for d in /sys/block/vd*; do"), (3, '  echo none > "$d/queue/scheduler"'), (4, "done")], "vde", "none"),
    ([(2, "printf 'none' > /sys/block/sda/queue/scheduler")], "vdb", None),
])
def test_boot_scripts_name_the_devices_they_write(lines, device, expected) -> None:
    settings = [s for s in parse_script(lines, "/etc/local.d/x.start") if s.matches(device)]
    assert (settings[-1].scheduler if settings else None) == expected


def test_elevator_on_the_kernel_command_line_does_not_count() -> None:
    after = scheduler_after_reboot("vdb", 1, AVAILABLE, GuestBoot(cmdline="root=/dev/vda1 elevator=noop"))
    assert after.scheduler == "mq-deadline" and "ignored by blk-mq" in after.why


def test_the_guest_probe_output_parses_into_what_each_device_gets() -> None:
    output = "\n".join([
        "udev-file=/usr/lib/udev/rules.d/60-block.rules",
        "udev-file=/etc/udev/rules.d/61-virtio.rules",
        'udev-line=/etc/udev/rules.d/61-virtio.rules:2:ACTION=="add|change", KERNEL=="vd[a-z]", ATTR{queue/scheduler}="none"',
        "boot-line=/etc/local.d/kvmio-scheduler.start:3:echo none > /sys/block/sda/queue/scheduler",
        "blockdev=vda 1 [mq-deadline] kyber none",
        "blockdev=sda 1 mq-deadline kyber [none]",
        "blockdev=sdb 0 [mq-deadline] kyber none",
        "cmdline=console=ttyS0 quiet",
    ])
    probe = parse_boot_probe(output)
    assert probe.available["vda"] == AVAILABLE
    assert probe.after_reboot("vda", 1).persistent_none is True       # the udev rule
    assert probe.after_reboot("sda", 1).persistent_none is True       # the boot script
    assert probe.after_reboot("sdb", 1).persistent_none is False      # nothing: the kernel's mq-deadline
    assert probe.after_reboot("sdb", 2).persistent_none is True       # the kernel's none for two queues
