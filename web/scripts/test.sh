#!/usr/bin/env bash
# The web decoder's CI: JS dependencies from the lockfile, Chromium from apt when missing,
# the node --test suite (golden files, fuzz, reader), then the headless-Chromium check of
# the page (golden pixels against Python's). Prints how long it took.
set -euo pipefail
cd "$(dirname "$0")/.."
started=$(date +%s)
npm ci --no-audit --no-fund --loglevel=error
if ! command -v chromium >/dev/null 2>&1; then
    echo "installing chromium from apt" >&2
    apt-get update -qq && apt-get install -y -qq chromium >/dev/null
fi
node --test
node scripts/browser-check.js
echo "web tests: $(( $(date +%s) - started )) s"
