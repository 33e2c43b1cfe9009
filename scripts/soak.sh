#!/usr/bin/env bash
# Soak run: the Miniflare test files, N times in a row, while a CPU hog keeps every core busy,
# then a list of every test that failed in any run. A test that waits for what it reads
# passes on a loaded machine; one that races the log, or measures time, shows up here.
#
# Usage: scripts/soak.sh [--runs N] [--hogs H] [--record FILE] [FILE...]
#   --runs N       how many times to run the files (default 3)
#   --hogs H       busy loops to run meanwhile (default: one per core, `nproc`); 0 for none
#   --record FILE  add the runs (start, commit, duration, load, failures) to FILE, a JSON
#                  record (bench/soak-results.json is the committed one; see
#                  scripts/soak-record.mjs)
#   FILE...        test files (default: tests/*.test.mjs)
# Environment: SOAK_DIR keeps the logs (default: a fresh folder under the temp dir);
# HOG_MAX_SECONDS bounds each busy loop's life even if this script is killed outright
# (default 21600, six hours).
#
# The workers must be built first (`npm run build`, or scripts/test.sh once). Each file runs
# in its own `node --test` process, so a failure is named with its file. The hog is stopped
# on exit, on Ctrl-C and on TERM. Exit status: 0 if every run passed, 1 otherwise.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export WRANGLER_SEND_METRICS=false
export WRANGLER_LOG="${WRANGLER_LOG:-error}"

runs=3
hogs="$(nproc)"
record=""
files=()
while [ $# -gt 0 ]; do
  case "$1" in
    --runs) runs="$2"; shift 2 ;;
    --runs=*) runs="${1#*=}"; shift ;;
    --hogs) hogs="$2"; shift 2 ;;
    --hogs=*) hogs="${1#*=}"; shift ;;
    --record) record="$2"; shift 2 ;;
    --record=*) record="${1#*=}"; shift ;;
    -h | --help) sed -n '2,20p' "$0"; exit 0 ;;
    -*) echo "soak.sh: unknown option $1" >&2; exit 2 ;;
    *) files+=("$1"); shift ;;
  esac
done
files_given="${files[*]:-}"
[ ${#files[@]} -gt 0 ] || files=(tests/*.test.mjs)
case "$runs$hogs" in *[!0-9]*) echo "soak.sh: --runs and --hogs take whole numbers" >&2; exit 2 ;; esac
for f in "${files[@]}"; do [ -f "$f" ] || { echo "soak.sh: no such test file: $f" >&2; exit 2; }; done
for w in upload-worker tagger-worker; do
  [ -f "crates/$w/build/index.js" ] || { echo "soak.sh: crates/$w is not built: run npm run build first" >&2; exit 2; }
done

dir="${SOAK_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/soak.XXXXXX")}"
mkdir -p "$dir"
hog_pids=()
stop_hog() {
  for pid in "${hog_pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${hog_pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  hog_pids=()
}
trap stop_hog EXIT
trap 'stop_hog; exit 130' INT
trap 'stop_hog; exit 143' TERM HUP

for _ in $(seq 1 "$hogs"); do
  # A busy loop, bounded in time in case this script dies without running its trap.
  timeout "${HOG_MAX_SECONDS:-21600}" sh -c 'while :; do :; done' &
  hog_pids+=("$!")
done
echo "soak: ${#files[@]} file(s), $runs run(s), $hogs busy loop(s) on $(nproc) core(s); logs in $dir"

failures="$dir/failures.txt"
: >"$failures"
: >"$dir/runs.txt"
commit="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
if [ -n "$(git status --porcelain -- crates local tests scripts 2>/dev/null)" ]; then commit="$commit+uncommitted"; fi
started=$SECONDS
for run in $(seq 1 "$runs"); do
  run_start=$SECONDS
  run_date="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  load="$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo '?')"
  failed_files=0
  for f in "${files[@]}"; do
    log="$dir/run$run-$(basename "$f" .test.mjs).tap"
    if scripts/node-test.sh --test-concurrency=1 --test-reporter=tap "$f" >"$log" 2>&1; then
      :
    else
      failed_files=$((failed_files + 1))
      # Every failing test, by name (nested subtests too); a file that failed without a
      # failing test (a crash while loading) is listed by itself.
      names="$(sed -n 's/^ *not ok [0-9]* - //p' "$log" | sed 's/ # .*$//')"
      if [ -z "$names" ]; then names="(the file itself: see $log)"; fi
      while IFS= read -r name; do printf '%s\t%s\t%s\n' "$run" "$f" "$name" >>"$failures"; done <<<"$names"
    fi
  done
  printf 'soak: run %s/%s took %s s (load average at its start: %s): %s of %s file(s) failed\n' \
    "$run" "$runs" "$((SECONDS - run_start))" "$load" "$failed_files" "${#files[@]}"
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$run" "$run_date" "$commit" "$hogs" "$((SECONDS - run_start))" \
    "$load" "$failed_files" "${#files[@]}" >>"$dir/runs.txt"
done
stop_hog
if [ -n "$record" ]; then
  SOAK_COMMAND="scripts/soak.sh --runs $runs --hogs $hogs${files_given:+ (some files)}" node scripts/soak-record.mjs "$dir" "$record"
fi

echo
if [ ! -s "$failures" ]; then
  echo "soak: no test failed in $runs run(s) ($((SECONDS - started)) s)."
  exit 0
fi
echo "soak: tests that failed (how many of the $runs runs, file, test):"
cut -f2,3 "$failures" | sort | uniq -c | sort -rn | sed 's/^ */  /'
echo "soak: the logs of each run are in $dir"
exit 1
