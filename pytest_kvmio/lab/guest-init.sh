#!/bin/busybox sh
# /init of the kvmio lab guest: no udev, no disk root; ends in the QEMU guest agent.
# Kernel cmdline knobs (seeded guest misconfigurations):
#   kvmio.disks=N                  wait (bounded) until N disks are visible
#   kvmio.sched=SERIAL:SCHEDULER   set that disk's scheduler at boot (/etc/local.d; default: the kernel's)
/bin/busybox --install -s /bin
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mkdir -p /proc /sys /dev /tmp /run /var /dev/virtio-ports
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm /dev/virtio-ports
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
ln -sfn /run /var/run
log() { echo "kvmio-init: $*" > /dev/console; }

while read -r mod args; do
    [ -n "$mod" ] || continue
    insmod "$mod" $args || log "insmod $mod failed"
done < /etc/kvmio/modules

want_disks=0
for arg in $(cat /proc/cmdline); do
    case "$arg" in kvmio.disks=*) want_disks="${arg#kvmio.disks=}" ;; esac
done
disks() { ls -d /sys/block/vd* /sys/block/sd* 2>/dev/null; }
i=0
while [ "$(disks | wc -l)" -lt "$want_disks" ] && [ "$i" -lt 100 ]; do sleep 0.2; i=$((i + 1)); done
[ "$(disks | wc -l)" -ge "$want_disks" ] || log "only $(disks | wc -l) of $want_disks disks appeared"

serial_of() {  # virtio-blk: /sys/block/X/serial; scsi: VPD page 0x80 after a 4-byte header
    if [ -r "$1/serial" ]; then cat "$1/serial"
    elif [ -r "$1/device/vpd_pg80" ]; then tail -c +5 "$1/device/vpd_pg80" | tr -d '\000 '
    fi
}
# Schedulers: the kernel's own default (none for a multi-queue disk, mq-deadline for a single queue) unless the
# domain's kernel command line asks for another, which is written as a boot script the way OpenRC's `local` service
# runs them (/etc/local.d/*.start), so the guest carries what sets it at boot, as a real distribution does.
mkdir -p /etc/local.d
{
    echo '#!/bin/sh'
    echo '# written by the kvmio lab guest init from kvmio.sched= on the kernel command line'
    for arg in $(cat /proc/cmdline); do
        case "$arg" in
        kvmio.sched=*)
            spec="${arg#kvmio.sched=}"; serial="${spec%%:*}"; sched="${spec#*:}"
            for dev in $(disks); do
                [ "$(serial_of "$dev")" = "$serial" ] && echo "echo $sched > /sys/block/${dev##*/}/queue/scheduler"
            done ;;
        esac
    done
} > /etc/local.d/kvmio-scheduler.start
chmod 755 /etc/local.d/kvmio-scheduler.start
for script in /etc/local.d/*.start; do
    [ -x "$script" ] && { "$script" || log "$script failed"; }
done

i=0
while [ ! -d /sys/class/virtio-ports ] && [ "$i" -lt 50 ]; do sleep 0.2; i=$((i + 1)); done
for port in /sys/class/virtio-ports/*; do
    [ -r "$port/name" ] || continue
    ln -sfn "/dev/${port##*/}" "/dev/virtio-ports/$(cat "$port/name")"
done
# SSH for guests given a NIC (QEMU user-mode network, restrict=on, host port forward to :22):
# static SLIRP addressing, then dropbear with public-key logins only. `kvmio lab up` pushes the
# lab's client key to /root/.ssh/authorized_keys over the agent and pins the host key made here.
ip link set lo up
if [ -e /sys/class/net/eth0 ]; then
    ip link set eth0 up
    ip addr add 10.0.2.15/24 dev eth0
    ip route add default via 10.0.2.2
    mkdir -p /etc/dropbear /root/.ssh
    chmod 700 /root /root/.ssh
    hostkey=/etc/dropbear/dropbear_ed25519_host_key
    [ -s "$hostkey" ] || dropbearkey -t ed25519 -f "$hostkey" > /dev/null 2>&1 || log "dropbearkey failed"
    dropbearkey -y -f "$hostkey" 2>/dev/null | grep '^ssh-ed25519 ' > /etc/dropbear/host_key.pub
    # -s -g: no password logins (root neither); -j -k: no port forwarding; respawned like the agent
    ( while true; do
        dropbear -F -E -s -g -j -k -p 22 -r "$hostkey" -P /run/dropbear.pid >> /run/dropbear.log 2>&1
        sleep 1
      done ) &
    log "sshd: dropbear on eth0 $(ip -4 -o addr show eth0 | awk '{print $4}') port 22"
fi
log "ready: $(disks | wc -l) disks, agent on /dev/virtio-ports/org.qemu.guest_agent.0"
# Respawn the agent rather than exec it: if PID 1 exited, the guest would panic.
while true; do
    /usr/sbin/qemu-ga -m virtio-serial -p /dev/virtio-ports/org.qemu.guest_agent.0 -t /run
    log "qemu-ga exited with $?; restarting"
    sleep 1
done
