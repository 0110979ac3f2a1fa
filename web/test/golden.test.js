// Every golden stream decodes to its committed tokens (tests/golden/expected.json), and
// its pixels hash to what the Python decoder writes (web/test/reference/python_pixels.json,
// made by scripts/make_reference.py); full-resolution records included.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import path from 'node:path';
import { decode, readStream, MissingCodecError } from '../src/index.js';
import { GOLDEN, WEB, resolver, readJson, splitFrames, joinFrames } from '../support/helpers.js';

const expected = readJson(path.join(GOLDEN, 'expected.json'));
const pythonPixels = readJson(path.join(WEB, 'test', 'reference', 'python_pixels.json'));

function rgbHash(image) {
  const rgb = Buffer.alloc(image.width * image.height * 3);
  for (let i = 0; i < image.width * image.height; i++) {
    rgb[3 * i] = image.rgba[4 * i];
    rgb[3 * i + 1] = image.rgba[4 * i + 1];
    rgb[3 * i + 2] = image.rgba[4 * i + 2];
  }
  return createHash('sha256').update(rgb).digest('hex');
}

/**
 * Node has no WebP decoder (the browser check decodes those records): a file holding a
 * WebP record must fail with MissingCodecError, and the rest of its records are checked
 * in a stream re-framed without them (their token checks do not depend on position).
 */
function withoutWebp(bytes) {
  const { records } = readStream(bytes);
  const webp = records.map((r) => r.type === 'classical' && r.codec === 2);
  if (!webp.includes(true)) return { bytes, kept: records.map((_, i) => i) };
  const { header, frames } = splitFrames(bytes);
  // Frames grouped by record: a name (2) joins the next image; segments (4) and parts (6)
  // join the image before them.
  const groups = [];
  let pending = [];
  for (const frame of frames) {
    const kind = frame.head & 0x0f;
    if (kind === 2) pending.push(frame);
    else if (kind === 4 || kind === 6) groups[groups.length - 1].push(frame);
    else {
      groups.push([...pending, frame]);
      pending = [];
    }
  }
  assert.equal(groups.length, records.length);
  const kept = records.map((_, i) => i).filter((i) => !webp[i]);
  return { bytes: joinFrames(header, kept.flatMap((i) => groups[i])), kept };
}

for (const [name, entry] of Object.entries(expected)) {
  test(`golden ${name} decodes to its committed tokens and Python's pixels`, async () => {
    const original = readFileSync(path.join(GOLDEN, name));
    const { bytes, kept } = withoutWebp(new Uint8Array(original));
    if (bytes !== original && kept.length !== entry.records.length) {
      await assert.rejects(decode(original, { model: resolver }), MissingCodecError);
    }
    const { images, info } = await decode(bytes, { model: resolver });
    if (kept.length === entry.records.length) assert.equal(info.stream_bytes, entry.bytes);
    assert.equal(images.length, kept.length);
    images.forEach((image, j) => {
      const i = kept[j];
      const want = entry.records[i];
      assert.deepEqual(Array.from(image.tokens), want.tokens.flat(), `${name} image ${i} tokens`);
      assert.equal(image.kind === 'full', Boolean(want.full), `${name} image ${i} kind`);
      assert.deepEqual([image.originalWidth, image.originalHeight], want.size);
      assert.equal(image.mode, want.mode);
      if (!want.full) assert.equal(image.side, want.side);
      const py = pythonPixels[name]?.[i];
      if (!py) return; // newer than the Python reference data: the tokens decide (and the browser check)
      assert.deepEqual([image.width, image.height], [py.width, py.height]);
      assert.equal(rgbHash(image), py.rgb_sha256, `${name} image ${i} pixels differ from Python's`);
    });
  });
}

test('concatenated streams (tests/golden/concatenated/two_streams.igpt): each under its own model', async () => {
  const bytes = readFileSync(path.join(GOLDEN, 'concatenated', 'two_streams.igpt'));
  const { images } = await decode(bytes, { model: resolver });
  const want = [...expected['tiny_one_24.igpt'].records, ...expected['default_one_32.igpt'].records];
  assert.deepEqual(images.map((im) => Array.from(im.tokens)), want.map((r) => r.tokens.flat()));
  // The magic and garbage after a stream is a damaged second stream, not extra images.
  const tail = Buffer.concat([readFileSync(path.join(GOLDEN, 'tiny_one_24.igpt')), Buffer.from([0x89, 0x49, 0x47, 2, 1, 2, 3])]);
  await assert.rejects(decode(tail, { model: resolver }), /./);
});
