#!/usr/bin/env node
// Tokens/s of the web decoder in Node and in headless Chromium, next to native Python
// onnxruntime, at batch 1 and 16, merged into one JSON (docs/bench-results/web_speed.json).
//   node scripts/speed.js PYTHON_JSON NODE_JSON BROWSER_JSON BROWSER_COLD_JSON > OUT.json
// PYTHON_JSON: scripts/make_bench_data.py output; NODE_JSON: scripts/bench.js output;
// BROWSER_JSON: scripts/browser-check.js --files test/data/bench_1.igpt,test/data/bench_16.igpt --repeat 4 --json
// BROWSER_COLD_JSON: scripts/browser-check.js --cold --files test/data/bench_1.igpt --json (a fresh page, no warm-up)
import { readFileSync } from 'node:fs';

const [python, node, browser, cold] = process.argv.slice(2).map((p) => JSON.parse(readFileSync(p, 'utf8')));
const browserRow = (file) => {
  const r = browser.results.find((x) => x.file.endsWith(file));
  const warm = r.ms.slice(1);
  return {
    tokens: r.tokens,
    first_ms: r.ms[0],
    first_timings_ms: r.timings[0],
    warm_ms: warm,
    tokens_per_s: r.tokens / (Math.min(...warm) / 1000),
  };
};
const out = {
  what: 'decode speed, shipped default model (exact graph), 32x32 thumbnails; batch 1 = one thumbnail, batch 16 = 16 thumbnails in one batch; 1 thread everywhere; best of the warm runs',
  machine: '2-core AMD EPYC (AVX2), shared with other jobs (load 2-5 during the runs)',
  date: new Date().toISOString(),
  python_native: { onnxruntime: python.onnxruntime, batch_1: python.batch_1, batch_16: python.batch_16 },
  node: { version: node.node, onnxruntime_web: '1.31.1 (wasm)', batch_1: node.batch_1, batch_16: node.batch_16 },
  chromium: {
    user_agent: browser.userAgent, onnxruntime_web: '1.31.1 (wasm)', page_warm_up: browser.warmup,
    batch_1: browserRow('bench_1.igpt'), batch_16: browserRow('bench_16.igpt'),
    cold_page_thumbnail: { ms: cold.results[0].ms[0], timings_ms: cold.results[0].timings[0], note: 'fresh page, no warm-up: bundle fetch + session + the first decode' },
  },
};
console.log(JSON.stringify(out, null, 1));
