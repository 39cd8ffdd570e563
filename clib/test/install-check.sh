#!/bin/sh
# Checks an install into a staging DESTDIR: files in place, pkg-config files usable,
# programs written only against the public headers build with `pkg-config vchan-kvm`
# (and `kvmchan`), then the vchan-node tools move data through host vchans.
# usage: install-check.sh <destdir> <test-bin-dir> <cc> <extra-cflags> <run-prefix> <daemons...>
set -eu
stage=$1 bindir=$2 cc=$3 san=$4 run=$5
shift 5
here=$(cd "$(dirname "$0")/.." && pwd)
out=$bindir/installed
mkdir -p "$out"

for f in usr/lib/libvchan-kvm.so usr/lib/libvchan-kvm.so.1 usr/lib/libkvmchan.so usr/lib/libkvmchan.so.1 \
         usr/include/vchan-kvm/libvchan.h usr/include/vchan-kvm/kvmchan-shmem.h usr/include/libkvmchan.h \
         usr/lib/pkgconfig/vchan-kvm.pc usr/lib/pkgconfig/kvmchan.pc; do
  [ -e "$stage/$f" ] || { echo "not ok - $f missing from the install" >&2; exit 1; }
done

export PKG_CONFIG_SYSROOT_DIR="$stage"
export PKG_CONFIG_LIBDIR="$stage/usr/lib/pkgconfig"
[ "$(pkg-config --variable=backend_vmm vchan-kvm)" = kvm ] || { echo "not ok - backend_vmm" >&2; exit 1; }
vc=$(pkg-config --cflags vchan-kvm) vl=$(pkg-config --libs vchan-kvm)
kc=$(pkg-config --cflags kvmchan) kl=$(pkg-config --libs kvmchan)
flags="-std=gnu11 -O2 -Wall -Wextra -Werror $san"
rpath="-Wl,-rpath,$stage/usr/lib"
# shellcheck disable=SC2086
{
  $cc $flags $vc -o "$out/vchan-node1" "$here/tools/vchan-node1.c" $vl $rpath
  $cc $flags $vc -o "$out/vchan-node2" "$here/tools/vchan-node2.c" $vl $rpath
  $cc $flags $kc -I"$here/test" -o "$out/test_kvmchan" "$here/test/test_kvmchan.c" $kl $rpath
  # The original libkvmchan's shared-memory calls, from the installed <libkvmchan.h> alone.
  $cc $flags $kc -I"$here/test" -o "$out/test_kvmchan_shmem" "$here/test/test_kvmchan_shmem.c" $kl $rpath -pthread
  # <kvmchan-shmem.h> comes with libvchan-kvm, through the same pkg-config.
  $cc $flags $vc -I"$here/test" -o "$out/shmem_tool" "$here/test/shmem_tool.c" $vl $rpath -pthread
  $cc $flags -I"$here/test" -o "$out/node2_check" "$here/test/node2_check.c"
}
# The headers are C++-clean and can be included together.
if command -v c++ >/dev/null 2>&1; then
  printf '#include <libvchan.h>\n#include <kvmchan-shmem.h>\n#include <libkvmchan.h>\nint main() { kvmchan_shmem_close(nullptr); libkvmchan_shmem_end(nullptr); return libvchan_is_open(nullptr) + libkvmchan_get_state(nullptr) + 1; }\n' \
    > "$out/cxx.cc"
  # shellcheck disable=SC2086
  c++ -Wall -Wextra -Werror $san $vc $kc -o "$out/cxx" "$out/cxx.cc" $vl $kl $rpath
  "$out/cxx"
fi
echo "ok - install layout, pkg-config vchan-kvm/kvmchan, tools built against the installed headers"
