#!/bin/sh
# Checks that a shared library exports exactly the API symbols listed in a file
# (defined, dynamic, global): nothing internal leaks, nothing is missing.
# usage: check-symbols.sh <lib.so> <expected-symbols.txt>
set -eu
lib=$1
want=$2
got=$(nm -D --defined-only "$lib" | awk '$2 ~ /^[TDBRVW]$/ { print $3 }' | sed 's/@.*//' | sort -u)
if [ "$got" != "$(sort -u "$want")" ]; then
  echo "not ok - exported symbols of $lib differ from $want:" >&2
  printf '%s\n' "$got" | diff -u "$want" - >&2 || true
  exit 1
fi
echo "ok - $(basename "$lib") exports exactly $(wc -l < "$want") API symbols"
