// Linear levels (src/linear.js; format/SPEC.md "Linear levels", kind 3's features bit 1
// `LINEAR`) against codec/core/linear.py: test/data/linear_vectors.json, written by
//   .venv/bin/python web/scripts/make_linear_vectors.py
// holds linear.coefficients() on edge cases and random inputs, whole tables from
// linear.reference_table(), and LinearMixer run step by step (digests of every step's
// tables and weights, and of the whole state now and then; the inputs are rebuilt here as the
// script built them). Then the header: LINEAR read, refused on codings 0 and 1 with Python's
// message; and a LINEAR golden file read without the bit must fail its checks (the golden
// files themselves decode to their tokens in golden.test.js, which takes every file of
// tests/golden/expected.json).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { inflateSync } from 'node:zlib';
import path from 'node:path';
import * as igpt from '../src/index.js';
import { AdaptiveMixer } from '../src/adaptive.js';
import { LinearMixer, coefficients, linearTable, mulShift22 } from '../src/linear.js';
import { GOLDEN, WEB, readJson, splitFrames, joinFrames, tinyBundle } from '../support/helpers.js';

const vectors = readJson(path.join(WEB, 'test', 'data', 'linear_vectors.json'));
const raw = inflateSync(Buffer.from(vectors.image.zlib_u16le, 'base64'));
const IMAGE = new Uint16Array(raw.buffer, raw.byteOffset, raw.length / 2);
const IMAGE_WIDTH = vectors.image.width;
const LINEAR_GOLDEN = ['tiny_full_linear.igpt', 'default_full_linear.igpt'];

/** SPEC.md's coefficients in BigInt, floored in its order: the plainest statement to hold JS numbers to. */
function bigCoefficients(F, n, D, w) {
  const [alpha, beta] = [[], []];
  for (let l = 0; l < 3; l++) {
    const unit = 4096n * BigInt(D[l]);
    alpha.push(((unit - BigInt(w[l]) * BigInt(n[l])) << 22n) / unit);
    beta.push((BigInt(w[l]) << 32n) / BigInt(D[l]));
  }
  const a12 = (alpha[2] * alpha[1]) >> 22n;
  const af = (((a12 * alpha[0]) >> 22n) << 22n) / BigInt(F);
  return [af, (a12 * beta[0]) >> 22n, (alpha[2] * beta[1]) >> 22n, beta[2]].map(Number);
}

/** The same formulas with plain float products (what linear.js must not do). */
function plainCoefficients(F, n, D, w) {
  const alpha = D.map((d, l) => Math.floor(((4096 * d - w[l] * n[l]) * 2 ** 22) / (4096 * d)));
  const beta = D.map((d, l) => Math.floor((w[l] * 2 ** 32) / d));
  const a12 = Math.floor((alpha[2] * alpha[1]) / 2 ** 22);
  const af = Math.floor((Math.floor((a12 * alpha[0]) / 2 ** 22) * 2 ** 22) / F);
  return [af, Math.floor((a12 * beta[0]) / 2 ** 22), Math.floor((alpha[2] * beta[1]) / 2 ** 22), beta[2]];
}

test(`coefficients equal linear.py's on ${vectors.coefficients.length} inputs (weights 0 and 4096, empty contexts, totals 512 to 2^32 - 1, products that round)`, () => {
  let plainFails = 0;
  for (const row of vectors.coefficients) {
    const [F, n, D, w, want] = [row[0], row.slice(1, 4), row.slice(4, 7), row.slice(7, 10), row.slice(10)];
    assert.deepEqual(coefficients(F, n, D, w), want, `F ${F}, n ${n}, D ${D}, w ${w}`);
    assert.deepEqual(bigCoefficients(F, n, D, w), want);
    if (plainCoefficients(F, n, D, w).some((v, i) => v !== want[i])) plainFails++;
  }
  // The script adds 24 inputs where a product of two coefficients, past 2^53, rounds up to
  // a multiple of 2^22: plain float products would floor those wrong (the test can tell).
  assert.ok(plainFails >= 24, `plain float products were wrong on ${plainFails} inputs`);
  const edges = vectors.coefficients.map((r) => r.slice(7, 10)).flat();
  assert.ok(edges.includes(0) && edges.includes(4096));
  assert.ok(vectors.coefficients.some((r) => r[1] + r[2] + r[3] === 0) && vectors.coefficients.some((r) => r[0] === 2 ** 32 - 1));
});

