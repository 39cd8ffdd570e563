#!/bin/sh
# /init of the kvmchan test guest (docs/vms.md "The test guest"). Runs from the initramfs under
# busybox; build-image.sh copies it in as /init. It:
#   1. mounts proc/sys/dev/tmp and loads the modules listed in /modules.load (dependency order),
#   2. mounts the host's root read-only over virtio-9p (tag hostroot) at /host, with tmpfs over
#      /tmp, /run, /var/tmp and /dev/shm (host directories under those listed in kvmchan.bind=
#      are bound back in) and the host-side per-VM directory (tag kvmchanvm, read-write) at
#      /host/run/kvmchanvm,
#   3. runs commands chrooted into /host: either a one-shot <share>/run.sh (output on the serial
#      console and in <share>/run.stdout / run.status, then power off), or, without run.sh, a
#      command agent that executes <share>/req/<id>.sh files (see test/helpers/vm.ts).
export PATH=/bin
R=/host
S=$R/run/kvmchanvm
say() { echo "kvmchan-init: $*"; }
die() {
  say "FATAL: $*"
  echo "KVMCHAN-GUEST-FAILED"
  poweroff -f
  sleep 5
  exit 1
}

mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs -o mode=1777 tmp /tmp
say "kernel $(uname -r), up $(cut -d' ' -f1 /proc/uptime) s"

while read -r mod args; do
  [ -n "$mod" ] || continue
  # shellcheck disable=SC2086 # module parameters are separate words
  insmod "/lib/modules/$mod" $args || say "insmod $mod failed"
done </modules.load

# Networking, when QEMU gives the guest a NIC (the benchmark's TCP baseline: -netdev user, whose
# fixed guest address is 10.0.2.15/24, gateway 10.0.2.2). Loopback always.
ip link set lo up 2>/dev/null
if [ -e /sys/class/net/eth0 ]; then
  ip link set eth0 up && ip addr add 10.0.2.15/24 dev eth0 && ip route add default via 10.0.2.2 &&
    say "eth0 10.0.2.15/24" || say "cannot configure eth0"
fi

# 9p over virtio: the default msize (8 KiB) makes every node start crawl under TCG.
P9="trans=virtio,version=9p2000.L,msize=262144"
# The host root is mounted once at /hostroot and bound to $R, so that host paths hidden below
# the tmpfs mounts (a checkout under /tmp, say) can be bound back in: kernel argument
# kvmchan.bind=/path[:/path...].
mkdir -p /hostroot $R
mount -t 9p -o "$P9,ro,cache=loose" hostroot /hostroot || die "cannot mount the host root (9p tag hostroot)"
mount -o bind /hostroot $R || die "bind /hostroot"
mount -t tmpfs -o mode=1777 tmp $R/tmp || die "tmpfs on /tmp"
mount -t tmpfs -o mode=0755 run $R/run || die "tmpfs on /run"
[ -d $R/var/tmp ] && mount -t tmpfs -o mode=1777 vartmp $R/var/tmp
mount -t proc proc $R/proc
mount -t sysfs sys $R/sys
mount -t devtmpfs dev $R/dev
mkdir -p $R/dev/shm $R/dev/pts
mount -t tmpfs -o mode=1777 shm $R/dev/shm
mount -t devpts devpts $R/dev/pts
for w in $(cat /proc/cmdline); do
  case $w in
    kvmchan.bind=*)
      IFS=: && set -- ${w#kvmchan.bind=} && unset IFS
      for p in "$@"; do
        [ -d "/hostroot$p" ] || { say "kvmchan.bind: no directory $p on the host"; continue; }
        mkdir -p "$R$p" && mount -o bind "/hostroot$p" "$R$p" || say "kvmchan.bind: cannot bind $p"
      done
      ;;
  esac
done
mkdir -p $S
mount -t 9p -o "$P9" kvmchanvm $S || die "cannot mount the per-VM share (9p tag kvmchanvm)"

# Commands see the host's tree at the same paths, a clean environment, and HOME on tmpfs.
GUEST_ENV="PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/tmp TERM=dumb"
in_root() { chroot $R /usr/bin/env -i $GUEST_ENV "$@"; }

if [ -f $S/run.sh ]; then
  say "running run.sh"
  # Stream to the console and into run.stdout at once; rc is run.sh's own status.
  mkfifo /tmp/run.fifo
  tee $S/run.stdout </tmp/run.fifo &
  in_root /bin/sh /run/kvmchanvm/run.sh </dev/null >/tmp/run.fifo 2>&1
  rc=$?
  wait
  echo "$rc" >$S/run.status
  echo "KVMCHAN-RUN-EXIT $rc"
  sync
  poweroff -f
  sleep 5
  exit 0
fi

mkdir -p $S/req $S/out
cat /proc/uptime >$S/ready.tmp && mv $S/ready.tmp $S/ready
echo "KVMCHAN-GUEST-READY $(cut -d' ' -f1 /proc/uptime)"

run_one() {
  id=$1
  in_root /bin/sh "/run/kvmchanvm/out/$id.sh" </dev/null >"$S/out/$id.stdout" 2>"$S/out/$id.stderr"
  rc=$?
  echo "$rc" >"$S/out/$id.status.tmp"
  mv "$S/out/$id.status.tmp" "$S/out/$id.status"
  say "request $id exited $rc"
}

while :; do
  for f in "$S"/req/*.sh; do
    [ -e "$f" ] || continue
    id=${f##*/}
    id=${id%.sh}
    # Claim the request by moving it out of req/ (the host writes req/<id>.sh with a rename).
    mv "$f" "$S/out/$id.sh" || continue
    run_one "$id" &
  done
  if [ -e $S/poweroff ]; then
    say "poweroff requested"
    sync
    poweroff -f
  fi
  sleep 0.02
done
