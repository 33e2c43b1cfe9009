#!/usr/bin/env bash
# Runs the whole pipeline locally: installs what is missing, builds both workers and the
# offline classifier, fetches its model, and serves everything with local R2, KV, Queues and
# AI. No Cloudflare account needed. Ctrl-C stops it all.
#   ./scripts/dev.sh [--port 8787] [--callback URL|local]
# --callback URL sends every upload's webhook to URL and prints each delivery's outcome;
# --callback local starts a receiver that verifies and prints each event (scripts/dev.mjs).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
echo "== both workers (the first run also installs the build tools: several minutes, once)"
npm run --silent build
# Quiet wrangler's warning that AI is remote: the local run supplies AI itself.
export WRANGLER_LOG="${WRANGLER_LOG:-error}" WRANGLER_SEND_METRICS=false
echo "== the offline classifier (EfficientNet-Lite0 standing in for resnet-50)"
if model_dir="$(scripts/fetch-model.sh)" && cargo build --release -p local-ai; then
  exec node scripts/dev.mjs --local-ai target/release/local-ai --model-dir "$model_dir" "$@"
fi
echo "!! the classifier could not be set up (see above): AI falls back to a fixed-label stand-in" >&2
exec node scripts/dev.mjs "$@"
