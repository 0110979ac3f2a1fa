// Frequency rows -> cumulative tables for the range decoder (exact: totals < 2^32).

/** Cumulative table (Float64Array(V + 1), leading 0) of `freqs[offset .. offset + V)`. */
export function cumulative(freqs, offset = 0, size = 512) {
  const cum = new Float64Array(size + 1);
  let total = 0;
  for (let s = 0; s < size; s++) {
    total += freqs[offset + s];
    cum[s + 1] = total;
  }
  return cum;
}
