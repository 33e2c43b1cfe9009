#!/usr/bin/env bash
# `node --test` on test FILES only; used by scripts/test.sh (and so by `npm test`).
#
# It refuses a directory: Node 20 searches `node --test tests/` for test files, but Node 22
# and 24 read the directory as one file and fail with MODULE_NOT_FOUND (nodejs/node#64555).
# Give files instead, such as `tests/*.test.mjs` expanded by the shell: the same files on
# Node 20, 22 and 24, and the same ones Node 22 and 24 pick by themselves when given no path.
# It also refuses a path that does not exist, such as a glob that matched nothing.
#
# Usage: scripts/node-test.sh [--node-option=value ...] FILE...
# (options in their --name=value form: every other argument must be a test file)
set -euo pipefail

fail() {
  echo "node-test.sh: $*" >&2
  exit 2
}

files=0
for arg in "$@"; do
  case "$arg" in
    -*) ;;
    *)
      if [ -d "$arg" ]; then
        fail "'$arg' is a directory. Node 22 and later read a directory given to 'node --test' as a file (nodejs/node#64555): pass its test files, e.g. ${arg%/}/*.test.mjs"
      fi
      [ -f "$arg" ] || fail "no such test file: '$arg' (a glob that matched nothing, or an option's value? write options as --name=value)"
      files=$((files + 1))
      ;;
  esac
done
[ "$files" -gt 0 ] || fail "no test files given"

exec node --test "$@"
