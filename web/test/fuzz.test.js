// Fuzz: 2,400 mutations of a small stream (tiny golden model, 195 tokens, a PNG record
// among them). Each must end in a clean CodecError or decode to the right tokens; never a
// wrong image, never a stray exception type, never a hang (the run is timed and bounded).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { decode, CodecError } from '../src/index.js';
import { WEB, tinyBundle, readJson, splitFrames, joinFrames, classicalFrames } from '../support/helpers.js';

const seedFile = new Uint8Array(readFileSync(path.join(WEB, 'test', 'data', 'fuzz_seed.igpt')));
const seedFileTokens = readJson(path.join(WEB, 'test', 'data', 'fuzz_seed.json')).tokens;
// The committed seed plus a 5x4 PNG record (kind 5), built at test time.
let seed;
let seedTokens;
let header;
let frames;

async function buildSeed(model) {
  ({ header, frames } = splitFrames(seedFile));
  const tokens = Uint16Array.from({ length: 20 }, (_, i) => (i * 37) % 512);
  const classical = await classicalFrames(tokens, 5, 4, model);
  frames = [...frames, ...classical.frames];
  seed = joinFrames(header, frames);
  seedTokens = [...seedFileTokens, Array.from(tokens)].map((t) => t.join(','));
}

/** Deterministic PRNG (mulberry32), so a failing case can be replayed by its number. */
function rng(seedValue) {
  let a = seedValue >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}


/** Mutations: raw ones (no CRC fix: must match the seed exactly or fail) and forged ones
 * (CRCs recomputed: each decoded image must be one of the seed's, in order). */
function mutate(kind, rand) {
  const int = (n) => Math.floor(rand() * n);
  const bytes = seed.slice();
  switch (kind) {
    case 'flip': {
      const n = 1 + int(3);
      for (let i = 0; i < n; i++) bytes[int(bytes.length)] ^= 1 << int(8);
      return { bytes, forged: false };
    }
    case 'truncate':
      return { bytes: bytes.slice(0, int(bytes.length)), forged: false };
    case 'append':
      return { bytes: Uint8Array.of(...bytes, ...Array.from({ length: 1 + int(4) }, () => int(256))), forged: false };
    case 'field': {
      // A byte of one frame's body or its head, changed behind valid CRCs.
      const copy = frames.map((f) => ({ head: f.head, body: f.body.slice() }));
      const f = copy[int(copy.length)];
      if (rand() < 0.25 || !f.body.length) f.head ^= 1 << int(7);
      else if (rand() < 0.5) f.body[int(f.body.length)] ^= 1 << int(8);
      else f.body[int(Math.min(f.body.length, 8))] = int(256); // header fields live up front
      return { bytes: joinFrames(header, copy), forged: true };
    }
    case 'resize': {
      // A body made shorter or longer (payload bytes dropped or added), CRCs valid.
      const copy = frames.map((f) => ({ head: f.head, body: f.body.slice() }));
      const f = copy[int(copy.length)];
      f.body = rand() < 0.5 ? f.body.slice(0, int(f.body.length + 1)) : Uint8Array.of(...f.body, 1 + int(255));
      return { bytes: joinFrames(header, copy), forged: true };
    }
    case 'records': {
      // Frames dropped, duplicated, swapped, or an unknown kind inserted, CRCs valid.
      const copy = frames.slice();
      const op = int(4);
      const i = int(copy.length);
      if (op === 0 && copy.length > 1) copy.splice(i, 1);
      else if (op === 1) copy.splice(i, 0, copy[i]);
      else if (op === 2) {
        const j = int(copy.length);
        [copy[i], copy[j]] = [copy[j], copy[i]];
      } else copy.splice(int(copy.length + 1), 0, { head: (rand() < 0.5 ? 0x40 : 0) | (7 + int(9)) | (int(4) << 4), body: Uint8Array.from({ length: int(6) }, () => int(256)) });
      return { bytes: joinFrames(header, copy), forged: true };
    }
    case 'header': {
      bytes[int(12)] = int(256);
      return { bytes, forged: false };
    }
    default:
      throw new Error(kind);
  }
}

const PLAN = [['flip', 800], ['truncate', 300], ['append', 100], ['field', 700], ['resize', 200], ['records', 250], ['header', 50]];

test('fuzz: 2,400 mutated streams end in a clean error or the right images', async () => {
  const model = await tinyBundle();
  await buildSeed(model);
  const started = Date.now();
  const outcomes = { error: 0, correct: 0 };
  const errorNames = {};
  let caseNumber = 0;
  for (const [kind, count] of PLAN) {
    for (let i = 0; i < count; i++, caseNumber++) {
      const rand = rng(1000 + caseNumber);
      const { bytes, forged } = mutate(kind, rand);
      const caseStart = Date.now();
      let result;
      try {
        result = await decode(bytes, { model });
      } catch (err) {
        assert.ok(err instanceof CodecError, `case ${caseNumber} (${kind}): ${err.name}: ${err.message} is not a CodecError`);
        assert.ok(!err.message.includes('\n'), `case ${caseNumber}: message is not one line`);
        outcomes.error++;
        errorNames[err.name] = (errorNames[err.name] || 0) + 1;
        continue;
      } finally {
        assert.ok(Date.now() - caseStart < 10000, `case ${caseNumber} (${kind}) took ${Date.now() - caseStart} ms`);
      }
      const got = result.images.map((im) => Array.from(im.tokens).join(','));
      if (forged) {
        // Records may be dropped, repeated or reordered behind valid CRCs (the stream was
        // rewritten), but every image must still be one of the seed's.
        for (const tokens of got) {
          assert.ok(seedTokens.includes(tokens), `case ${caseNumber} (${kind}): a decoded image is not one of the seed's`);
        }
      } else {
        assert.deepEqual(got, seedTokens, `case ${caseNumber} (${kind}): decoded without error to other images`);
      }
      outcomes.correct++;
    }
  }
  const seconds = (Date.now() - started) / 1000;
  console.log(`fuzz: ${caseNumber} cases in ${seconds.toFixed(1)} s: ${outcomes.error} clean errors, ${outcomes.correct} correct decodes; ${JSON.stringify(errorNames)}`);
  assert.ok(caseNumber >= 2000);
  assert.ok(seconds < 240, 'the fuzz must stay fast');
});
