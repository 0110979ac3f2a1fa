// Coding 2: the model's table refined by the image's own context counts, in three
// levels (format/SPEC.md "Coding 2: adaptive context mixing"). Integer arithmetic
// only; every intermediate value here stays below 2^53, so JS numbers are exact
// (see exactFloorDiv for the one product that would not be).
//
// The state, the contexts a step looks up and the update are shared with linear.js (the
// kind-3 LINEAR feature: the same levels, another table arithmetic), as Python's
// AdaptiveMixer shares `_contexts` and `_learn` with LinearMixer: contexts() and learn().

const LEVELS = 3;
const BUCKETS = 10;
const WEIGHT_ONE = 4096;
const LEARNING_RATE = 82;
const COUNT_LIMIT = 1023;
const CAPACITY = 16384;
const MAX_STEP = 255;
const OUTSIDE = 512;
const SCALE = 2 ** 22;

/** floor(a * 2^22 / d) for 0 <= a < 2^35, 1 <= d < 2^40, exactly: split 2^22 = 2^11 * 2^11 so
 * no product reaches 2^53. Math.floor(x / y) is exact for integers x < 2^53. */
export function exactFloorDiv(a, d) {
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
  /** capacity: contexts a neighbour level holds (SPEC: 16384; tests make it small to reach it). */
  constructor(capacity = CAPACITY) {
    if (!(capacity >= 1)) throw new RangeError(`capacity must be at least 1, got ${capacity}`);
    this.capacity = capacity;
    this.levels = [new Level(false), new Level(true), new Level(true)];
  }

  /**
   * What a step's tables are made from, for every table arithmetic of these levels: a level
   * about to pass its capacity forgets its contexts first, then each cell gets
   * {f, F, levels}: its model table, that table's total, and per level l the context's
   * entry, n (its count total), k = 16 + 4 d, its weight bucket and that bucket's weight.
   */
  contexts(modelTables, neighbours) {
    const batch = modelTables.length;
    if (batch > Math.min(MAX_STEP, this.capacity)) throw new RangeError(`a step has ${batch} windows; at most ${Math.min(MAX_STEP, this.capacity)} fit`);
    for (const level of this.levels) {
      if (level.limited && level.contexts.size > this.capacity - batch) level.contexts.clear();
    }
    const cells = [];
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
      const levels = [];
      for (let l = 0; l < LEVELS; l++) {
        const level = this.levels[l];
        const entry = level.lookup(keys[l]);
        const bucket = Math.min(bitLength(entry.total), 9);
        levels.push({ entry, n: entry.total, k: 16 + 4 * entry.distinct, bucket, weight: level.weights[bucket] });
      }
      cells.push({ f, F, levels });
    }
    return cells;
  }

  /**
   * Tables for one step. `modelTables`: array of Int32Array(512) (the model's, coding 0),
   * `neighbours`: array of [W, N, NW, NE] per cell. Returns {tables, step}: the final
   * tables (Float64Array(512) each) and what update() needs.
   */
  tables(modelTables, neighbours) {
    const cells = [];
    const finals = [];
    for (const { f, F, levels } of this.contexts(modelTables, neighbours)) {
      let q = new Float64Array(512);
      for (let s = 0; s < 512; s++) q[s] = Math.max(1, Math.floor((f[s] * SCALE) / F));
      const perLevel = [];
      for (const { entry, n: nTotal, k, bucket, weight } of levels) {
        const c = entry.counts;
        let Q = 0;
        for (let s = 0; s < 512; s++) Q += q[s];
        const denominator = (nTotal + k) * Q;
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
    this.learn(step.map((perLevel, i) => {
      const x = symbols[i];
      return perLevel.map(({ entry, q, r, m, bucket }) => ({ entry, bucket, q: q[x], r: r[x], m: m[x] }));
    }), symbols);
  }

  /**
   * Coding 2's update from each level's values at the coded symbols: values[i][l] =
   * {entry, bucket, q, r, m} of cell i at level l (its context, its weight bucket, and the
   * level's input, counts-refined and mixed values at symbols[i]). Weights, then counts, then
   * halving, level by level (the levels' state is disjoint, so the order between them is free).
   */
  learn(values, symbols) {
    for (let l = 0; l < LEVELS; l++) {
      const level = this.levels[l];
      const sums = new Float64Array(BUCKETS);
      for (let i = 0; i < values.length; i++) {
        const { q, r, m, bucket } = values[i][l];
        sums[bucket] += Math.floor((LEARNING_RATE * (r - q)) / m);
      }
      for (let b = 0; b < BUCKETS; b++) {
        level.weights[b] = Math.min(WEIGHT_ONE, Math.max(0, level.weights[b] + sums[b]));
      }
      for (let i = 0; i < values.length; i++) {
        const { entry } = values[i][l];
        const x = symbols[i];
        if (entry.counts[x] === 0) entry.distinct++;
        entry.counts[x]++;
        entry.total++;
      }
      // Each context once, even when several cells of the step share it.
      for (const entry of new Set(values.map((cell) => cell[l].entry))) {
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

export { OUTSIDE, SCALE, WEIGHT_ONE };
