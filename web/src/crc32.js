// CRC-32 as zlib computes it (reflected polynomial 0xEDB88320, init and final XOR
// 0xFFFFFFFF), with zlib's chaining: crc32(b, crc32(a)) === crc32(a ++ b).

const TABLE = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    table[n] = c >>> 0;
  }
  return table;
})();

/** zlib.crc32(bytes, previous): previous defaults to 0 (a fresh CRC). */
export function crc32(bytes, previous = 0) {
  let c = (previous ^ 0xffffffff) >>> 0;
  for (let i = 0; i < bytes.length; i++) c = TABLE[(c ^ bytes[i]) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

/** The tokens as uint16 little-endian bytes, the form the token checks hash. */
export function tokenBytes(tokens) {
  const out = new Uint8Array(tokens.length * 2);
  for (let i = 0; i < tokens.length; i++) {
    out[2 * i] = tokens[i] & 0xff;
    out[2 * i + 1] = tokens[i] >>> 8;
  }
  return out;
}
