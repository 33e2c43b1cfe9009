#!/usr/bin/env bash
# Runs every test from a fresh clone: installs what is missing, checks formatting and lints,
# runs the native Rust tests, builds both workers, then runs the Miniflare integration tests.
# `npm test` and CI (.ci/run) run exactly this. The first failing step stops the run.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export WRANGLER_SEND_METRICS=false
# One build per run: incremental caches would only cost disk (over 1 GiB for this workspace).
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
# Quiet wrangler's warning that AI is remote: the tests supply AI themselves.
export WRANGLER_LOG="${WRANGLER_LOG:-error}"

STEPS=8
step_no=0
step_name="start-up"
step_start=$SECONDS
run_start=$SECONDS
if [ -t 1 ]; then bold=$'\033[1m' dim=$'\033[2m' red=$'\033[1;31m' off=$'\033[0m'; else bold="" dim="" red="" off=""; fi
step() { # a header for each step, after the time the previous one took
  if [ "$step_no" -gt 0 ]; then
    printf '%s   (step %s took %s s)%s\n' "$dim" "$step_no" "$((SECONDS - step_start))" "$off"
  fi
  step_no=$((step_no + 1))
  step_name="$*"
  step_start=$SECONDS
  printf '\n%s== [%s/%s] %s%s\n' "$bold" "$step_no" "$STEPS" "$*" "$off"
}
on_exit() {
  local rc=$?
  if [ "$rc" -ne 0 ]; then
    printf '\n%s!! scripts/test.sh FAILED at step %s/%s: %s (exit code %s, after %s s).%s\n' \
      "$red" "$step_no" "$STEPS" "$step_name" "$rc" "$((SECONDS - run_start))" "$off" >&2
    printf '!! The steps after it did not run; the error is above.\n' >&2
  fi
}
trap on_exit EXIT

# The whole run needs about 4 GiB of disk for target/ (native and wasm builds). Say so up
# front: running out half-way shows up as a confusing linker or rustc error.
free_kib="$(df -Pk . | awk 'NR == 2 { print $4 }')"
if [ -n "$free_kib" ] && [ "$free_kib" -lt $((5 * 1024 * 1024)) ]; then
  printf 'warning: only %s MiB of disk free here; a cold run needs about 5 GiB.\n' "$((free_kib / 1024))" >&2
fi

step "set-up: npm packages, the wasm target, worker-build and wasm-bindgen-cli (compiled once, several minutes; then cached)"
source scripts/tools.sh
cargo fmt --version >/dev/null 2>&1 || rustup component add rustfmt
cargo clippy --version >/dev/null 2>&1 || rustup component add clippy
# The browser test drives Debian's Chromium (Playwright's own browser download fails offline).
CHROMIUM_PATH="${CHROMIUM_PATH:-/usr/bin/chromium}"
if [ ! -x "$CHROMIUM_PATH" ]; then
  if ! command -v apt-get >/dev/null; then
    echo "The browser test needs Chromium, and this script installs it only with apt-get (Debian, Ubuntu)." >&2
    echo "Set CHROMIUM_PATH to a Chromium or Chrome executable and run it again." >&2
    exit 1
  fi
  echo "installing chromium (Debian package, about a minute)"
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
fi
export CHROMIUM_PATH

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy -D warnings (native, all targets)"
cargo clippy --workspace --all-targets -- -D warnings

step "cargo clippy -D warnings (wasm32: both workers, edge, shared and imaging)"
cargo clippy --target wasm32-unknown-unknown -p upload-worker -p tagger-worker -p edge -- -D warnings
cargo clippy --target wasm32-unknown-unknown -p shared -p imaging -- -D warnings

step "cargo test: the pure logic (with the simulation at a small size), and the offline classifier on real photos"
scripts/fetch-model.sh >/dev/null
cargo test -p shared -p imaging -p local-ai

step "build both workers (worker-build --release, as wrangler deploy does)"
npm run --silent build
ls -l crates/upload-worker/build/index_bg.wasm crates/tagger-worker/build/index_bg.wasm

step "build the classifier binary for the local-AI test"
cargo build -p local-ai

step "Miniflare integration tests (node --test tests/*.test.mjs)"
# Files, never a bare directory: scripts/node-test.sh refuses one (nodejs/node#64555).
scripts/node-test.sh --test-concurrency=1 tests/*.test.mjs
