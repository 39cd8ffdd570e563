#!/bin/sh
# Checks that a shared library exports exactly the API symbols listed in a file (defined,
# dynamic, global or weak), each under the version node of its linker version script, and
# that the version script's global list is that same list: nothing internal leaks, nothing
# is missing, nothing is exported unversioned or under another version.
# usage: check-symbols.sh <lib.so> <expected-symbols.txt> <version-script.map>
set -eu
lib=$1
want=$2
map=$3
fail() {
  echo "not ok - $*" >&2
  exit 1
}
command -v readelf >/dev/null 2>&1 || fail "readelf (binutils) is needed to check $lib"

# The version nodes of the script: "NAME {" ... "global:" names ... "};" (a later node may add
# names and inherit an earlier one). C comments are dropped first. Each listed name is paired
# with the node that lists it.
script=$(sed -e 's|/\*.*\*/||g' -e '/\/\*/,/\*\//d' "$map")
nodes=$(printf '%s\n' "$script" | sed -n 's/^[[:space:]]*\([A-Za-z_][A-Za-z0-9_.]*\)[[:space:]]*{.*/\1/p')
[ -n "$nodes" ] || fail "$map: no version node"
pairs=$(printf '%s\n' "$script" | awk '
  /^[[:space:]]*[A-Za-z_][A-Za-z0-9_.]*[[:space:]]*\{/ { node = $1; sub(/\{.*/, "", node); g = 0; next }
  /global:/ { g = 1; next }
  /local:/ { g = 0; next }
  /}/ { g = 0 }
  g { gsub(/[[:space:];]/, ""); if ($0 != "") print $0 " " node }' | sort -u)
listed=$(printf '%s\n' "$pairs" | cut -d' ' -f1 | sort)
[ "$(printf '%s\n' "$listed" | uniq -d)" = "" ] || fail "$map: a name is listed under two nodes"
listed=$(printf '%s\n' "$listed" | sort -u)
printf '%s\n' "$script" | tr '\n' ' ' | grep -q 'local:[[:space:]]*\*[[:space:]]*;' ||
  fail "$map: no 'local: *;' (everything not listed must stay local)"

expected=$(sort -u "$want")
if [ "$listed" != "$expected" ]; then
  echo "not ok - the global list of $map differs from $want:" >&2
  printf '%s\n' "$listed" | diff -u "$want" - >&2 || true
  exit 1
fi

# readelf -W --dyn-syms: Num Value Size Type Bind Vis Ndx Name[@@VERSION]. Defined (Ndx not
# UND), global or weak, not the ABS symbol naming the version node itself.
syms=$(readelf -W --dyn-syms "$lib" | awk '
  $5 ~ /^(GLOBAL|WEAK)$/ && $7 != "UND" && $7 != "ABS" && NF >= 8 { print $8 }' | sort -u)
got=$(printf '%s\n' "$syms" | sed 's/@.*//' | sort -u)
if [ "$got" != "$expected" ]; then
  echo "not ok - exported symbols of $lib differ from $want:" >&2
  printf '%s\n' "$got" | diff -u "$want" - >&2 || true
  exit 1
fi

# Every export carries, as its default version (name@@NODE), the node that lists it.
for sym in $syms; do
  name=${sym%%@*}
  node=$(printf '%s\n' "$pairs" | awk -v n="$name" '$1 == n { print $2 }')
  case $sym in
    *@@"$node") ;;
    *) fail "$lib exports $sym, not under version $node" ;;
  esac
done
for node in $nodes; do
  readelf -W -V "$lib" | grep -q "Name: $node\$" || fail "$lib does not define version $node"
done

echo "ok - $(basename "$lib") exports exactly $(printf '%s\n' "$expected" | wc -l) API symbols, under the versions of $(basename "$map")"
