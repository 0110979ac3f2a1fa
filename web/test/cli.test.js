// The igpt-decode command: PNGs with Python's pixels, a directory for several images,
// and one line on stderr with a non-zero exit for a bad file.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { inflateSync } from 'node:zlib';
import { createHash } from 'node:crypto';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { WEB, GOLDEN, readJson } from '../support/helpers.js';

const BIN = path.join(WEB, 'bin', 'igpt-decode.js');
const pythonPixels = readJson(path.join(WEB, 'test', 'reference', 'python_pixels.json'));
const MODELS = ['--model', path.join(GOLDEN, 'model'), '--model', path.join(GOLDEN, 'models')];

function run(args) {
  return new Promise((resolve) => {
    execFile(process.execPath, [BIN, ...args], (error, stdout, stderr) => resolve({ code: error ? error.code : 0, stdout, stderr }));
  });
}

/** {width, height, sha256 of the RGB bytes} of an 8-bit RGB PNG without interlace. */
function readPng(bytes) {
  const width = bytes.readUInt32BE(16);
  const height = bytes.readUInt32BE(20);
  assert.deepEqual([bytes[24], bytes[25], bytes[28]], [8, 2, 0]);
  const idat = [];
  for (let at = 8; at < bytes.length;) {
    const length = bytes.readUInt32BE(at);
    if (bytes.toString('latin1', at + 4, at + 8) === 'IDAT') idat.push(bytes.subarray(at + 8, at + 8 + length));
    at += 12 + length;
  }
  const raw = inflateSync(Buffer.concat(idat));
  const rgb = Buffer.alloc(width * height * 3);
  for (let y = 0; y < height; y++) {
    assert.equal(raw[y * (1 + 3 * width)], 0); // the writer uses filter 0
    raw.copy(rgb, y * 3 * width, y * (1 + 3 * width) + 1, (y + 1) * (1 + 3 * width));
  }
  return { width, height, sha: createHash('sha256').update(rgb).digest('hex') };
}

test('igpt-decode writes one PNG with Python\'s pixels', async () => {
  const out = path.join(mkdtempSync(path.join(tmpdir(), 'igpt-')), 'one.png');
  const result = await run([path.join(GOLDEN, 'tiny_one_24.igpt'), '-o', out, '-q', ...MODELS]);
  assert.equal(result.code, 0, result.stderr);
  const png = readPng(readFileSync(out));
  const want = pythonPixels['tiny_one_24.igpt'][0];
  assert.deepEqual([png.width, png.height, png.sha], [want.width, want.height, want.rgb_sha256]);
});

test('igpt-decode writes several images into -o DIR/', async () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'igpt-')) + '/out/';
  const result = await run([path.join(GOLDEN, 'tiny_full_chain.igpt'), '-o', dir, '-q', ...MODELS]);
  assert.equal(result.code, 0, result.stderr);
  const names = readdirSync(dir).sort();
  assert.equal(names.length, 4);
  names.forEach((name, i) => assert.equal(readPng(readFileSync(path.join(dir, name))).sha, pythonPixels['tiny_full_chain.igpt'][i].rgb_sha256));
});

test('igpt-decode: a bad file exits 1 with one line', async () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'igpt-'));
  const bad = path.join(dir, 'bad.igpt');
  const bytes = readFileSync(path.join(GOLDEN, 'tiny_many.igpt'));
  bytes[100] ^= 4;
  writeFileSync(bad, bytes);
  for (const args of [[bad], [path.join(dir, 'absent.igpt')], [path.join(GOLDEN, 'tiny_full_chain.igpt'), '-o', path.join(dir, 'x.png')]]) {
    const result = await run([...args, ...MODELS]);
    assert.equal(result.code, 1, `${args}: ${result.stderr}`);
    assert.equal(result.stderr.trim().split('\n').length, 1, result.stderr);
    assert.match(result.stderr, /^igpt-decode: /);
  }
});
