#!/usr/bin/env bash
# Runs the whole pipeline locally: installs what is missing, builds both workers, and serves
# them with local R2, KV, Queues and AI. No Cloudflare account needed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
[ -d node_modules/wrangler ] || npm ci --no-audit --no-fund
npm run --silent build
exec node scripts/dev.mjs "$@"
