// Test helpers: golden paths, a bundle resolver, and a re-framer that rebuilds a stream
// with valid chained CRCs (so a fuzz case can forge a field behind a correct CRC).
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { concat } from '../src/checks.js';
import { crc32 } from '../src/crc32.js';
import { readVarint, encodeVarint } from '../src/varint.js';
import { bundleResolver, bundleFromDir } from '../src/node.js';

export const WEB = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
export const ROOT = path.resolve(WEB, '..');
export const GOLDEN = path.join(ROOT, 'tests', 'golden');
export const MODEL_DIRS = [path.join(GOLDEN, 'model'), path.join(GOLDEN, 'models'), path.join(ROOT, 'codec', 'models', 'default'), path.join(ROOT, 'codec', 'models')]; // then the earlier defaults shipped beside it
export const resolver = bundleResolver(MODEL_DIRS);
export const tinyBundle = () => bundleFromDir(path.join(GOLDEN, 'model'));
export const SPAN_MODEL_DIR = path.join(GOLDEN, 'models', '12f32c72c4a71c93'); // tiny, attention span 64
export const spanBundle = () => bundleFromDir(SPAN_MODEL_DIR);
export const readJson = (p) => JSON.parse(readFileSync(p, 'utf8'));

/** The frames of a well-formed stream: {head, body} each (body excludes R and the CRC). */
export function splitFrames(bytes) {
  const frames = [];
  let pos = 12;
  while (pos < bytes.length) {
    const head = bytes[pos];
    if (head & 0x80) {
      frames.push({ head, body: bytes.slice(pos + 1, bytes.length - 4) });
      break;
    }
    const r = readVarint(bytes, pos + 1, 2 ** 20 + 64, 'length');
    frames.push({ head, body: bytes.slice(r.next, r.next + r.value) });
    pos = r.next + r.value + 4;
  }
  return { header: bytes.slice(0, 12), frames };
}

/** A stream from a file header and frames, with lengths and chained CRCs recomputed;
 * FINAL is set on the last frame only. */
export function joinFrames(header, frames) {
  const parts = [header];
  let crc = crc32(header);
  frames.forEach((frame, i) => {
    const last = i === frames.length - 1;
    const head = Uint8Array.of(last ? frame.head | 0x80 : frame.head & 0x7f);
    const bytes = concat(last ? [head, frame.body] : [head, encodeVarint(frame.body.length), frame.body]);
    crc = crc32(bytes, crc);
    parts.push(bytes, Uint8Array.of(crc & 0xff, (crc >>> 8) & 0xff, (crc >>> 16) & 0xff, crc >>> 24));
  });
  return concat(parts);
}

/**
 * The frames of a kind-5 record (and its kind-6 parts) holding `tokens` as a PNG, for tests:
 * RGB, filter 0, zlib at `level` (0 stores: a large file for a multi-part record).
 */
export async function classicalFrames(tokens, width, height, bundle, { level = 9, mode = 0 } = {}) {
  const { colourTable, tokensToRgba } = await import('../src/palette.js');
  const { encodePng } = await import('../src/png.js');
  const { thumbnailCheck } = await import('../src/checks.js');
  const rgba = tokensToRgba(tokens, colourTable(bundle.palette));
  const file = new Uint8Array(encodePng(width, height, rgba, level));
  const body = concat([Uint8Array.of(1 | (mode << 6)), encodeVarint(width), encodeVarint(height), encodeVarint(file.length)]);
  const record = { head: 0x05, fingerprint: bundle.fingerprint, headerBody: body };
  const check = thumbnailCheck(record, tokens);
  const part = 2 ** 20;
  const frames = [{ head: 0x05, body: concat([body, Uint8Array.of(check & 0xff, check >> 8), file.subarray(0, part)]) }];
  for (let at = part; at < file.length; at += part) frames.push({ head: 0x06, body: file.slice(at, at + part) });
  return { frames, file };
}
