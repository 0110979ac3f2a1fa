// The stream reader and the coder, case by case: each SPEC.md failure gives its class.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import * as igpt from '../src/index.js';
import { readVarint, encodeVarint } from '../src/varint.js';
import { crc32 } from '../src/crc32.js';
import { RangeEncoder, RangeDecoder } from '../src/rangecoder.js';
import { layout, segmentCount } from '../src/tiling.js';
import { WEB, GOLDEN, splitFrames, joinFrames, tinyBundle } from '../support/helpers.js';

const seed = new Uint8Array(readFileSync(path.join(WEB, 'test', 'data', 'fuzz_seed.igpt')));
const { header, frames } = splitFrames(seed);
const refuses = (bytes, errorClass) => assert.throws(() => igpt.readStream(bytes), errorClass);

test('varints: SPEC examples, minimal and bounded', () => {
  for (const [value, bytes] of [[0, [0]], [127, [0x7f]], [128, [0x80, 1]], [300, [0xac, 2]], [16384, [0x80, 0x80, 1]]]) {
    assert.deepEqual(Array.from(encodeVarint(value)), bytes);
    assert.equal(readVarint(Uint8Array.from(bytes), 0, 65535, 'x').value, value);
  }
  assert.throws(() => readVarint(Uint8Array.of(0x80, 0), 0, 65535, 'x'), igpt.InvalidFieldError);
  assert.throws(() => readVarint(Uint8Array.of(0xff, 0xff, 0x7f), 0, 65535, 'x'), igpt.InvalidFieldError);
  assert.throws(() => readVarint(Uint8Array.of(0x80, 0x80, 0x80, 1), 0, 65535, 'x'), igpt.InvalidFieldError);
});

test('crc32 is zlib\'s, chained', () => {
  const text = new TextEncoder().encode('123456789');
  assert.equal(crc32(text), 0xcbf43926);
  assert.equal(crc32(text.subarray(4), crc32(text.subarray(0, 4))), 0xcbf43926);
});

test('range coder: decode(encode(x)) and a canonical payload without trailing zeros', () => {
  const cum = Float64Array.from([0, 1, 5, 6, 1000]);
  const symbols = [0, 3, 3, 1, 2, 3, 0, 0, 1];
  const enc = new RangeEncoder();
  for (const s of symbols) enc.encode(cum[s], cum[s + 1], 1000);
  const payload = enc.finish();
  assert.notEqual(payload[payload.length - 1], 0);
  const dec = new RangeDecoder(payload);
  assert.deepEqual(symbols.map(() => dec.decode(cum).symbol), symbols);
});

test('tiling: the SPEC figures (768 x 512 with CHAIN: 2 segments, without: 38)', () => {
  const head = { width: 768, height: 512, grid: 32, contextRows: 5, segmentWindows: 12, chain: true };
  assert.equal(segmentCount(head), 2);
  assert.equal(segmentCount({ ...head, chain: false }), layout(head).bands.length * 2);
});

test('file header errors', () => {
  refuses(Uint8Array.of(0x50, 0x4b, 3, 4), igpt.BadMagicError);
  refuses(seed.slice(0, 3), igpt.TruncatedError);
  refuses(seed.slice(0, 10), igpt.TruncatedError);
  refuses(Uint8Array.of(0x89, 0x49, 0x47, 0x50, 0x0d, 0x0a, 0x1a, 0x0a, 0, 0, 0, 0), igpt.UnsupportedVersionError);
  const v3 = seed.slice();
  v3[3] = 3;
  refuses(v3, igpt.UnsupportedVersionError);
  refuses(seed.slice(0, 12), igpt.TruncatedError);
});

