// Coding 3 (format/SPEC.md "Coding 3"): coding 2's tables refined again by match.js's
// levels, full-resolution records only. A stream Python coded with coding 3
// (scripts/make_coding3_data.py: the tiny golden model, two bands, chains of two windows
// and of one padded window) decodes to Python's tokens; the same bytes read as coding 2,
// or a coding-2 stream read as coding 3, are refused; a coding-3 thumbnail is refused.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import * as igpt from '../src/index.js';
import { WEB, readJson, splitFrames, joinFrames, tinyBundle } from '../support/helpers.js';

const DATA = path.join(WEB, 'test', 'data');
const file = new Uint8Array(readFileSync(path.join(DATA, 'tiny_text_coding3.igpt')));
const want = readJson(path.join(DATA, 'coding3.json'))['tiny_text_coding3.igpt'];
const seed = new Uint8Array(readFileSync(path.join(DATA, 'fuzz_seed.igpt')));

/** The stream with the coding bits of every frame of `kinds` set to `coding` (CRCs recomputed). */
function recoded(bytes, coding, kinds = [3, 4]) {
  const { header, frames } = splitFrames(bytes);
  return joinFrames(header, frames.map((f) => (kinds.includes(f.head & 0x0f) ? { ...f, head: (f.head & ~0x30) | (coding << 4) } : f)));
}

test('a coding-3 stream from Python decodes to its tokens (tiny model, 2 bands, steps of 2 and 1 windows)', async () => {
  const { records } = igpt.readStream(file);
  assert.equal(records[0].coding, 3);
  assert.deepEqual([records[0].width, records[0].height, records[0].segments.length], [want.width, want.height, 2]);
  const { images, info } = await igpt.decode(file, { model: await tinyBundle() });
  assert.equal(info.records[0].fingerprint, want.fingerprint);
  assert.deepEqual(info.records, want.info); // Python's info --json rows: coding 'exact-match'
  assert.deepEqual(Array.from(images[0].tokens), want.tokens);
});

test('the same bytes read as coding 2, or a coding-2 stream read as coding 3, are refused', async () => {
  const model = await tinyBundle();
  const asCoding2 = recoded(file, 2);
  assert.equal(igpt.readStream(asCoding2).records[0].coding, 2);
  await assert.rejects(igpt.decode(asCoding2, { model }), (e) => e instanceof igpt.PayloadError || e instanceof igpt.TokenChecksumError);
  const seedAs3 = recoded(seed, 3);
  assert.deepEqual(igpt.readStream(seedAs3).records.filter((r) => r.type === 'full').map((r) => r.coding), [3, 3]);
  await assert.rejects(igpt.decode(seedAs3, { model }), (e) => e instanceof igpt.PayloadError || e instanceof igpt.TokenChecksumError);
});

test('coding 3 is for full-resolution records: a coding-3 thumbnail is refused as Python refuses it', () => {
  for (const coding of [2, 3]) {
    assert.throws(() => igpt.readStream(recoded(seed, coding, [1])), (e) => e instanceof igpt.InvalidFieldError
      && e.message === `coding ${coding} is for full-resolution images, not thumbnails`);
  }
  // A segment whose coding differs from its image's.
  const { header, frames } = splitFrames(file);
  const mixed = frames.map((f) => ((f.head & 0x0f) === 4 ? { ...f, head: (f.head & ~0x30) | 0x20 } : f));
  assert.throws(() => igpt.readStream(joinFrames(header, mixed)), igpt.InvalidFieldError);
});
