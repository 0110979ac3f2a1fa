#!/usr/bin/env node
// Decode speed in Node (onnxruntime-web, WASM, 1 thread): test/data/bench_1.igpt (one
// 32x32 thumbnail, batch 1) and bench_16.igpt (16 of them, one batch of 16), shipped
// default model; one warm-up, then 3 timed runs each. Prints JSON.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { decode } from '../src/index.js';
import { bundleFromDir } from '../src/node.js';

const WEB = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const started = performance.now();
const model = await bundleFromDir(path.resolve(WEB, '../codec/models/default'));
const result = { node: process.version, threads: 1, fingerprint: model.fingerprintHex };
for (const [name, file] of [['batch_1', 'bench_1.igpt'], ['batch_16', 'bench_16.igpt']]) {
  const bytes = readFileSync(path.join(WEB, 'test', 'data', file));
  const first = performance.now();
  const { info } = await decode(bytes, { model }); // warm-up (the first one also creates the session)
  const firstSeconds = (performance.now() - first) / 1000;
  const runs = [];
  for (let i = 0; i < 3; i++) {
    const t0 = performance.now();
    await decode(bytes, { model });
    runs.push((performance.now() - t0) / 1000);
  }
  result[name] = { tokens: info.tokens, first_seconds: firstSeconds, seconds: runs, tokens_per_s: info.tokens / Math.min(...runs) };
}
result.total_seconds = (performance.now() - started) / 1000;
console.log(JSON.stringify(result, null, 1));
