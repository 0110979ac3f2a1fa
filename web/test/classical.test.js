// Kinds 5 and 6 (classical PNG records): decoded through the palette to tokens, split
// into parts past 2^20 bytes, and refused when malformed, resized or off-palette.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import * as igpt from '../src/index.js';
import { WEB, tinyBundle, splitFrames, joinFrames, classicalFrames } from '../support/helpers.js';

const seed = new Uint8Array(readFileSync(path.join(WEB, 'test', 'data', 'fuzz_seed.igpt')));
const { header } = splitFrames(seed);

function randomTokens(n, salt = 1) {
  const out = new Uint16Array(n);
  let x = salt;
  for (let i = 0; i < n; i++) {
    x = (Math.imul(x, 1103515245) + 12345) >>> 0;
    out[i] = (x >>> 16) % 512;
  }
  return out;
}

test('a PNG record decodes to its tokens', async () => {
  const model = await tinyBundle();
  const tokens = randomTokens(7 * 5);
  const { frames } = await classicalFrames(tokens, 7, 5, model);
  const { images, info } = await igpt.decode(joinFrames(header, frames), { model });
  assert.deepEqual(Array.from(images[0].tokens), Array.from(tokens));
  assert.equal(images[0].storedAs, 'PNG');
  assert.equal(info.records[0].codec, 'PNG');
});

test('a file over 2^20 bytes is cut into kind-6 parts and joined again', async () => {
  const model = await tinyBundle();
  const [width, height] = [620, 600]; // stored (zlib level 0): 1.1 MB
  const tokens = randomTokens(width * height, 7);
  const { frames, file } = await classicalFrames(tokens, width, height, model, { level: 0 });
  assert.ok(file.length > 2 ** 20 && frames.length === 2);
  const { images } = await igpt.decode(joinFrames(header, frames), { model });
  assert.deepEqual(images[0].tokens, tokens);
  // A part alone, a missing part, a part of the wrong length: InvalidFieldError.
  assert.throws(() => igpt.readStream(joinFrames(header, [frames[1]])), igpt.InvalidFieldError);
  assert.throws(() => igpt.readStream(joinFrames(header, [frames[0]])), igpt.InvalidFieldError);
  const short = { head: 0x06, body: frames[1].body.subarray(1) };
  assert.throws(() => igpt.readStream(joinFrames(header, [frames[0], short])), igpt.InvalidFieldError);
});

test('malformed, resized or off-palette PNG records are refused', async () => {
  const model = await tinyBundle();
  const tokens = randomTokens(4 * 4, 3);
  const { frames } = await classicalFrames(tokens, 4, 4, model);
  const body = frames[0].body;
  const fileAt = 6; // codec byte, width, height, file length (one byte each here), token check
  const forge = (edit) => {
    const copy = body.slice();
    edit(copy);
    return joinFrames(header, [{ head: 0x05, body: copy }]);
  };
  // The record says 4x5 while the PNG is 4x4.
  await assert.rejects(igpt.decode(forge((b) => { b[2] = 5; }), { model }), igpt.PayloadError);
  // A byte of the PNG's IHDR changed: its chunk CRC fails.
  await assert.rejects(igpt.decode(forge((b) => { b[fileAt + 20] ^= 1; }), { model }), igpt.PayloadError);
  // Reserved codec id.
  assert.throws(() => igpt.readStream(forge((b) => { b[0] = (b[0] & 0xf0) | 3; })), igpt.InvalidFieldError);
  // A pixel that is no palette colour: the PNG rebuilt from a shifted colour table.
  const shifted = { ...model, palette: model.palette.map((v) => Math.max(-1, v - 0.02)) };
  const odd = await classicalFrames(tokens, 4, 4, shifted);
  const oddBody = odd.frames[0].body.slice();
  oddBody.set(body.subarray(4, 6), 4); // the original token check: only the colours differ
  await assert.rejects(igpt.decode(joinFrames(header, [{ head: 0x05, body: oddBody }]), { model }), /PayloadError|TokenChecksumError|not a palette colour/);
});
