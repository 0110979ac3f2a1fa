// palette.npy (512 x 3 float32 clusters in [-1, 1]) and token -> colour, as ImageGPT
// maps them: rint(127.5 * (c + 1)) computed in float32, rounded half to even.
import { BundleError } from './errors.js';

/** Parse a little-endian float32 or float64 .npy of shape (512, 3) into a Float32Array. */
export function readPalette(bytes) {
  const magic = [0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59];
  if (bytes.length < 10 || !magic.every((b, i) => bytes[i] === b)) throw new BundleError('palette.npy is not a .npy file');
  const major = bytes[6];
  const headerLen = major === 1 ? bytes[8] | (bytes[9] << 8) : bytes[8] | (bytes[9] << 8) | (bytes[10] << 16) | (bytes[11] << 24);
  const start = major === 1 ? 10 : 12;
  const header = new TextDecoder('latin1').decode(bytes.subarray(start, start + headerLen));
  const descr = /'descr':\s*'([^']+)'/.exec(header)?.[1];
  const shape = /'shape':\s*\((\d+),\s*(\d+)\)/.exec(header);
  if (/'fortran_order':\s*True/.test(header) || !shape || +shape[1] !== 512 || +shape[2] !== 3) {
    throw new BundleError('palette.npy must be a C-order (512, 3) array');
  }
  const data = bytes.slice(start + headerLen);
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  const out = new Float32Array(512 * 3);
  const size = descr === '<f4' ? 4 : descr === '<f8' ? 8 : 0;
  if (!size || data.byteLength < out.length * size) throw new BundleError(`palette.npy dtype ${descr} is not float32/float64`);
  for (let i = 0; i < out.length; i++) out[i] = size === 4 ? view.getFloat32(4 * i, true) : view.getFloat64(8 * i, true);
  if (out.some((v) => !Number.isFinite(v) || Math.abs(v) > 1)) throw new BundleError('palette values must lie in [-1, 1]');
  return out;
}

function roundHalfEven(x) {
  const f = Math.floor(x);
  const diff = x - f;
  if (diff < 0.5) return f;
  if (diff > 0.5) return f + 1;
  return f % 2 === 0 ? f : f + 1;
}

/** 512 x 3 bytes: the colour of each token. */
export function colourTable(palette) {
  const out = new Uint8Array(512 * 3);
  for (let i = 0; i < out.length; i++) {
    const value = roundHalfEven(Math.fround(127.5 * Math.fround(palette[i] + 1)));
    out[i] = Math.min(255, Math.max(0, value));
  }
  return out;
}

/** Tokens (raster order) -> RGBA bytes, alpha 255. */
export function tokensToRgba(tokens, colours) {
  const out = new Uint8ClampedArray(tokens.length * 4);
  for (let i = 0; i < tokens.length; i++) {
    const t = tokens[i] * 3;
    out[4 * i] = colours[t];
    out[4 * i + 1] = colours[t + 1];
    out[4 * i + 2] = colours[t + 2];
    out[4 * i + 3] = 255;
  }
  return out;
}
