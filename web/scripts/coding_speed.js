#!/usr/bin/env node
// Decode time of the same image in two codings, side by side in one process (Node,
// onnxruntime-web WASM, 1 thread), for the README's coding-3 line:
//   node scripts/coding_speed.js [--runs N] A.igpt B.igpt ...
// (files from `python web/scripts/make_coding3_data.py --speed DIR`). One warm-up decode
// of each, then N rounds decoding each file in turn; prints each file's best and median
// CPU and wall seconds, and each file's median CPU over the first file's.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { decode } from '../src/index.js';
import { bundleResolver } from '../src/node.js';

const WEB = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const ROOT = path.resolve(WEB, '..');
const args = process.argv.slice(2);
let runs = 3;
if (args[0] === '--runs') {
  runs = Number(args[1]);
  args.splice(0, 2);
}
const model = bundleResolver([path.join(ROOT, 'codec', 'models', 'default'), path.join(ROOT, 'codec', 'models'), path.join(ROOT, 'tests', 'golden', 'model')]);
const files = args.map((file) => ({ file, bytes: new Uint8Array(readFileSync(file)), cpu: [], wall: [] }));
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
for (const f of files) {
  const { info } = await decode(f.bytes, { model });
  f.info = info.records[0];
}
for (let round = 0; round < runs; round++) {
  for (const f of files) {
    const cpu0 = process.cpuUsage();
    const t0 = performance.now();
    await decode(f.bytes, { model });
    const cpu = process.cpuUsage(cpu0);
    f.cpu.push((cpu.user + cpu.system) / 1e6);
    f.wall.push((performance.now() - t0) / 1000);
  }
}
const base = median(files[0].cpu);
console.log(JSON.stringify({
  node: process.version, runs,
  files: files.map((f) => ({
    file: path.basename(f.file), coding: f.info.coding, tokens: f.info.tokens, bytes: f.bytes.length,
    cpu_best: Math.min(...f.cpu), cpu_median: median(f.cpu), wall_best: Math.min(...f.wall), wall_median: median(f.wall),
    cpu_median_over_first: median(f.cpu) / base,
  })),
}, null, 1));