test('mulShift22: floor(x y / 2^22) exactly up to x < 2^31, y < 2^44', () => {
  let x = 7;
  for (let trial = 0; trial < 5000; trial++) {
    x = (Math.imul(x, 0x2c1b3c6d) + 0x297a2d39 + trial) >>> 0;
    const a = trial % 3 ? x % 2 ** 22 : x >>> 1;
    const b = (x % 2 ** 22) * 2 ** 22 + ((x * 7919) % 2 ** 22);
    assert.equal(BigInt(mulShift22(a, b)), (BigInt(a) * BigInt(b)) >> 22n);
  }
  // x y = -1 (mod 2^22) past 2^53: the float product rounds up to the next multiple of 2^22.
  let plainFails = 0;
  for (let trial = 0; trial < 200; trial++) {
    const a = 2 ** 22 - 1 - 2 * trial; // odd
    const inverse = Number(modInverse(BigInt(a), 2n ** 22n));
    const b = (2 ** 22 - inverse) + 2 ** 22 * (2 ** 17 + trial * 997); // a b = -1 mod 2^22, b < 2^40
    const want = (BigInt(a) * BigInt(b)) >> 22n;
    assert.equal(BigInt(mulShift22(a, b)), want);
    if (BigInt(Math.floor((a * b) / 2 ** 22)) !== want) plainFails++;
  }
  assert.ok(plainFails > 100, `the plain product floored wrong ${plainFails} times`);
  assert.equal(mulShift22(2 ** 22, 2 ** 40), 2 ** 40);
  assert.equal(mulShift22(2 ** 31 - 1, 2 ** 44 - 1), Number(((2n ** 31n - 1n) * (2n ** 44n - 1n)) >> 22n));
});

test(`whole tables equal linear.reference_table (${vectors.tables.length} tables: flat, peaked, totals near 2^32; counts empty, sparse, dense, 1023 on one symbol)`, () => {
  for (const [i, row] of vectors.tables.entries()) {
    const counts = row.counts.map((sparse) => {
      const c = new Int32Array(512);
      for (const [s, v] of Object.entries(sparse)) c[Number(s)] = v;
      return c;
    });
    const n = counts.map((c) => c.reduce((a, b) => a + b, 0));
    const D = counts.map((c, l) => n[l] + 16 + 4 * c.filter((v) => v > 0).length);
    const F = row.f.reduce((a, b) => a + b, 0);
    const coeffs = coefficients(F, n, D, row.w);
    assert.deepEqual(coeffs, row.coefficients, `table ${i} coefficients`);
    const table = linearTable(row.f, counts.map((c, l) => (n[l] ? c : null)), coeffs);
    assert.deepEqual(Array.from(table), row.table, `table ${i}`);
    assert.deepEqual(Array.from(linearTable(row.f, counts, coeffs)), row.table, `table ${i}, empty contexts not skipped`);
  }
});

function modInverse(a, m) {
  let [r0, r1, s0, s1] = [a % m, m, 1n, 0n];
  while (r1) {
    const q = r0 / r1;
    [r0, r1, s0, s1] = [r1, r0 - q * r1, s1, s0 - q * s1];
  }
  return ((s0 % m) + m) % m;
}

function mix32(x) {
  x = (x ^ (x >>> 16)) >>> 0;
  x = Math.imul(x, 0x7feb352d) >>> 0;
  x = (x ^ (x >>> 15)) >>> 0;
  x = Math.imul(x, 0x846ca68b) >>> 0;
  return (x ^ (x >>> 16)) >>> 0;
}

/** make_match_vectors.py's model_table (noise 1..256, a peak of 2^16), times `scale`. */
function modelTable(seed, window, cell, truth, scale) {
  const key = (Math.imul(seed, 0x01000193) + Math.imul(window, 0x9e3779b1) + Math.imul(cell, 0x85ebca6b)) >>> 0;
  const table = new Float64Array(512);
  for (let s = 0; s < 512; s++) table[s] = 1 + (mix32((key + s) >>> 0) & 255);
  const h = mix32((key + 512) >>> 0);
  table[h & 3 ? truth : (h >>> 8) & 511] += 1 << 16;
  for (let s = 0; s < 512; s++) table[s] *= scale;
  return table;
}

