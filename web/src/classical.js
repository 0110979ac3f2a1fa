// Kinds 5 and 6: an image stored as a PNG or lossless WebP file of its palette colours
// (SPEC.md "Kinds 5 and 6"). The file's structure and size are checked before any pixel
// is decoded (no decompression bombs); then every pixel maps back to its palette token
// and the token check must hold. PNG is decoded here (DecompressionStream, in Node and
// browsers); WebP needs the caller's decoder (a page: createImageBitmap), else it is a
// MissingCodecError.
import { crc32 } from './crc32.js';
import { MissingCodecError, PayloadError, TokenChecksumError } from './errors.js';
import { thumbnailCheck } from './checks.js';

const PNG_SIGNATURE = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];
const u32be = (b, at) => ((b[at] << 24) | (b[at + 1] << 16) | (b[at + 2] << 8) | b[at + 3]) >>> 0;
const u32le = (b, at) => (b[at] | (b[at + 1] << 8) | (b[at + 2] << 16) | (b[at + 3] << 24)) >>> 0;
const ascii = (b, at, n) => String.fromCharCode(...b.subarray(at, at + n));

/** The PNG's chunks, checked against the SPEC's rules; returns {ihdr, plte, idat}. */
function pngStructure(file, width, height) {
  if (!PNG_SIGNATURE.every((v, i) => file[i] === v)) throw new PayloadError('embedded PNG: bad signature');
  const chunks = [];
  for (let at = 8; at < file.length;) {
    if (at + 12 > file.length) throw new PayloadError('embedded PNG: a chunk is cut');
    const length = u32be(file, at);
    if (length > file.length - at - 12) throw new PayloadError('embedded PNG: a chunk runs past the file');
    const type = ascii(file, at + 4, 4);
    if (crc32(file.subarray(at + 4, at + 8 + length)) !== u32be(file, at + 8 + length)) throw new PayloadError(`embedded PNG: ${type} chunk CRC mismatch`);
    chunks.push({ type, data: file.subarray(at + 8, at + 8 + length) });
    at += 12 + length;
  }
  const types = chunks.map((c) => c.type);
  if (types[0] !== 'IHDR' || types[types.length - 1] !== 'IEND' || types.filter((t) => t === 'IEND').length !== 1) throw new PayloadError('embedded PNG: IHDR must come first and IEND last');
  if (types.some((t) => !['IHDR', 'PLTE', 'IDAT', 'IEND'].includes(t)) || types.filter((t) => t === 'IHDR').length !== 1) throw new PayloadError('embedded PNG: a chunk the format does not allow');
  const ihdr = chunks[0].data;
  if (ihdr.length !== 13) throw new PayloadError('embedded PNG: IHDR of the wrong length');
  const info = { width: u32be(ihdr, 0), height: u32be(ihdr, 4), depth: ihdr[8], colour: ihdr[9], interlace: ihdr[12] };
  if (info.width !== width || info.height !== height) throw new PayloadError(`embedded PNG is ${info.width}x${info.height}, the record says ${width}x${height}`);
  const typeOk = (info.colour === 2 && info.depth === 8) || (info.colour === 3 && [1, 2, 4, 8].includes(info.depth));
  if (!typeOk || ihdr[10] !== 0 || ihdr[11] !== 0 || info.interlace > 1) throw new PayloadError('embedded PNG: colour type, depth, compression, filter or interlace not allowed');
  const plteAt = types.indexOf('PLTE');
  const firstIdat = types.indexOf('IDAT');
  const plteCount = types.filter((t) => t === 'PLTE').length;
  if (firstIdat < 0 || (info.colour === 3) !== (plteCount === 1) || plteCount > 1 || (plteAt >= 0 && plteAt > firstIdat)) throw new PayloadError('embedded PNG: PLTE or IDAT misplaced');
  const lastIdat = types.lastIndexOf('IDAT');
  if (types.slice(firstIdat, lastIdat + 1).some((t) => t !== 'IDAT')) throw new PayloadError('embedded PNG: IDAT chunks are not consecutive');
  const plte = plteAt >= 0 ? chunks[plteAt].data : null;
  if (plte && (plte.length % 3 !== 0 || plte.length === 0 || plte.length > 768)) throw new PayloadError('embedded PNG: PLTE of a bad length');
  const idat = chunks.filter((c) => c.type === 'IDAT').map((c) => c.data);
  return { info, plte, idat };
}

/** The WebP header checks of the SPEC (simple lossless format, sizes). */
function webpStructure(file, width, height) {
  const L = file.length;
  if (L < 25 || ascii(file, 0, 4) !== 'RIFF' || u32le(file, 4) !== L - 8 || ascii(file, 8, 4) !== 'WEBP' || ascii(file, 12, 4) !== 'VP8L') throw new PayloadError('embedded WebP: not a simple lossless WebP');
  const n = u32le(file, 16);
  if (20 + n + (n % 2) !== L || (n % 2 === 1 && file[L - 1] !== 0)) throw new PayloadError('embedded WebP: chunk size does not match the file');
  if (file[20] !== 0x2f) throw new PayloadError('embedded WebP: bad VP8L signature');
  const bits = u32le(file, 21);
  const w = (bits & 0x3fff) + 1;
  const h = ((bits >>> 14) & 0x3fff) + 1;
  if ((bits >>> 28) & 1 || bits >>> 29) throw new PayloadError('embedded WebP: alpha bit or version set');
  if (w !== width || h !== height) throw new PayloadError(`embedded WebP is ${w}x${h}, the record says ${width}x${height}`);
}

