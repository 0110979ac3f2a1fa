// Band checks (format/SPEC.md "Band checks", kind 3's features byte): a chain segment
// carries a check after each band but its last, so a damaged or forged chain is refused
// after one band's decoding instead of at the chain's end. The forged files are built here
// byte by byte from the SPEC; the work a decode did is the onProgress count of tokens.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import * as igpt from '../src/index.js';
import { concat } from '../src/checks.js';
import { crc32 } from '../src/crc32.js';
import { encodeVarint } from '../src/varint.js';
import { layout } from '../src/tiling.js';
import { GOLDEN, splitFrames, joinFrames, tinyBundle } from '../support/helpers.js';

const GOLDEN_FILE = path.join(GOLDEN, 'tiny_full_band_checks.igpt');
const golden = new Uint8Array(readFileSync(GOLDEN_FILE));
const refuses = (bytes, errorClass, message) => assert.throws(() => igpt.readStream(bytes), (e) => e instanceof errorClass && message.test(e.message) && !e.message.includes('\n'));
const u32 = (v) => Uint8Array.of(v & 0xff, (v >>> 8) & 0xff, (v >>> 16) & 0xff, v >>> 24);

/** A kind-3 body: context rows 4, CHAIN, RGB, W x H, grid 32, S windows, then `features`. */
function fullHeaderBody(width, height, windows, features) {
  return concat([Uint8Array.of(4 | 0x20), encodeVarint(width), encodeVarint(height), Uint8Array.of(32, windows), features]);
}

test('the golden file: band checks in the header and in each segment; a one-band image without', () => {
  const { records } = igpt.readStream(golden);
  const [thumb, full, oneBand] = records;
  assert.equal(thumb.type, 'thumbnail');
  assert.equal(full.bandChecks, true);
  assert.equal(full.bandCheckCount, layout(full).bands.length - 1);
  assert.deepEqual(full.segments.map((s) => s.bandChecks.length), [2, 2]);
  assert.equal(oneBand.bandChecks, false);
  assert.deepEqual(oneBand.segments.map((s) => s.bandChecks.length), [0]);
});

test('the features byte: 0, a reserved bit or BAND_CHECKS without CHAIN are refused', () => {
  const { header, frames } = splitFrames(golden);
  const at = frames.findIndex((f) => (f.head & 0x0f) === 3 && f.body[f.body.length - 1] === 1);
  const withBody = (body) => joinFrames(header, frames.map((f, i) => (i === at ? { ...f, body } : f)));
  const body = frames[at].body;
  const plain = body.subarray(0, body.length - 1);
  refuses(withBody(concat([plain, Uint8Array.of(0)])), igpt.InvalidFieldError, /features byte is 0/);
  for (const bit of [4, 8, 16, 32, 64, 128]) {
    refuses(withBody(concat([plain, Uint8Array.of(1 | bit)])), igpt.InvalidFieldError, /features/);
  }
  // Bit 1 is LINEAR (linear.test.js), known since 2026-12-06: this image has coding 2, so it reads.
  const linear = igpt.readStream(withBody(concat([plain, Uint8Array.of(1 | 2)]))).records[1];
  assert.deepEqual([linear.coding, linear.bandChecks, linear.linearLevels], [2, true, true]);
  const noChain = body.slice();
  noChain[0] &= ~0x20;
  refuses(withBody(noChain), igpt.InvalidFieldError, /CHAIN/);
  // Without the byte, the segments hold two bytes of payload where the checks were: still
  // a valid frame layout, so the decoder's checks decide (tested in Python, test_band_check.py).
  assert.equal(igpt.readStream(withBody(plain)).records[1].bandChecks, false);
});

test('a segment too short for its band checks is refused', () => {
  const { header, frames } = splitFrames(golden);
  const at = frames.findIndex((f) => (f.head & 0x0f) === 4);
  const cut = frames.map((f, i) => (i === at ? { ...f, body: f.body.subarray(0, 3) } : f));
  refuses(joinFrames(header, cut), igpt.InvalidFieldError, /ends inside its 2 band checks/);
});

/**
 * A 32 x `height` image, one chain, its segment a forgery: 600 random-looking payload bytes,
 * band checks and a token check that are nobody's. File header, kind-3 record, FINAL kind-4
 * record, each frame followed by the chained CRC (SPEC.md "Record frame").
 */