function digest(...views) {
  const h = createHash('sha256');
  for (const v of views) h.update(new Uint8Array(v.buffer, v.byteOffset, v.byteLength));
  return h.digest('hex').slice(0, 8);
}

/** int64 little-endian of non-negative integers below 2^53. */
function i64(values) {
  const out = new Uint32Array(values.length * 2);
  values.forEach((v, i) => {
    out[2 * i] = v % 2 ** 32;
    out[2 * i + 1] = Math.floor(v / 2 ** 32);
  });
  return out;
}

/** The script's state_digest: per level, its contexts in key order (key, total, distinct, counts). */
function stateDigest(mixer) {
  const parts = [];
  for (const level of mixer.levels) {
    for (const [key, entry] of [...level.contexts].sort((a, b) => a[0] - b[0])) {
      parts.push(i64([key, entry.total, entry.distinct]), Uint16Array.from(entry.counts));
    }
  }
  return digest(...parts);
}

function neighbours(cells, cell, w) {
  const r = Math.floor(cell / w);
  const c = cell % w;
  const at = (rr, cc) => (rr < 0 || cc < 0 || cc >= w ? 512 : cells[rr * w + cc]);
  return [at(r, c - 1), at(r - 1, c), at(r - 1, c - 1), at(r - 1, c + 1)];
}

/** Run one case with `Mixer`; mismatches against the script's digests (at most 3). */
function runCase(c, Mixer = LinearMixer) {
  const mixer = new Mixer(c.capacity);
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
    const model = live.map((b, i) => modelTable(c.seed, b, cell, truth[i], c.scale));
    if (c.sharpen) for (const t of model) for (let s = 0; s < 512; s++) if (t[s] >= 2 ** 16) t[s] *= 2 ** 15;
    const { tables, step } = mixer.tables(model, live.map((b) => neighbours(windows[b], cell, w)));
    mixer.update(step, truth);
    const out = new Uint32Array(tables.length * 512);
    tables.forEach((t, i) => out.set(t, i * 512));
    const weights = mixer.levels.flatMap((level) => Array.from(level.weights));
    const entry = [digest(out), digest(i64(weights))];
    if (c.state_every && index % c.state_every === 0) entry.push(stateDigest(mixer));
    const got = entry.join(':');
    if (got !== c.steps[index]) mismatches.push(`step ${index} (cell ${cell}): ${got} != ${c.steps[index]}`);
    if (mismatches.length >= 3) break;
    index++;
  }
  return { mismatches, steps: index, finalState: stateDigest(mixer) };
}

for (const c of vectors.cases) {
  test(`LinearMixer equals linear.py's on every step: ${c.name} (${c.steps.length} steps, batches ${c.events.batches}, capacity ${c.capacity})`, () => {
    const { mismatches, steps, finalState } = runCase(c);
    assert.deepEqual(mismatches, []);
    assert.equal(steps, c.steps.length);
    assert.equal(finalState, c.final_state);
  });
}

test('the step vectors exercise what they are for; coding 2\'s rounded levels give other tables on them', () => {
  const sum = (key) => vectors.cases.reduce((n, c) => n + c.events[key], 0);
  assert.ok(sum('clears') > 10 && sum('halvings') > 100);
  assert.ok(vectors.cases.some((c) => c.events.max_total > 2 ** 31));
  assert.ok(Math.min(...vectors.cases.map((c) => c.events.weight_min)) < 100);
  // The same case through AdaptiveMixer (same state, rounded levels) fails the digests at once.
  const { mismatches } = runCase(vectors.cases[0], AdaptiveMixer);
  assert.match(mismatches[0] ?? '', /^step 0 /);
});

// --- The header: LINEAR read, and refused where the coding has no levels. ---

const tinyLinear = new Uint8Array(readFileSync(path.join(GOLDEN, 'tiny_full_linear.igpt')));

/** The stream with each frame's head and body passed through `edit(frame, index)` (CRCs recomputed). */
function edited(bytes, edit) {
  const { header, frames } = splitFrames(bytes);
  return joinFrames(header, frames.map((f, i) => edit(f, i) ?? f));
}

/** A kind-3 body with its features byte set to `features` (dropped when 0). */
function withFeatures(body, features, hadByte) {
  const plain = hadByte ? body.subarray(0, body.length - 1) : body;
  return features ? Uint8Array.from([...plain, features]) : plain.slice();
}

