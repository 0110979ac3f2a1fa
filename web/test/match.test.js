// Coding 3's match levels (src/match.js) against codec/core/match.py, step by step: the
// vectors of scripts/make_match_vectors.py hold digests of every step's input tables, output
// tables and weights, and of the whole state (tags, counts, totals, distinct) every few
// steps; the inputs are rebuilt here as the script built them.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { inflateSync } from 'node:zlib';
import path from 'node:path';
import { WEB } from '../support/helpers.js';
import { AdaptiveMixer } from '../src/adaptive.js';
import {
  MatchMixer, DEFAULT_LEVELS, TEMPLATE, HASH_MULTIPLIER, levelSpec, levelKey, windowTemplate, firstOf, exactFloorDiv,
} from '../src/match.js';

const vectors = JSON.parse(readFileSync(path.join(WEB, 'test', 'data', 'match_vectors.json'), 'utf8'));
const raw = inflateSync(Buffer.from(vectors.image.zlib_u16le, 'base64'));
const IMAGE = new Uint16Array(raw.buffer, raw.byteOffset, raw.length / 2);
const IMAGE_WIDTH = vectors.image.width;

function mix32(x) {
  x = (x ^ (x >>> 16)) >>> 0;
  x = Math.imul(x, 0x7feb352d) >>> 0;
  x = (x ^ (x >>> 15)) >>> 0;
  x = Math.imul(x, 0x846ca68b) >>> 0;
  return (x ^ (x >>> 16)) >>> 0;
}

/** The script's model_table: noise 1..256 and a peak of 2^16. */
function modelTable(seed, window, cell, truth) {
  const key = (Math.imul(seed, 0x01000193) + Math.imul(window, 0x9e3779b1) + Math.imul(cell, 0x85ebca6b)) >>> 0;
  const table = new Int32Array(512);
  for (let s = 0; s < 512; s++) table[s] = 1 + (mix32((key + s) >>> 0) & 255);
  const h = mix32((key + 512) >>> 0);
  table[h & 3 ? truth : (h >>> 8) & 511] += 1 << 16;
  return table;
}

/** adaptive.normalize: max(1, floor(f 2^22 / F)). */
function normalize(f) {
  let total = 0;
  for (let s = 0; s < 512; s++) total += f[s];
  return Float64Array.from(f, (v) => Math.max(1, Math.floor((v * 2 ** 22) / total)));
}

function digest(...views) {
  const h = createHash('sha256');
  for (const v of views) h.update(new Uint8Array(v.buffer, v.byteOffset, v.byteLength));
  return h.digest('hex').slice(0, 8);
}

const u32 = (tables) => {
  const out = new Uint32Array(tables.length * 512);
  tables.forEach((t, i) => out.set(t, i * 512));
  return out;
};

/** int64 little-endian of non-negative or -1 integers below 2^53, as [lo, hi] uint32 pairs. */
function i64(values) {
  const out = new Uint32Array(values.length * 2);
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    out[2 * i] = v < 0 ? 0xffffffff : v % 2 ** 32;
    out[2 * i + 1] = v < 0 ? 0xffffffff : Math.floor(v / 2 ** 32);
  }
  return out;
}

function stateDigest(mixer) {
  const parts = [];
  for (const level of mixer.levels) parts.push(i64(level.tags), level.counts, i64(level.totals), i64(level.distinct));
  return digest(...parts);
}

function neighbours(cells, cell, w) {
  const r = Math.floor(cell / w);
  const c = cell % w;
  const at = (rr, cc) => (rr < 0 || cc < 0 || cc >= w ? 512 : cells[rr * w + cc]);
  return [at(r, c - 1), at(r - 1, c), at(r - 1, c - 1), at(r - 1, c + 1)];
}

function runCase(c) {
  const levels = c.levels.map((s) => levelSpec(...s));
  const mixer = new MatchMixer(levels, c.slot_bits);
  const adaptive = c.adaptive ? new AdaptiveMixer() : null;
  const w = c.width;
  const windows = c.x0.map((x0, b) => {
    const cells = new Int32Array(c.rows * w);
    for (let r = 0; r < c.rows; r++) {
      for (let col = 0; col < w; col++) cells[r * w + col] = IMAGE[(c.top + r) * IMAGE_WIDTH + x0 + Math.min(col, c.real[b] - 1)];
    }
    return cells;
  });
  const mismatches = [];
  let index = 0;
  for (let cell = c.known * w; cell < c.rows * w; cell++) {
    const live = [];
    c.real.forEach((real, b) => { if (cell % w < real) live.push(b); });
    if (!live.length) continue;
    const truth = live.map((b) => windows[b][cell]);
    const model = live.map((b, i) => modelTable(c.seed, b, cell, truth[i]));
    let tables;
    let astep = null;
    if (adaptive) {
      ({ tables, step: astep } = adaptive.tables(model, live.map((b) => neighbours(windows[b], cell, w))));
    } else {
      tables = model.map(normalize);
    }
    const { tables: out, step } = mixer.tables(tables, live.map((b) => windowTemplate(windows[b], cell, w, mixer.size)));
    mixer.update(step, truth);
    if (astep) adaptive.update(astep, truth);
    const weights = [];
    for (const level of mixer.levels) weights.push(...level.weights);
    const entry = [digest(u32(tables)), digest(u32(out)), digest(i64(weights))];
    if (c.state_every && index % c.state_every === 0) entry.push(stateDigest(mixer));
    const got = entry.join(':');
    if (got !== c.steps[index]) mismatches.push(`step ${index} (cell ${cell}): ${got} != ${c.steps[index]}`);
    if (mismatches.length >= 3) break;
    index++;
  }
  return { mismatches, steps: index, finalState: stateDigest(mixer) };
}

