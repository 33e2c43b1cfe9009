#!/usr/bin/env bash
# Runs every test from a fresh clone: installs what is missing, builds both workers, runs
# the native Rust tests, then the Miniflare integration tests.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export WRANGLER_SEND_METRICS=false
[ -d node_modules/wrangler ] || npm ci --no-audit --no-fund
echo "== cargo test (shared crate, natively)"
cargo test -p shared
echo "== build both workers"
npm run --silent build
echo "== Miniflare integration tests"
node --test --test-concurrency=1 tests/
