#!/usr/bin/env bash
# Build (or reuse) the kernel + initramfs of the test guest that `npm run test:vm` boots
# (docs/vms.md "The test guest"). Output in <checkout>/.cache/vm/:
#   vmlinux, initramfs.cpio.gz   what QEMU boots (-kernel/-initrd): the kernel's uncompressed
#                                ELF (PVH entry), or vmlinuz when it has none
#   vmlinuz, config              the package's bzImage and kernel configuration
#   image.env                    KVER=, KERNEL=, INITRD=, FINGERPRINT= (read by test/helpers/vm.ts)
#   fingerprint                  kernel package + version, busybox, hashes of this script and
#                                guest-init.sh; equal fingerprint = nothing to do
#   debs/                        the downloaded kernel .deb (kept so a script change needs no
#                                new download)
# The kernel is Debian's stock one (linux-image-amd64's dependency, resolved once and then
# remembered in debs/kernel-package; KVMCHAN_VM_KERNEL_PKG=<package> or --refresh-kernel picks
# another). Modules come from that package, in modules.dep order. Needs root for apt-get only
# when busybox-static is missing; everything else runs as any user that can write the cache.
#
# Usage: scripts/vm/build-image.sh [--refresh-kernel] [--quiet]
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
cache=${KVMCHAN_VM_CACHE:-$root/.cache/vm}
refresh=0
quiet=0
for a in "$@"; do
  case $a in
    --refresh-kernel) refresh=1 ;;
    --quiet) quiet=1 ;;
    *) echo "usage: $0 [--refresh-kernel] [--quiet]" >&2; exit 2 ;;
  esac
done
log() { [ "$quiet" = 1 ] || echo "build-image: $*" >&2; }
die() { echo "build-image: error: $*" >&2; exit 1; }

# Modules the guest loads (by name; their dependencies come from modules.dep). virtio_net:
# the benchmark's TCP baseline (QEMU user-mode networking, guest-init.sh configures eth0). Whatever of
# these the kernel has built in is simply absent from modules.dep and skipped.
WANTED_MODULES=(virtio_pci 9pnet_virtio 9p vfio vfio_iommu_type1 vfio_pci virtio_net)

mkdir -p "$cache/debs"
export DEBIAN_FRONTEND=noninteractive

apt_install() {
  [ "$(id -u)" = 0 ] || die "missing $*; install it (apt-get install $*) or run as root"
  log "installing $*"
  apt-get install -y -qq --no-install-recommends "$@" >/dev/null 2>&1 ||
    { apt-get update -qq && apt-get install -y -qq --no-install-recommends "$@" >/dev/null; } ||
    die "apt-get install $* failed"
}

# --- busybox (static: the initramfs has no libc) ---------------------------------------------
busybox=/bin/busybox
if ! [ -x "$busybox" ] || ! file -L "$busybox" 2>/dev/null | grep -q 'statically linked'; then
  dpkg -s busybox-static >/dev/null 2>&1 || apt_install busybox-static
fi
[ -x "$busybox" ] || die "no $busybox after installing busybox-static"
command -v dpkg-deb >/dev/null || die "dpkg-deb not found (this script needs a Debian host)"

# --- kernel package ----------------------------------------------------------------------------
pkg_file=$cache/debs/kernel-package
kpkg=${KVMCHAN_VM_KERNEL_PKG:-}
if [ -z "$kpkg" ] && [ "$refresh" = 0 ] && [ -s "$pkg_file" ]; then kpkg=$(cat "$pkg_file"); fi
resolve_kpkg() { apt-cache depends linux-image-amd64 2>/dev/null | awk '$1 == "Depends:" && $2 ~ /^linux-image-/ { print $2; exit }'; }
if [ -z "$kpkg" ]; then
  kpkg=$(resolve_kpkg)
  if [ -z "$kpkg" ]; then
    [ "$(id -u)" = 0 ] && apt-get update -qq >/dev/null 2>&1
    kpkg=$(resolve_kpkg)
  fi
  [ -n "$kpkg" ] || die "cannot resolve linux-image-amd64's kernel package (apt-get update?)"
