#!/bin/sh
# vchan-node1 both ways (server->client and client->server) and a vchan-node2 pair,
# byte-exact, through the daemon named by KVMCHAN_RUNTIME_DIR.
# usage: node-tools.sh <dir-with-tools> [run-prefix...]
set -eu
dir=$1
shift
tmp=$(mktemp -d "${TMPDIR:-/tmp}/kvmchan-node.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
head -c 3000000 /dev/urandom > "$tmp/in"
port=7000
for roles in "server client" "client server"; do
  set -- $roles
  writer=$1 reader=$2
  port=$((port + 1))
  if [ "$writer" = server ]; then
    "$dir/vchan-node1" server write 0 $port < "$tmp/in" 2>"$tmp/w.err" &
    wpid=$!
    sleep 0.05
    "$dir/vchan-node1" client read 0 $port > "$tmp/out" 2>"$tmp/r.err"
  else
    "$dir/vchan-node1" server read 0 $port > "$tmp/out" 2>"$tmp/r.err" &
    rpid=$!
    sleep 0.05
    "$dir/vchan-node1" client write 0 $port < "$tmp/in" 2>"$tmp/w.err"
    wait $rpid
  fi
  [ "$writer" = server ] && wait $wpid
  if ! cmp -s "$tmp/in" "$tmp/out"; then
    echo "not ok - vchan-node1 $writer write -> $reader read: output differs ($(cat "$tmp/w.err") / $(cat "$tmp/r.err"))" >&2
    exit 1
  fi
  echo "ok - vchan-node1 $writer write -> $reader read, 3000000 bytes byte-exact ($(cat "$tmp/w.err" | sed 's/vchan-node1: //'))"
done
"$dir/node2_check" "$dir/vchan-node2" 7100 4000000
