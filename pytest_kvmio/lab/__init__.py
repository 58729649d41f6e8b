"""The kvmio lab: this machine as a small libvirt + QEMU hypervisor with seeded misconfigurations."""
