// The integer range decoder of format/SPEC.md "Payload", and the encoder half a decoder
// needs to prove the payload canonical (it re-encodes what it decodes and compares).
// 56-bit window: BigInt, because low, range and u*l exceed 2^53.
import { PayloadError } from './errors.js';

const PRECISION = 56n;
const TOP = 1n << PRECISION;
const BOTTOM = 1n << (PRECISION - 8n);
const SHIFT = PRECISION - 8n;
const LOW_MASK = BOTTOM - 1n;
const WINDOW_BYTES = 7;
export const MAX_TOTAL = 2 ** 32;

/** Index of the symbol whose [cum[s], cum[s+1]) holds target (cum[0] = 0, ascending). */
function findSymbol(cum, target) {
  let lo = 0;
  let hi = cum.length - 2;
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1;
    if (cum[mid] <= target) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

export class RangeDecoder {
  constructor(payload) {
    this.data = payload;
    this.pos = WINDOW_BYTES;
    let code = 0n;
    for (let i = 0; i < WINDOW_BYTES; i++) code = (code << 8n) | BigInt(i < payload.length ? payload[i] : 0);
    this.code = code;
    this.range = TOP;
  }

  /** Decode one symbol under a cumulative table (Float64Array of V+1 exact integers). */
  decode(cum) {
    const total = cum[cum.length - 1];
    if (!(total >= 1 && total <= MAX_TOTAL)) throw new PayloadError(`frequency total ${total} outside 1..2^32`);
    const T = BigInt(total);
    const unit = this.range / T;
    let target = this.code / unit;
    if (target >= T) target = T - 1n;
    const symbol = findSymbol(cum, Number(target));
    const low = cum[symbol];
    const high = cum[symbol + 1];
    const L = BigInt(low);
    this.code -= unit * L;
    let range = high < total ? unit * BigInt(high - low) : this.range - unit * L;
    while (range <= BOTTOM) {
      const byte = this.pos < this.data.length ? this.data[this.pos] : 0;
      this.code = (this.code << 8n) | BigInt(byte);
      this.pos++;
      range <<= 8n;
    }
    this.range = range;
    return { symbol, low, high, total };
  }
}

export class RangeEncoder {
  constructor() {
    this.low = 0n;
    this.range = TOP;
    this.out = [];
  }

  /** Code the interval [low, high) of a table summing to total. */
  encode(low, high, total) {
    const unit = this.range / BigInt(total);
    let x = this.low + unit * BigInt(low);
    let range = high < total ? unit * BigInt(high - low) : this.range - unit * BigInt(low);
    if (x >= TOP) {
      x -= TOP;
      this.carry();
    }
    while (range <= BOTTOM) {
      this.out.push(Number(x >> SHIFT));
      x = (x & LOW_MASK) << 8n;
      range <<= 8n;
    }
    this.low = x;
    this.range = range;
  }

  carry() {
    let i = this.out.length - 1;
    while (i >= 0 && this.out[i] === 0xff) this.out[i--] = 0;
    if (i < 0) throw new PayloadError('range coder carry ran past the start of the output');
    this.out[i]++;
  }

  /** The canonical payload: the value with the fewest significant bits in the final
   * interval [low, low + range), written out, trailing zero bytes dropped. */
  finish() {
    const low = this.low;
    const end = low + this.range;
    let value = 0n;
    for (let shift = PRECISION; shift >= 0n; shift--) {
      const step = 1n << shift;
      value = ((low + step - 1n) >> shift) << shift;
      if (value < end) break;
    }
    if (value >= TOP) {
      value -= TOP;
      this.carry();
    }
    const out = this.out.slice();
    for (let i = WINDOW_BYTES - 1; i >= 0; i--) out.push(Number((value >> BigInt(8 * i)) & 0xffn));
    let n = out.length;
    while (n && out[n - 1] === 0) n--;
    return Uint8Array.from(out.slice(0, n));
  }
}

/** True when two byte arrays are equal. */
export function sameBytes(a, b) {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}
