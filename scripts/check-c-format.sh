#!/bin/sh
# Checks (or with --fix, applies) the C style of .clang-format on the repository's C sources.
# usage: scripts/check-c-format.sh [--fix] [native | clib | DIR...]   (default: native clib)
#
# Without clang-format the check is skipped with a message, except in CI (CI set in the
# environment), where a missing clang-format is a failure. The reference version is the one
# of Debian 12 (clang-format 14); other versions may format a few constructs differently.
# CLANG_FORMAT names another binary (e.g. clang-format-14).
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
cf=${CLANG_FORMAT:-clang-format}

fix=0
if [ "${1:-}" = --fix ]; then
  fix=1
  shift
fi
[ $# -gt 0 ] || set -- native clib
dirs=
for a in "$@"; do
  case $a in
    native) dirs="$dirs native/src" ;;
    clib) dirs="$dirs clib/src clib/include clib/test clib/tools clib/bench" ;;
    *) dirs="$dirs $a" ;;
  esac
done

if ! command -v "$cf" >/dev/null 2>&1; then
  if [ -n "${CI:-}" ]; then
    echo "not ok - C format check: $cf is not installed (required when CI is set; apt-get install clang-format)" >&2
    exit 1
  fi
  echo "# skip - C format check: $cf is not installed (apt-get install clang-format); CI requires it"
  exit 0
fi
[ -f .clang-format ] || { echo "not ok - C format check: no .clang-format in $root" >&2; exit 1; }

# shellcheck disable=SC2086
files=$(find $dirs -maxdepth 1 -type f \( -name '*.c' -o -name '*.h' \) | LC_ALL=C sort)
[ -n "$files" ] || { echo "not ok - C format check: no C files under$dirs" >&2; exit 1; }
version=$("$cf" --version | sed -n 's/.*version \([0-9][0-9]*\).*/\1/p')
n=$(printf '%s\n' "$files" | wc -l)
if [ "$fix" = 1 ]; then
  # shellcheck disable=SC2086
  "$cf" -i --style=file $files
  echo "ok - formatted $n C files (clang-format $version)"
  exit 0
fi
# shellcheck disable=SC2086
if ! "$cf" --dry-run --Werror --style=file $files; then
  echo "not ok - C format check: run scripts/check-c-format.sh --fix (clang-format $version; reference: 14)" >&2
  exit 1
fi
echo "ok - $n C files formatted as .clang-format says (clang-format $version)"
