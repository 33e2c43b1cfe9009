#!/usr/bin/env bash
# Deploys the pipeline to your Cloudflare account in one command: checks the login, creates
# every resource that is missing, applies the D1 migrations, generates and sets missing
# secrets, deploys the tagger and then the upload worker, and smoke-tests the result.
# A second run changes nothing. See scripts/deploy.mjs and the README ("Deploying").
#   scripts/deploy.sh --env staging|production [--no-build] [--no-smoke] [--url URL] [--photo FILE]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
exec node scripts/deploy.mjs "$@"
