// Linear levels (format/SPEC.md "Linear levels", kind 3's features bit 1 `LINEAR`;
// codec/core/linear.py): coding 2's three levels without their per-level roundings are
// linear in their inputs, so a cell's table is one weighted sum of four vectors, the model's
// table f and the three contexts' counts c_0, c_1, c_2, with per-cell integer coefficients:
//
//     t[s] = max(1, (a_f f[s] + a_0 c_0[s] + a_1 c_1[s] + a_2 c_2[s]) >> 22)
//
// One pass over the 512 symbols instead of three levels that each divide and round a table.
// The state, contexts, capacity, halving and weight update are coding 2's (adaptive.js's
// contexts() and learn()); only the table and the per-level values the update learns from
// (scalar formulas at the coded symbol) differ. In JS numbers:
//
// - each term of the sum is an integer <= 2^44 and the sum is below 2^46 (SPEC's bounds), so
//   float64 adds them exactly in any order, and `>> 22` is Math.floor(sum / 2^22);
// - the coefficients' products reach 2^62 (alpha_2 beta_1, a_12 beta_0): mulShift22 splits the
//   larger factor so that no partial product passes 2^53; every other numerator is below 2^53,
//   where Math.floor(a / d) is exact;
// - the update's `(w (r - q)) >> 12` may be negative: Math.floor floors, as Python's >> does.

import { AdaptiveMixer, exactFloorDiv, SCALE, WEIGHT_ONE } from './adaptive.js';

const LEVELS = 3;
const TWO_32 = 2 ** 32;

/**
 * floor(x * y / 2^22) exactly, for integers 0 <= x < 2^31 and 0 <= y < 2^44 (whose product
 * may pass 2^53): with y = hi 2^22 + lo, x hi 2^22 is a multiple of 2^22, so the result is
 * x hi + floor(x lo / 2^22), and x hi < 2^53, x lo < 2^53.
 */
export function mulShift22(x, y) {
  const hi = Math.floor(y / SCALE);
  const lo = y - hi * SCALE;
  return x * hi + Math.floor((x * lo) / SCALE);
}

/**
 * The coefficients [a_f, a_0, a_1, a_2] of one cell (SPEC.md "Linear levels", floored in its
 * order), from F (the model table's total, 1..2^32 - 1) and per level l its count total
 * n[l], D[l] = n[l] + k[l] (>= 16) and weight w[l] (0..4096). Bounds: alpha <= 2^22 (numerator
 * below 2^46 for D < 2^19), beta <= 2^40, a_12 <= 2^22, a_f <= 2^44 / F.
 */
export function coefficients(F, n, D, w) {
  const alpha = [0, 0, 0];
  const beta = [0, 0, 0];
  for (let l = 0; l < LEVELS; l++) {
    const unit = WEIGHT_ONE * D[l];
    alpha[l] = Math.floor(((unit - w[l] * n[l]) * SCALE) / unit);
    beta[l] = Math.floor((w[l] * TWO_32) / D[l]);
  }
  const a12 = Math.floor((alpha[2] * alpha[1]) / SCALE);
  const af = Math.floor((Math.floor((a12 * alpha[0]) / SCALE) * SCALE) / F);
  return [af, mulShift22(a12, beta[0]), mulShift22(alpha[2], beta[1]), beta[2]];
}

/**
 * The table of one cell: f the model's table, counts [c_0, c_1, c_2] (512 each, or null for
 * an empty context: it adds nothing, so it is skipped), coeffs from coefficients().
 */
export function linearTable(f, counts, coeffs, out = new Float64Array(512)) {
  const af = coeffs[0];
  for (let s = 0; s < 512; s++) out[s] = af * f[s];
  for (let l = 0; l < LEVELS; l++) {
    const a = coeffs[l + 1];
    const c = counts[l];
    if (c === null || a === 0) continue;
    for (let s = 0; s < 512; s++) out[s] += a * c[s];
  }
  for (let s = 0; s < 512; s++) {
    const t = Math.floor(out[s] / SCALE);
    out[s] = t < 1 ? 1 : t;
  }
  return out;
}

/** Coding 2's state and update, its table as one linear combination (the kind-3 LINEAR feature). */
export class LinearMixer extends AdaptiveMixer {
  /**
   * Tables for one step (same arguments as AdaptiveMixer.tables): Float64Array(512) each,
   * entries >= 1, totals <= 2^22 + 512. Returns {tables, step}; pass step to update().
   */
  tables(modelTables, neighbours) {
    const cells = this.contexts(modelTables, neighbours);
    const tables = cells.map(({ f, F, levels }) => {
      const D = levels.map(({ n, k }) => n + k);
      const coeffs = coefficients(F, levels.map(({ n }) => n), D, levels.map(({ weight }) => weight));
      return linearTable(f, levels.map(({ entry, n }) => (n === 0 ? null : entry.counts)), coeffs);
    });
    return { tables, step: cells };
  }

  /**
   * Learn the step's tokens: each level's q, r and m at the coded symbol x from SPEC.md's
   * scalar formulas (state and weights as they were before the step, which is how they still
   * are: nothing changes them between tables() and update()), then coding 2's update.
   */
  update(step, symbols) {
    const values = step.map(({ f, F, levels }, i) => {
      const x = symbols[i];
      let q = Math.max(1, exactFloorDiv(f[x], F)); // f[x] 2^22 may pass 2^53 when F nears 2^32
      return levels.map(({ entry, n, k, bucket, weight }) => {
        const r = Math.max(1, Math.floor((entry.counts[x] * SCALE + k * q) / (n + k)));
        const m = q + Math.floor((weight * (r - q)) / WEIGHT_ONE);
        const value = { entry, bucket, q, r, m };
        q = m;
        return value;
      });
    });
    this.learn(values, symbols);
  }
}