async function inflate(parts) {
  const stream = new Blob(parts).stream().pipeThrough(new DecompressionStream('deflate'));
  try {
    return new Uint8Array(await new Response(stream).arrayBuffer());
  } catch {
    throw new PayloadError('embedded PNG: its image data does not inflate');
  }
}

function paeth(a, b, c) {
  const p = a + b - c;
  const pa = Math.abs(p - a);
  const pb = Math.abs(p - b);
  const pc = Math.abs(p - c);
  return pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
}

const ADAM7 = [[0, 0, 8, 8], [4, 0, 8, 8], [0, 4, 4, 8], [2, 0, 4, 4], [0, 2, 2, 4], [1, 0, 2, 2], [0, 1, 1, 2]];

/** PNG -> RGB bytes (W x H x 3). */
async function decodePng(file, width, height) {
  const { info, plte, idat } = pngStructure(file, width, height);
  const data = await inflate(idat);
  const bitsPerPixel = info.colour === 2 ? 24 : info.depth;
  const bpp = Math.max(1, bitsPerPixel >> 3); // bytes a filter looks back
  const rgb = new Uint8Array(width * height * 3);
  const passes = info.interlace ? ADAM7 : [[0, 0, 1, 1]];
  let at = 0;
  for (const [x0, y0, dx, dy] of passes) {
    const pw = Math.ceil((width - x0) / dx);
    const ph = Math.ceil((height - y0) / dy);
    if (pw <= 0 || ph <= 0) continue;
    const stride = Math.ceil((pw * bitsPerPixel) / 8);
    let previous = new Uint8Array(stride);
    for (let y = 0; y < ph; y++) {
      if (at + 1 + stride > data.length) throw new PayloadError('embedded PNG: image data is short');
      const filter = data[at];
      const line = data.slice(at + 1, at + 1 + stride);
      at += 1 + stride;
      for (let i = 0; i < stride; i++) {
        const a = i >= bpp ? line[i - bpp] : 0;
        const b = previous[i];
        const c = i >= bpp ? previous[i - bpp] : 0;
        if (filter === 1) line[i] = (line[i] + a) & 0xff;
        else if (filter === 2) line[i] = (line[i] + b) & 0xff;
        else if (filter === 3) line[i] = (line[i] + ((a + b) >> 1)) & 0xff;
        else if (filter === 4) line[i] = (line[i] + paeth(a, b, c)) & 0xff;
        else if (filter !== 0) throw new PayloadError(`embedded PNG: filter ${filter}`);
      }
      previous = line;
      for (let x = 0; x < pw; x++) {
        const out = 3 * ((y0 + y * dy) * width + x0 + x * dx);
        if (info.colour === 2) {
          rgb.set(line.subarray(3 * x, 3 * x + 3), out);
        } else {
          const bit = x * info.depth;
          const index = (line[bit >> 3] >> (8 - info.depth - (bit & 7))) & ((1 << info.depth) - 1);
          if (3 * index + 3 > plte.length) throw new PayloadError('embedded PNG: a pixel indexes past its palette');
          rgb.set(plte.subarray(3 * index, 3 * index + 3), out);
        }
      }
    }
  }
  if (at !== data.length) throw new PayloadError('embedded PNG: image data has bytes left over');
  return rgb;
}

/**
 * Tokens (Uint16Array, raster order) of a kind-5 record. `colours`: the bundle's 512 x 3
 * colour table. `decodeWebp(file, width, height)` -> RGBA bytes, when the host has one.
 */
export async function decodeClassical(record, colours, decodeWebp) {
  const file = new Uint8Array(record.fileLength);
  let at = 0;
  for (const part of record.parts) {
    file.set(part, at);
    at += part.length;
  }
  const { width, height } = record;
  let pixels;
  let step;
  if (record.codec === 1) {
    pixels = await decodePng(file, width, height);
    step = 3;
  } else {
    webpStructure(file, width, height);
    if (!decodeWebp) throw new MissingCodecError(`record ${record.index}: this stream holds a WebP-coded image and this decoder has no WebP support (a browser has)`);
    pixels = await decodeWebp(file, width, height);
    step = 4;
  }
  const tokenOf = new Map();
  for (let t = 511; t >= 0; t--) tokenOf.set((colours[3 * t] << 16) | (colours[3 * t + 1] << 8) | colours[3 * t + 2], t); // lowest token wins
  const tokens = new Uint16Array(width * height);
  for (let i = 0; i < tokens.length; i++) {
    const token = tokenOf.get((pixels[step * i] << 16) | (pixels[step * i + 1] << 8) | pixels[step * i + 2]);
    if (token === undefined) throw new PayloadError(`record ${record.index}: pixel ${i} is not a palette colour`);
    tokens[i] = token;
  }
  if (thumbnailCheck(record, tokens) !== record.tokenCheck) {
    throw new TokenChecksumError(`record ${record.index}: the decoded tokens fail the record's token check: the record is damaged`);
  }
  return tokens;
}
