"""The model: libvirt domain XML, cpusets and versions, parsed into plain values."""
