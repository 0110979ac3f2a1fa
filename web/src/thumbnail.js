// Kind 1: a batch of thumbnail records of one side decoded together, token by token,
// each row re-encoded to prove its payload canonical, then its token check.
import { PayloadError, TokenChecksumError } from './errors.js';
import { RangeDecoder, RangeEncoder, sameBytes } from './rangecoder.js';
import { Stepper, SOS, VOCAB, thumbnailPositions } from './model.js';
import { cumulative } from './tables.js';
import { thumbnailCheck } from './checks.js';

/**
 * Decode `records` (same side) with one stepper; `onTokens(n)` reports progress.
 * The table for token t comes from the step fed token t-1 (SOS for t = 0) at position
 * pos[t]. Returns an array of Uint16Array tokens, one per record.
 */
export async function decodeThumbnails(bundle, session, records, onTokens) {
  const rows = records.length;
  const side = records[0].side;
  const steps = side * side;
  const positions = thumbnailPositions(side, bundle.layout, bundle.grid);
  const decoders = records.map((r) => new RangeDecoder(r.payload));
  const shadows = records.map(() => new RangeEncoder());
  const tokens = records.map(() => new Uint16Array(steps));
  const stepper = new Stepper(bundle, session, rows);
  const feed = new Int32Array(rows).fill(SOS);
  for (let t = 0; t < steps; t++) {
    const freqs = await stepper.run(feed, positions.subarray(t, t + 1));
    for (let row = 0; row < rows; row++) {
      const { symbol, low, high, total } = decoders[row].decode(cumulative(freqs, row * VOCAB));
      shadows[row].encode(low, high, total);
      tokens[row][t] = symbol;
      feed[row] = symbol;
    }
    await onTokens(rows);
  }
  records.forEach((record, row) => {
    if (!sameBytes(shadows[row].finish(), record.payload)) {
      throw new PayloadError(`record ${record.index}: the payload is not the encoder's canonical output for the tokens it decodes to (bytes changed or appended)`);
    }
    if (thumbnailCheck(record, tokens[row]) !== record.tokenCheck) {
      throw new TokenChecksumError(`record ${record.index}: the decoded tokens fail the record's token check: the record is damaged, or the model computes other numbers than the encoder's`);
    }
  });
  return tokens;
}
