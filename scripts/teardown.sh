#!/usr/bin/env bash
# Removes what scripts/deploy.sh created for one environment, after a confirmation.
#   scripts/teardown.sh --env staging|production [--yes]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
exec node scripts/teardown.mjs "$@"
