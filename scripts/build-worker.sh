#!/usr/bin/env bash
# Builds one worker crate to crates/<crate>/build/ with worker-build (release, wasm-opt'd).
# Used as the [build] command of both wrangler configs; works offline once the tools are
# cached, and installs them from crates.io and npm on first use.
#
# worker-build keeps the wasm `name` section (function names; 45 KiB of the tagger's gzip
# size), which only panic stack traces use; it is stripped here. KEEP_WASM_NAMES=1 keeps it
# (for `node bench/wasm-crates.mjs`, which reads it).
set -euo pipefail
crate="${1:?usage: build-worker.sh upload-worker|tagger-worker}"
source "$(dirname "${BASH_SOURCE[0]}")/tools.sh"
cd "$ROOT/crates/$crate"
"$WORKER_BUILD_BIN" --release
if [ "${KEEP_WASM_NAMES:-}" != 1 ]; then
  # The features worker-build enables for wasm-opt, so that the module validates as built.
  features=(mutable-globals sign-ext nontrapping-float-to-int bulk-memory multivalue reference-types exception-handling)
  "$WASM_OPT_BIN" "${features[@]/#/--enable-}" --strip-debug build/index_bg.wasm -o build/index_bg.wasm
fi