for (const c of vectors.cases) {
  test(`match.js equals match.py on every step: ${c.name} (${c.steps.length} steps, batches ${c.events.batches})`, () => {
    const { mismatches, steps, finalState } = runCase(c);
    assert.deepEqual(mismatches, []);
    assert.equal(steps, c.steps.length);
    assert.equal(finalState, c.final_state);
  });
}

test('the vectors exercise what they are for: takeovers, halving, contested slots, batches 1 to 32', () => {
  const sum = (key) => vectors.cases.reduce((n, c) => n + c.events[key], 0);
  assert.ok(sum('takeovers') > 1000 && sum('halvings') > 10 && sum('contested') > 1000);
  const batches = new Set(vectors.cases.flatMap((c) => c.events.batches));
  for (const b of [1, 3, 8, 16, 32]) assert.ok(batches.has(b), `batch ${b}`);
  assert.ok(vectors.cases.some((c) => c.levels.every((s, i) => s.every((v, j) => v === Object.values(DEFAULT_LEVELS[i])[j]))));
});

test('the key hash: Math.imul equals the BigInt polynomial mod 2^32 (match.py _hash)', () => {
  let x = 12345;
  for (let trial = 0; trial < 300; trial++) {
    const size = 1 + (trial % 16);
    const spec = levelSpec(trial % 2 ? 'values' : 'pattern', size);
    const template = Int32Array.from({ length: 16 }, () => { x = mix32(x + 1); return x % 5 === 0 ? 512 : x % 7; });
    const first = firstOf(template);
    const number = trial % 7;
    let h = BigInt(((number + 1) * 0x51ed27 + (trial % 2)) & 0xffff);
    for (let i = 0; i < size; i++) {
      const v = trial % 2 ? template[i] : Math.min(first[i], size);
      h = ((h + BigInt(v) + 1n) * BigInt(HASH_MULTIPLIER)) % 2n ** 32n;
    }
    assert.equal(levelKey(spec, template, first, number), Number(h));
  }
});

test('exactFloorDiv: floor(a 2^22 / d) exact where the plain float quotient rounds up to the next integer', () => {
  // a 2^22 = -1 (mod d): the true quotient is an integer less 1/d, closer than half an ulp.
  let failsPlain = 0;
  let x = 99;
  for (let trial = 0; trial < 2000; trial++) {
    x = mix32(x + trial);
    const d = 2 * ((x % 2 ** 27) + 2 ** 30 * (1 + (trial % 15))) + 1; // odd, 2^31..2^35
    const inverse = Number(modInverse(2n ** 22n, BigInt(d)));
    const a = ((d - inverse) % d) + d * (trial % 30); // a 2^22 = -1 mod d, a < 2^40
    const want = (BigInt(a) * 2n ** 22n) / BigInt(d);
    assert.equal(BigInt(exactFloorDiv(a, d)), want);
    if (BigInt(Math.floor((a * 2 ** 22) / d)) !== want) failsPlain++;
  }
  assert.ok(failsPlain > 100, `the plain quotient failed ${failsPlain} times`); // the test can tell
});

function modInverse(a, m) {
  let [r0, r1, s0, s1] = [a % m, m, 1n, 0n];
  while (r1) {
    const q = r0 / r1;
    [r0, r1, s0, s1] = [r1, r0 - q * r1, s1, s0 - q * s1];
  }
  return ((s0 % m) + m) % m;
}

test('window templates and first_of: nearest first, NONE outside, equal values point back', () => {
  const w = 5;
  const cells = Int32Array.from({ length: 25 }, (_, i) => i);
  const t = windowTemplate(cells, 12, w); // row 2, col 2
  assert.equal(t.length, TEMPLATE.length);
  assert.deepEqual(Array.from(t.slice(0, 6)), [11, 7, 6, 8, 10, 2]);
  assert.equal(t[11], 512); // NNN: row -1
  assert.equal(windowTemplate(cells, 5, w)[0], 512); // W of column 0
  assert.deepEqual(Array.from(firstOf(Int32Array.of(3, 4, 3, 512, 4, 512))), [0, 1, 0, 6, 1, 6]);
});

test('refused like LevelSpec and MatchMixer refuse', () => {
  assert.throws(() => levelSpec('other', 3), RangeError);
  assert.throws(() => levelSpec('values', 0), RangeError);
  assert.throws(() => levelSpec('values', 17), RangeError);
  assert.throws(() => levelSpec('values', 3, 0), RangeError);
  assert.throws(() => levelSpec('values', 3, 1, 0, 4097), RangeError);
  assert.throws(() => levelSpec('values', 3, 1, 0, 0, false, 25), RangeError);
  assert.throws(() => new MatchMixer(DEFAULT_LEVELS, 0), RangeError);
  const mixer = new MatchMixer();
  assert.equal(mixer.size, 12);
  assert.throws(() => mixer.tables([new Float64Array(512).fill(1)], [new Int32Array(11)]), RangeError);
});
