#!/bin/sh
# Runs a command with a private daemon: the test daemon (mockd) or the real kvmchand.
# usage: with-daemon.sh <mock|real> <test-bin-dir> <node> <daemon.js> command [args...]
# The command sees KVMCHAN_RUNTIME_DIR pointing at the daemon's runtime directory.
set -eu
kind=$1 bindir=$2 node=$3 js=$4
shift 4
dir=$(mktemp -d "${TMPDIR:-/tmp}/kvmchan-clib.XXXXXX")
log=$dir/daemon.log
case $kind in
  mock) "$bindir/mockd" "$dir/run" >"$log" 2>&1 & ;;
  real) "$node" "$js" --runtime-dir "$dir/run" >"$log" 2>&1 & ;;
  *) echo "with-daemon.sh: unknown daemon kind $kind" >&2; exit 2 ;;
esac
pid=$!
cleanup() {
  kill -TERM "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT INT TERM
export KVMCHAN_RUNTIME_DIR="$dir/run"
i=0
until "$bindir/vchan_peer" probe 2>/dev/null; do
  i=$((i + 1))
  if [ "$i" -gt 300 ] || ! kill -0 "$pid" 2>/dev/null; then
    echo "with-daemon.sh: the $kind daemon did not start; its log:" >&2
    cat "$log" >&2
    exit 1
  fi
  sleep 0.05
done
set +e
"$@"
rc=$?
set -e
if [ "$rc" -ne 0 ]; then
  echo "with-daemon.sh: '$*' failed ($rc) against the $kind daemon; daemon log tail:" >&2
  tail -n 40 "$log" >&2
fi
exit "$rc"
