#!/usr/bin/env bash
# Runs the whole pipeline locally: installs what is missing, builds both workers, and serves
# them with local R2, KV, Queues and AI. No Cloudflare account needed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
npm run --silent build
# Quiet wrangler's warning that AI is remote: the local run supplies AI itself.
export WRANGLER_LOG="${WRANGLER_LOG:-error}" WRANGLER_SEND_METRICS=false
exec node scripts/dev.mjs "$@"
