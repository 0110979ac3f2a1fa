// A minimal PNG writer (RGB, 8 bits, no interlace) on node's zlib: no extra dependency.
import { deflateSync } from 'node:zlib';
import { crc32 } from './crc32.js';

function chunk(type, data) {
  const out = new Uint8Array(12 + data.length);
  const view = new DataView(out.buffer);
  view.setUint32(0, data.length);
  out.set(new TextEncoder().encode(type), 4);
  out.set(data, 8);
  view.setUint32(8 + data.length, crc32(out.subarray(4, 8 + data.length)));
  return out;
}

/** PNG bytes of an RGBA image, written as RGB (decoded images are opaque). */
export function encodePng(width, height, rgba, level = 6) {
  const raw = new Uint8Array(height * (1 + 3 * width));
  for (let y = 0; y < height; y++) {
    const row = y * (1 + 3 * width); // filter byte 0 (none), then the pixels
    for (let x = 0; x < width; x++) {
      const from = 4 * (y * width + x);
      raw.set(rgba.subarray(from, from + 3), row + 1 + 3 * x);
    }
  }
  const header = new Uint8Array(13);
  const view = new DataView(header.buffer);
  view.setUint32(0, width);
  view.setUint32(4, height);
  header.set([8, 2, 0, 0, 0], 8); // bit depth 8, colour type 2 (RGB)
  const parts = [
    Uint8Array.of(0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a),
    chunk('IHDR', header),
    chunk('IDAT', deflateSync(raw, { level })),
    chunk('IEND', new Uint8Array(0)),
  ];
  return Buffer.concat(parts);
}
