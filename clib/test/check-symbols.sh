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

# The single version node of the script: "NAME {" ... "global:" names ... "local:" ... "};".
# C comments are dropped first.
script=$(sed -e 's|/\*.*\*/||g' -e '/\/\*/,/\*\//d' "$map")
nodes=$(printf '%s\n' "$script" | sed -n 's/^[[:space:]]*\([A-Za-z_][A-Za-z0-9_.]*\)[[:space:]]*{.*/\1/p')
[ "$(printf '%s\n' "$nodes" | grep -c .)" -eq 1 ] || fail "$map: expected exactly one version node, found: $nodes"
node=$nodes
listed=$(printf '%s\n' "$script" | awk '
  /global:/ { g = 1; next }
  /local:/ { g = 0; next }
  /}/ { g = 0 }
  g { gsub(/[[:space:];]/, ""); if ($0 != "") print }' | sort -u)
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

# Every export carries the node's version as its default version (name@@NODE).
bad=$(printf '%s\n' "$syms" | grep -v "@@$node\$" || true)
[ -z "$bad" ] || fail "$lib exports symbols not under version $node: $(printf '%s ' $bad)"
readelf -W -V "$lib" | grep -q "Name: $node\$" || fail "$lib does not define version $node"

echo "ok - $(basename "$lib") exports exactly $(printf '%s\n' "$expected" | wc -l) API symbols, all @@$node"
