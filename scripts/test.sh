#!/usr/bin/env bash
# Runs every test from a fresh clone: installs what is missing, builds both workers, runs
# the native Rust tests, then the Miniflare integration tests.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export WRANGLER_SEND_METRICS=false
[ -d node_modules/wrangler ] || npm ci --no-audit --no-fund
# The browser test drives Debian's Chromium (Playwright's own browser download fails offline).
if [ ! -x "${CHROMIUM_PATH:-/usr/bin/chromium}" ]; then
  echo "== installing chromium (Debian package)"
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
fi
echo "== cargo test (shared crate, natively)"
cargo test -p shared
echo "== build both workers"
npm run --silent build
echo "== Miniflare integration tests"
node --test --test-concurrency=1 tests/
