#!/usr/bin/env bash
# All the speed figures in one go (Python native, Node, Chromium warm and cold), appended to
# docs/bench-results/web_speed.json (its "runs"). Python runs the installed codec (the
# checkout's editable install):
#   PYTHON=.venv/bin/python web/scripts/speed.sh
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
"${PYTHON:-python3}" scripts/make_bench_data.py "$tmp" > "$tmp/python.json"
cmp "$tmp/bench_16.igpt" test/data/bench_16.igpt  # the same streams as the committed ones
node scripts/bench.js > "$tmp/node.json"
node scripts/browser-check.js --files test/data/bench_1.igpt,test/data/bench_16.igpt --repeat 4 --json "$tmp/browser.json"
node scripts/browser-check.js --cold --files test/data/bench_1.igpt --json "$tmp/cold.json"
node scripts/speed.js "$tmp/python.json" "$tmp/node.json" "$tmp/browser.json" "$tmp/cold.json" > "$tmp/run.json"
# Each run is appended: on this shared machine one run alone says little.
node -e '
const fs = require("fs");
const [file, run] = process.argv.slice(1);
const old = fs.existsSync(file) ? JSON.parse(fs.readFileSync(file, "utf8")) : { runs: [] };
old.runs.push(JSON.parse(fs.readFileSync(run, "utf8")));
fs.writeFileSync(file, JSON.stringify(old, null, 1) + "\n");
' ../docs/bench-results/web_speed.json "$tmp/run.json"
cat "$tmp/run.json"
