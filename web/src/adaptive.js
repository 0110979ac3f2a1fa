// Coding 2: the model's table refined by the image's own context counts, in three
// levels (format/SPEC.md "Coding 2: adaptive context mixing"). Integer arithmetic
// only; every intermediate value here stays below 2^53, so JS numbers are exact
// (see exactFloorDiv for the one product that would not be).

const LEVELS = 3;
const BUCKETS = 10;
const WEIGHT_ONE = 4096;
const COUNT_LIMIT = 1023;
const CAPACITY = 16384;
const OUTSIDE = 512;
const SCALE = 2 ** 22;

/** floor(a * 2^22 / d) for 0 <= a < 2^35, 1 <= d < 2^40, exactly: split 2^22 = 2^11 * 2^11 so
 * no product reaches 2^53. Math.floor(x / y) is exact for integers x < 2^53. */
function exactFloorDiv(a, d) {
  const a1 = a * 2048;
  let q1 = Math.floor(a1 / d);
  let r1 = a1 - q1 * d;
  const q2 = Math.floor((r1 * 2048) / d);
  return q1 * 2048 + q2;
}

function bitLength(n) {
  return n === 0 ? 0 : 32 - Math.clz32(n);
}

class Level {
  constructor(limited) {
    this.limited = limited; // levels 1 and 2 forget everything when they fill up
    this.contexts = new Map(); // ctx -> {counts: Int32Array(512), total, distinct}
    this.weights = new Float64Array(BUCKETS).fill(WEIGHT_ONE);
  }

  lookup(ctx) {
    let entry = this.contexts.get(ctx);
    if (!entry) {
      entry = { counts: new Int32Array(512), total: 0, distinct: 0 };
      this.contexts.set(ctx, entry);
    }
    return entry;
  }
}

/** The mixer state of one chain (carried from band to band). */
export class AdaptiveMixer {
  constructor() {
    this.levels = [new Level(false), new Level(true), new Level(true)];
  }

  /**
   * Tables for one step. `modelTables`: array of Int32Array(512) (the model's, coding 0),
   * `neighbours`: array of [W, N, NW, NE] per cell. Returns {tables, step}: the final
   * tables (Float64Array(512) each) and what update() needs.
   */
  tables(modelTables, neighbours) {
    const batch = modelTables.length;
    for (const level of this.levels) {
      if (level.limited && level.contexts.size > CAPACITY - batch) level.contexts.clear();
    }
    const cells = [];
    const finals = [];
    for (let i = 0; i < batch; i++) {
      const f = modelTables[i];
      const [w, n, nw, ne] = neighbours[i];
      let best = 0;
      let F = 0;
      for (let s = 0; s < 512; s++) {
        F += f[s];
        if (f[s] > f[best]) best = s;
      }
      const ctx1 = w * 513 + n;
      const keys = [best, ctx1, ((ctx1 * 513 + nw) * 513) + ne];
      let q = new Float64Array(512);
      for (let s = 0; s < 512; s++) q[s] = Math.max(1, Math.floor((f[s] * SCALE) / F));
      const perLevel = [];
      for (let l = 0; l < LEVELS; l++) {
        const level = this.levels[l];
        const entry = level.lookup(keys[l]);
        const c = entry.counts;
        const nTotal = entry.total;
        const k = 16 + 4 * entry.distinct;
        let Q = 0;
        for (let s = 0; s < 512; s++) Q += q[s];
        const denominator = (nTotal + k) * Q;
        const bucket = Math.min(bitLength(nTotal), 9);
        const weight = level.weights[bucket];
        const r = new Float64Array(512);
        const m = new Float64Array(512);
        for (let s = 0; s < 512; s++) {
          r[s] = Math.max(1, exactFloorDiv(c[s] * Q + k * q[s], denominator));
          m[s] = Math.max(1, Math.floor(((WEIGHT_ONE - weight) * q[s] + weight * r[s]) / WEIGHT_ONE));
        }
        perLevel.push({ entry, q, r, m, bucket });
        q = m;
      }
      cells.push(perLevel);
      finals.push(q);
    }
    return { tables: finals, step: cells };
  }

  /** Learn the step's tokens (symbols[i] for cell i), after all of them are decoded. */
  update(step, symbols) {
    for (let l = 0; l < LEVELS; l++) {
      const level = this.levels[l];
      const sums = new Float64Array(BUCKETS);
      for (let i = 0; i < step.length; i++) {
        const { q, r, m, bucket } = step[i][l];
        const x = symbols[i];
        sums[bucket] += Math.floor((82 * (r[x] - q[x])) / m[x]);
      }
      for (let b = 0; b < BUCKETS; b++) {
        level.weights[b] = Math.min(WEIGHT_ONE, Math.max(0, level.weights[b] + sums[b]));
      }
      for (let i = 0; i < step.length; i++) {
        const { entry } = step[i][l];
        const x = symbols[i];
        if (entry.counts[x] === 0) entry.distinct++;
        entry.counts[x]++;
        entry.total++;
      }
      // Each context once, even when several cells of the step share it.
      for (const entry of new Set(step.map((cell) => cell[l].entry))) {
        if (entry.total > COUNT_LIMIT) {
          let total = 0;
          for (let s = 0; s < 512; s++) {
            entry.counts[s] = (entry.counts[s] + 1) >> 1;
            total += entry.counts[s];
          }
          entry.total = total;
        }
      }
    }
  }
}

export { OUTSIDE };
