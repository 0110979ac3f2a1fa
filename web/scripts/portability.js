#!/usr/bin/env node
// The Node/WASM portability column: decode, with onnxruntime-web, every stream the native
// Python encoder wrote (scripts/make_portability_data.py) and count the files whose decoded
// tokens equal the encoder's ("no error" is not enough).
//   node scripts/portability.js DIR
import { readFileSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { decode } from '../src/index.js';
import { bundleFromDir } from '../src/node.js';

const WEB = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const dir = process.argv[2];
const expected = JSON.parse(readFileSync(path.join(dir, 'tokens.json'), 'utf8'));
const model = await bundleFromDir(path.resolve(WEB, '../codec/models/default'));
if (model.fingerprintHex !== expected.fingerprint) throw new Error(`streams are for ${expected.fingerprint}, bundle is ${model.fingerprintHex}`);
const names = readdirSync(dir).filter((n) => n.endsWith('.igpt')).sort();
const started = performance.now();
let equal = 0;
const failed = [];
for (const name of names) {
  try {
    const { images } = await decode(readFileSync(path.join(dir, name)), { model });
    const same = images.length === 1 && Array.from(images[0].tokens).join() === expected.files[name].tokens.join();
    if (same) equal++;
    else failed.push(`${name}: other tokens`);
  } catch (err) {
    failed.push(`${name}: ${err.name}: ${err.message}`);
  }
}
const seconds = (performance.now() - started) / 1000;
console.log(JSON.stringify({ node: process.version, onnxruntime_web: '1.31.1', bundle: model.fingerprintHex, files: names.length, equal, failed, seconds }, null, 1));
process.exitCode = equal === names.length ? 0 : 1;