fi

deb=$(ls -1 "$cache/debs/${kpkg}"_*.deb 2>/dev/null | tail -n1 || true)
if [ -z "$deb" ]; then
  log "downloading $kpkg"
  # apt-get download drops to the _apt user: download in a directory it can write (the
  # checkout may be private to root, mode 0700) and move the file into the cache.
  dl=$(mktemp -d /tmp/kvmchan-vm-dl.XXXXXX)
  chmod 0755 "$dl"
  trap 'rm -rf "$dl"' EXIT
  (cd "$dl" && apt-get download -qq "$kpkg" >/dev/null 2>&1) ||
    { [ "$(id -u)" = 0 ] && apt-get update -qq >/dev/null 2>&1 && (cd "$dl" && apt-get download -qq "$kpkg" >/dev/null); } ||
    die "apt-get download $kpkg failed"
  mv "$dl"/*.deb "$cache/debs/"
  rm -rf "$dl"
  trap - EXIT
  deb=$(ls -1 "$cache/debs/${kpkg}"_*.deb | tail -n1)
fi
echo "$kpkg" >"$pkg_file"
kdebver=$(dpkg-deb -f "$deb" Version)

# --- fingerprint -------------------------------------------------------------------------------
bbver=$("$busybox" 2>&1 | head -n1 | tr -d '\n')
fingerprint=$(
  {
    echo "kernel $kpkg $kdebver"
    echo "busybox $bbver"
    sha256sum "$here/build-image.sh" "$here/guest-init.sh" | awk '{ print $1 }'
  } | sha256sum | awk '{ print $1 }'
)
if [ -s "$cache/fingerprint" ] && [ "$(cat "$cache/fingerprint")" = "$fingerprint" ] &&
  [ -s "$cache/vmlinuz" ] && [ -s "$cache/initramfs.cpio.gz" ] && [ -s "$cache/image.env" ]; then
  log "up to date ($kpkg $kdebver, fingerprint ${fingerprint:0:12})"
  exit 0
fi

log "building the image from $kpkg $kdebver"
work=$(mktemp -d "$cache/build.XXXXXX")
trap 'rm -rf "$work"' EXIT
dpkg-deb -x "$deb" "$work/pkg"
kver=$(ls -1 "$work/pkg/lib/modules" | head -n1)
[ -n "$kver" ] || die "no lib/modules/<version> in $deb"
moddir=$work/pkg/lib/modules/$kver
vmlinuz=$work/pkg/boot/vmlinuz-$kver
[ -f "$vmlinuz" ] || die "no boot/vmlinuz-$kver in $deb"
# The package ships no modules.dep (its postinst runs depmod): generate it, with kmod's depmod
# when installed, else busybox's (same format, direct dependencies only; the walk below is
# transitive either way).
if command -v depmod >/dev/null; then
  depmod -b "$work/pkg" "$kver"
else
  "$busybox" depmod -b "$work/pkg" "$kver"
fi

# modules.dep: "kernel/a/b.ko[.xz]: dep1 dep2 ...". Depth-first: every module after its deps.
order=$(
  awk -v wanted="${WANTED_MODULES[*]}" '
    function name(p,   n) { n = p; sub(/.*\//, "", n); sub(/\.ko(\.[a-z]+)?$/, "", n); gsub(/-/, "_", n); return n }
    function visit(n,   i, k, d) {
      if (n in done) return
      if (!(n in path)) { missing[n] = 1; return }
      done[n] = 1
      k = split(deps[n], d, " ")
      for (i = 1; i <= k; i++) visit(name(d[i]))
      print path[n]
    }
    {
      p = $1; sub(/:$/, "", p); n = name(p)
      path[n] = p; deps[n] = ""
      for (i = 2; i <= NF; i++) deps[n] = deps[n] " " $i
    }
    END {
      k = split(wanted, w, " ")
      for (i = 1; i <= k; i++) visit(w[i])
      for (n in missing) print "# not a module (built in?): " n > "/dev/stderr"
    }' "$moddir/modules.dep"
)

ird=$work/initramfs
mkdir -p "$ird"/{bin,dev,proc,sys,tmp,host,lib/modules}
cp "$busybox" "$ird/bin/busybox"
for applet in $("$busybox" --list); do
  [ "$applet" = busybox ] || ln -s busybox "$ird/bin/$applet"
done
: >"$ird/modules.load"
for rel in $order; do
  src=$moddir/$rel
  base=$(basename "$rel")
  case $base in
    *.ko.xz) xz -dc "$src" >"$ird/lib/modules/${base%.xz}"; base=${base%.xz} ;;
    *.ko.zst) zstd -qdc "$src" >"$ird/lib/modules/${base%.zst}"; base=${base%.zst} ;;
    *.ko.gz) gzip -dc "$src" >"$ird/lib/modules/${base%.gz}"; base=${base%.gz} ;;
    *) cp "$src" "$ird/lib/modules/$base" ;;
  esac
  echo "$base" >>"$ird/modules.load"
done
install -m 0755 "$here/guest-init.sh" "$ird/init"
(cd "$ird" && find . -mindepth 1 | LC_ALL=C sort | "$busybox" cpio -o -H newc -R 0:0 2>/dev/null) |
  gzip -9n >"$work/initramfs.cpio.gz"

# Under TCG the bzImage's self-decompression alone takes seconds (measured in docs/vms.md):
# when the kernel has a PVH entry point (CONFIG_PVH=y, Debian's has), QEMU boots the
# uncompressed ELF directly, so store that and boot it.
kernel=$cache/vmlinuz
if grep -q '^CONFIG_PVH=y' "$work/pkg/boot/config-$kver" 2>/dev/null; then
  for magic in '\xfd7zXZ\x00:xz -dc --single-stream' '\x28\xb5\x2f\xfd:zstd -qdc' '\x1f\x8b\x08:gzip -dc'; do
    off=$(LC_ALL=C grep -obUaP "${magic%%:*}" "$vmlinuz" | head -n1 | cut -d: -f1 || true)
    [ -n "$off" ] || continue
    tail -c +$((off + 1)) "$vmlinuz" | ${magic#*:} >"$work/vmlinux" 2>/dev/null || true
    if [ "$(head -c 4 "$work/vmlinux" 2>/dev/null | od -An -tx1 | tr -d ' ')" = 7f454c46 ]; then
      mv "$work/vmlinux" "$cache/vmlinux"
      kernel=$cache/vmlinux
      break
    fi
  done
  [ "$kernel" = "$cache/vmlinux" ] || log "could not extract an ELF vmlinux; booting the bzImage"
fi
cp "$vmlinuz" "$work/vmlinuz"
[ -f "$work/pkg/boot/config-$kver" ] && cp "$work/pkg/boot/config-$kver" "$cache/config"
mv "$work/vmlinuz" "$cache/vmlinuz"
[ "$kernel" = "$cache/vmlinux" ] || rm -f "$cache/vmlinux"
mv "$work/initramfs.cpio.gz" "$cache/initramfs.cpio.gz"
cp "$ird/modules.load" "$cache/modules.load"
cat >"$cache/image.env" <<EOF
KVER=$kver
KERNEL_PACKAGE=$kpkg
KERNEL_PACKAGE_VERSION=$kdebver
KERNEL=$kernel
BZIMAGE=$cache/vmlinuz
INITRD=$cache/initramfs.cpio.gz
FINGERPRINT=$fingerprint
EOF
echo "$fingerprint" >"$cache/fingerprint"
log "built $kver: $(du -h "$cache/initramfs.cpio.gz" | cut -f1) initramfs, modules: $(tr '\n' ' ' <"$cache/modules.load")"
