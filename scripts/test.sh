#!/usr/bin/env bash
# Runs every test from a fresh clone: installs what is missing, builds both workers, runs
# the native Rust tests, then the Miniflare integration tests.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export WRANGLER_SEND_METRICS=false
# Quiet wrangler's warning that AI is remote: the tests supply AI themselves.
export WRANGLER_LOG="${WRANGLER_LOG:-error}"
# npm packages, the wasm target, worker-build and wasm-bindgen-cli (cached after the first run).
source scripts/tools.sh
cargo fmt --version >/dev/null 2>&1 || rustup component add rustfmt
cargo clippy --version >/dev/null 2>&1 || rustup component add clippy
# The browser test drives Debian's Chromium (Playwright's own browser download fails offline).
if [ ! -x "${CHROMIUM_PATH:-/usr/bin/chromium}" ]; then
  echo "== installing chromium (Debian package)"
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
fi
echo "== cargo fmt --check, cargo clippy -D warnings"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --features shared/imaging --quiet -- -D warnings
cargo clippy --target wasm32-unknown-unknown -p upload-worker -p tagger-worker --quiet -- -D warnings
cargo clippy --target wasm32-unknown-unknown -p shared --features imaging --quiet -- -D warnings
echo "== cargo test (pure logic, and the offline classifier on real photos)"
scripts/fetch-model.sh >/dev/null
cargo test -p shared -p local-ai --features shared/imaging
echo "== build both workers, and the classifier binary for the local-AI test"
npm run --silent build
cargo build --quiet -p local-ai
echo "== Miniflare integration tests"
node --test --test-concurrency=1 tests/
