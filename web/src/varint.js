// Minimal, bounded LEB128 varints (format/SPEC.md "Varints").
import { InvalidFieldError, LengthOutOfRangeError, TruncatedError } from './errors.js';

function bitLength(n) {
  return n === 0 ? 0 : Math.floor(Math.log2(n)) + 1;
}

/**
 * Read the varint at bytes[pos] whose largest valid value is `limit`.
 * Returns {value, next}. A value over the limit raises `tooLarge` (an error class);
 * a non-minimal encoding raises InvalidFieldError unless `deferMinimal` asks for the
 * flag back instead (the record length's minimality is checked after the CRC).
 */
export function readVarint(bytes, pos, limit, what, end = bytes.length, tooLarge = InvalidFieldError, deferMinimal = false) {
  const maxBytes = Math.max(1, Math.ceil(bitLength(limit) / 7));
  let value = 0;
  for (let i = 0; i < maxBytes; i++) {
    if (pos + i >= end) throw new TruncatedError(`truncated stream: the ${what} is cut`);
    const byte = bytes[pos + i];
    value += (byte & 0x7f) * 2 ** (7 * i);
    if (!(byte & 0x80)) {
      if (value > limit) throw new tooLarge(`${what} ${value} exceeds its limit ${limit}`);
      const minimal = i === 0 || byte !== 0;
      if (!minimal && !deferMinimal) throw new InvalidFieldError(`${what} is not minimally encoded`);
      return { value, next: pos + i + 1, minimal };
    }
  }
  throw new tooLarge(`${what} takes more than ${maxBytes} bytes (limit ${limit})`);
}

/** The varint bytes of a non-negative integer (used to hash a segment's index). */
export function encodeVarint(value) {
  const out = [];
  do {
    let byte = value % 128;
    value = Math.floor(value / 128);
    if (value > 0) byte |= 0x80;
    out.push(byte);
  } while (value > 0);
  return Uint8Array.from(out);
}