test('the golden LINEAR files: every full-resolution record of codings 2 and 3 has the bit; golden.test.js decodes them', () => {
  const expected = readJson(path.join(GOLDEN, 'expected.json'));
  for (const name of LINEAR_GOLDEN) {
    assert.ok(expected[name], `${name} is in expected.json, so golden.test.js decodes it to its tokens`);
    const { records } = igpt.readStream(new Uint8Array(readFileSync(path.join(GOLDEN, name))));
    const full = records.filter((r) => r.type === 'full');
    assert.ok(full.every((r) => r.linearLevels === true));
    assert.deepEqual([...new Set(full.map((r) => r.coding))].sort(), [2, 3]);
  }
  // Without the feature the reader says so (a file from before it).
  const { records } = igpt.readStream(new Uint8Array(readFileSync(path.join(GOLDEN, 'tiny_full_match.igpt'))));
  assert.ok(records.filter((r) => r.type === 'full').every((r) => r.linearLevels === false));
});

test('LINEAR with coding 0 or 1 is an InvalidFieldError with Python\'s message', () => {
  const message = (coding) => `linear levels need coding 2 or 3, not coding ${coding}`;
  const refuses = (bytes, coding) => assert.throws(() => igpt.readStream(bytes), (e) => e instanceof igpt.InvalidFieldError && e.message === message(coding));
  // The golden file's first image (coding 2, BAND_CHECKS | LINEAR) relabelled coding 0 or 1.
  for (const coding of [0, 1]) {
    refuses(edited(tinyLinear, (f, i) => (i < 3 && (f.head & 0x0f) >= 3 ? { ...f, head: (f.head & ~0x30) | (coding << 4) } : null)), coding);
  }
  // A coding-0 image of tiny_full.igpt given the bit (its header had no features byte).
  const tinyFull = new Uint8Array(readFileSync(path.join(GOLDEN, 'tiny_full.igpt')));
  const at = splitFrames(tinyFull).frames.findIndex((f) => (f.head & 0x0f) === 3);
  assert.equal(splitFrames(tinyFull).frames[at].head >> 4 & 3, 0);
  const forged = edited(tinyFull, (f, i) => (i === at ? { ...f, body: withFeatures(f.body, 0x02, false) } : null));
  refuses(forged, 0);
  // The same bit is read on codings 2 and 3; bits 2-7 stay reserved.
  const [first] = igpt.readStream(tinyLinear).records;
  assert.deepEqual([first.coding, first.bandChecks, first.linearLevels], [2, true, true]);
  for (const bit of [4, 8, 16, 32, 64, 128]) {
    assert.throws(() => igpt.readStream(edited(tinyLinear, (f, i) => (i === 0 ? { ...f, body: withFeatures(f.body, 0x03 | bit, true) } : null))), (e) => e instanceof igpt.InvalidFieldError && /features/.test(e.message));
  }
});

test('a LINEAR file read without the bit fails its checks (the rounded levels give other tables)', async () => {
  const model = await tinyBundle();
  // Image 0 (coding 2, three bands in two chains: features 0x03 -> 0x01) and the one-band
  // image 3 (coding 2: 0x02 -> no byte), each in a stream of its own frames.
  const { header, frames } = splitFrames(tinyLinear);
  const kind3 = frames.map((f, i) => ((f.head & 0x0f) === 3 ? i : -1)).filter((i) => i >= 0);
  assert.equal(kind3.length, 3); // images 0, 2 and 3 (image 1 is a thumbnail)
  for (const [from, features] of [[kind3[0], 0x01], [kind3[2], 0]]) {
    assert.equal(frames[from].body[frames[from].body.length - 1], features | 0x02);
    let to = from + 1;
    while (to < frames.length && (frames[to].head & 0x0f) === 4) to++;
    const own = frames.slice(from, to);
    const linear = joinFrames(header, own);
    const { images } = await igpt.decode(linear, { model });
    assert.equal(images.length, 1);
    const body = own[0].body;
    const rounded = joinFrames(header, [{ ...own[0], body: withFeatures(body, features, true) }, ...own.slice(1)]);
    assert.equal(igpt.readStream(rounded).records[0].linearLevels, false);
    await assert.rejects(igpt.decode(rounded, { model }), (e) => e instanceof igpt.PayloadError || e instanceof igpt.TokenChecksumError);
  }
});
