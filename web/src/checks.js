// Token checks (format/SPEC.md "Token check", "Segment token check"): low 16 bits of
// crc32(tokens as uint16 LE, crc32(claims)).
import { crc32, tokenBytes } from './crc32.js';
import { encodeVarint } from './varint.js';

/** The byte arrays `parts`, joined into one. */
export function concat(parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** Check of a thumbnail record: claims = head without FINAL, fingerprint, header body. */
export function thumbnailCheck(record, tokens) {
  const claims = concat([Uint8Array.of(record.head & 0x7f), record.fingerprint, record.headerBody]);
  return crc32(tokenBytes(tokens), crc32(claims)) & 0xffff;
}

/**
 * The running CRC of segment `index` of a full-resolution image, fed band by band: the
 * segment token check is its low 16 bits after every band, band check k (BAND_CHECKS) its
 * low 8 bits after band k. Claims add the segment's index to the thumbnail's.
 */
export class SegmentCheck {
  constructor(record, segment, index) {
    const claims = concat([Uint8Array.of(segment.head & 0x7f), record.fingerprint, record.headerBody, encodeVarint(index)]);
    this.crc = crc32(claims);
  }

  add(tokens) {
    this.crc = crc32(tokenBytes(tokens), this.crc);
    return this;
  }

  get value() {
    return this.crc & 0xffff;
  }

  get bandValue() {
    return this.crc & 0xff;
  }
}

/** Check of segment `index` of a full-resolution image over all its tokens at once. */
export function segmentCheck(record, segment, index, tokens) {
  return new SegmentCheck(record, segment, index).add(tokens).value;
}
