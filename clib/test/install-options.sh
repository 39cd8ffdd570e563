#!/bin/sh
# `make install` options (docs/clib.md, "Build and install"): the `vchan` pkg-config alias,
# MULTIARCH / LIBDIR, and ldconfig after a real install (as root without DESTDIR) but never
# into a DESTDIR. LDCONFIG is pointed at a recorder so the system's cache is left alone.
# usage: install-options.sh <build-dir>
set -eu
build=$1
tmp=$(mktemp -d "${TMPDIR:-/tmp}/kvmchan-install.XXXXXX")
trap 'rm -rf "$tmp"' EXIT INT TERM
rec=$tmp/ldconfig-recorder
printf '#!/bin/sh\necho ran >> "%s/ldconfig-ran"\n' "$tmp" > "$rec"
chmod +x "$rec"
fail() { echo "not ok - $*" >&2; exit 1; }

# A staged multiarch install: libraries and .pc files under lib/<triplet>, no ldconfig.
make -s --no-print-directory install BUILD="$build" DESTDIR="$tmp/stage" PREFIX=/usr MULTIARCH=x86_64-linux-gnu \
  LDCONFIG="$rec" >/dev/null
lib=$tmp/stage/usr/lib/x86_64-linux-gnu
[ -e "$lib/libvchan-kvm.so.1" ] && [ -e "$lib/libkvmchan.so.1" ] || fail "MULTIARCH: libraries not in $lib"
[ -L "$lib/pkgconfig/vchan.pc" ] && [ "$(readlink "$lib/pkgconfig/vchan.pc")" = vchan-kvm.pc ] ||
  fail "vchan.pc is not an alias of vchan-kvm.pc"
[ ! -e "$tmp/ldconfig-ran" ] || fail "ldconfig ran for a DESTDIR install"
(
  export PKG_CONFIG_SYSROOT_DIR="$tmp/stage" PKG_CONFIG_LIBDIR="$lib/pkgconfig"
  [ "$(pkg-config --variable=libdir vchan)" = "$tmp/stage/usr/lib/x86_64-linux-gnu" ] || fail "libdir in vchan.pc"
  [ "$(pkg-config --variable=backend_vmm vchan)" = kvm ] || fail "backend_vmm of vchan"
  [ "$(pkg-config --cflags --libs vchan)" = "$(pkg-config --cflags --libs vchan-kvm)" ] || fail "vchan != vchan-kvm"
)
make -s --no-print-directory uninstall DESTDIR="$tmp/stage" PREFIX=/usr MULTIARCH=x86_64-linux-gnu >/dev/null
[ ! -e "$lib/pkgconfig/vchan.pc" ] && [ ! -e "$lib/libvchan-kvm.so.1" ] || fail "uninstall left files"

# A real install (no DESTDIR) as root runs ldconfig.
if [ "$(id -u)" = 0 ]; then
  make -s --no-print-directory install BUILD="$build" PREFIX="$tmp/prefix" LDCONFIG="$rec" >/dev/null
  [ -e "$tmp/ldconfig-ran" ] || fail "ldconfig did not run after a root install"
  echo "ok - install options: vchan.pc alias, MULTIARCH libdir, ldconfig only for a real root install"
else
  echo "ok - install options: vchan.pc alias, MULTIARCH libdir, no ldconfig into a DESTDIR # SKIP root install: not root"
fi