test('frame errors: CRC, appended bytes, missing end, lengths, kinds', () => {
  const flipped = seed.slice();
  flipped[20] ^= 1;
  refuses(flipped, igpt.ChecksumError);
  refuses(Uint8Array.of(...seed, 0), igpt.ChecksumError);
  const unfinished = joinFrames(header, [...frames, { head: 0x47, body: Uint8Array.of(1) }]);
  assert.equal(igpt.readStream(unfinished).records.length, 4); // an unknown ancillary kind is skipped
  refuses(joinFrames(header, [...frames.slice(0, 1), { head: 0x07, body: Uint8Array.of(1) }]), igpt.UnknownRecordKindError);
  refuses(joinFrames(header, [{ head: 0x00, body: Uint8Array.of(1) }]), igpt.InvalidFieldError);
  refuses(joinFrames(header, [{ ...frames[1], head: frames[1].head | 0x30 }]), igpt.InvalidFieldError); // coding 3 thumbnail (full-resolution: test/coding3.test.js)
  refuses(joinFrames(header, [{ ...frames[1], head: frames[1].head | 0x20 }]), igpt.InvalidFieldError); // coding 2 thumbnail
  // A record cut before its end: its length runs past the bytes left.
  const firstLength = seed.length - 40;
  refuses(seed.slice(0, firstLength), igpt.FormatError);
  // Records without FINAL, then the end.
  const openEnded = joinFrames(header, [frames[1], frames[1]]);
  const lastHead = openEnded.length - 4 - frames[1].body.length - 1;
  const cut = openEnded.slice(0, lastHead);
  refuses(cut, igpt.MissingEndMarkerError);
  // A final record longer than MAX_FRAME.
  refuses(joinFrames(header, [{ head: 0x41, body: new Uint8Array(2 ** 20 + 70) }]), igpt.LengthOutOfRangeError);
});

test('name records: attach to the next image; refused at the end or twice', () => {
  const parsed = igpt.readStream(seed);
  assert.equal(parsed.records[0].name, 'leaf.png');
  assert.equal(parsed.records[1].name, null);
  const name = frames[0];
  refuses(joinFrames(header, [frames[1], name]), igpt.InvalidFieldError);
  refuses(joinFrames(header, [name, name, frames[1]]), igpt.InvalidFieldError);
  refuses(joinFrames(header, [name, { head: 0x47, body: Uint8Array.of(1) }, frames[1]]), igpt.InvalidFieldError);
  refuses(joinFrames(header, [{ head: name.head, body: new TextEncoder().encode('a/b') }, frames[1]]), igpt.InvalidFieldError);
});

test('full-resolution records: segments counted, nothing between them', () => {
  const parsed = igpt.readStream(seed);
  assert.equal(parsed.records[3].segments.length, 2);
  const fullAt = frames.findIndex((f) => (f.head & 0x0f) === 3);
  refuses(joinFrames(header, [...frames.slice(0, fullAt + 1), frames[1], ...frames.slice(fullAt + 1)]), igpt.InvalidFieldError);
  refuses(joinFrames(header, frames.slice(0, fullAt + 1)), igpt.InvalidFieldError);
  refuses(joinFrames(header, [frames[fullAt + 1]]), igpt.InvalidFieldError);
});

test('decoder errors: missing model, wrong model, limits', async () => {
  await assert.rejects(igpt.decode(seed, {}), igpt.ModelMismatchError);
  await assert.rejects(igpt.decode(seed, { model: async () => null }), igpt.ModelMismatchError);
  const tiny = await tinyBundle();
  await assert.rejects(igpt.decode(readFileSync(path.join(GOLDEN, 'default_one_32.igpt')), { model: tiny }), igpt.ModelMismatchError);
  await assert.rejects(igpt.decode(seed, { model: tiny, limits: { maxTokens: 100 } }), igpt.DecodeLimitError);
  await assert.rejects(igpt.decode(seed, { model: tiny, limits: { maxImages: 3 } }), igpt.DecodeLimitError);
});

test('bundle: a file that fails its sha256 is refused', async () => {
  const dir = path.join(GOLDEN, 'model');
  const load = (name) => {
    const bytes = new Uint8Array(readFileSync(path.join(dir, name)));
    if (name === 'palette.npy') bytes[200] ^= 1;
    return Promise.resolve(bytes);
  };
  await assert.rejects(igpt.loadBundle(load, 'forged'), igpt.BundleError);
});