function forgedChain(fingerprint, height, bandChecks) {
  const fileHeader = concat([Uint8Array.of(0x89, 0x49, 0x47, 2), fingerprint]);
  const body = fullHeaderBody(32, height, 1, bandChecks ? Uint8Array.of(1) : new Uint8Array(0));
  const bands = layout({ width: 32, height, grid: 32, contextRows: 4, segmentWindows: 1, chain: true }).bands.length;
  const head = concat([Uint8Array.of(3), encodeVarint(body.length), body]);
  let crc = crc32(head, crc32(fileHeader));
  const payload = new Uint8Array(601);
  let x = 12345;
  for (let i = 0; i < 600; i++) payload[i] = (x = (x * 1103515245 + 12345) >>> 0) >>> 24;
  payload[600] = 1;
  const checks = bandChecks ? Uint8Array.from({ length: bands - 1 }, (_, i) => 0x50 + i) : new Uint8Array(0);
  const segment = concat([Uint8Array.of(0x84, 0x34, 0x12), checks, payload]);
  const stream = concat([fileHeader, head, u32(crc), segment]);
  crc = crc32(segment, crc);
  return { bytes: concat([stream, u32(crc)]), bands };
}

async function decodeCounting(bytes, model) {
  let done = 0;
  try {
    await igpt.decode(bytes, { model, onProgress: (n) => { done = n; } });
  } catch (error) {
    return { error, done };
  }
  assert.fail('a forged chain decoded');
}

test('a forged chain is refused after its first band, not at its end', async () => {
  const tiny = await tinyBundle();
  const oneBand = 32 * 32; // band 0's coded tokens
  for (const height of [88, 256]) {
    const { bytes, bands } = forgedChain(tiny.fingerprint, height, true);
    assert.ok(bands >= 3);
    const { error, done } = await decodeCounting(bytes, tiny);
    assert.ok(error instanceof igpt.TokenChecksumError, String(error));
    assert.match(error.message, /segment 0: .*band 0's check/);
    assert.ok(!error.message.includes('\n'));
    assert.ok(done <= oneBand, `${done} tokens decoded before the refusal`);
  }
  // The same forgery without the feature (CHAIN alone): every band is decoded first.
  const { bytes } = forgedChain(tiny.fingerprint, 88, false);
  const { error, done } = await decodeCounting(bytes, tiny);
  assert.ok(error instanceof igpt.CodecError, String(error));
  assert.equal(done, 32 * 88);
});

test('each band check of the golden file, corrupted: a one-line error naming it, after its band', async () => {
  const tiny = await tinyBundle();
  const { header, frames } = splitFrames(golden);
  const segmentsAt = frames.map((f, i) => ((f.head & 0x0f) === 4 ? i : -1)).filter((i) => i >= 0).slice(0, 2);
  const { records } = igpt.readStream(golden);
  const full = records[1];
  const plan = layout(full);
  const coded = (band) => plan.bands[band].rows - plan.bands[band].known;
  const realWidth = plan.groups.map((cols) => cols.reduce((n, c) => n + Math.min(plan.w, full.width - plan.columns[c]), 0));
  for (const [segment, band] of [[0, 0], [1, 0], [0, 1], [1, 1]]) {
    const forged = frames.map((f, i) => {
      if (i !== segmentsAt[segment]) return f;
      const body = f.body.slice();
      body[2 + band] ^= 0x40;
      return { ...f, body };
    });
    const { error, done } = await decodeCounting(joinFrames(header, forged), tiny);
    assert.ok(error instanceof igpt.TokenChecksumError, String(error));
    assert.match(error.message, new RegExp(`segment ${segment}: .*band ${band}'s check`));
    assert.ok(!error.message.includes('\n'));
    // The decoder goes band by band across the chains: the thumbnail, bands before this
    // one in both chains, and this band in the chains up to this one.
    let want = 16;
    for (let b = 0; b < band; b++) want += coded(b) * (realWidth[0] + realWidth[1]);
    for (let g = 0; g <= segment; g++) want += coded(band) * realWidth[g];
    assert.equal(done, want);
  }
});
