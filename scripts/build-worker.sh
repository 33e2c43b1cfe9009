#!/usr/bin/env bash
# Builds one worker crate to crates/<crate>/build/ with worker-build (release, wasm-opt'd).
# Used as the [build] command of both wrangler configs; works offline once the tools are
# cached, and installs them from crates.io and npm on first use.
set -euo pipefail
crate="${1:?usage: build-worker.sh upload-worker|tagger-worker}"
source "$(dirname "${BASH_SOURCE[0]}")/tools.sh"
cd "$ROOT/crates/$crate"
"$WORKER_BUILD_BIN" --release
