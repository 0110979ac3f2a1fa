// Coding 3's longer-reach levels (codec/core/match.py, format/SPEC.md "Coding 3"): after
// coding 2's three levels, each level counts what followed a context of up to 16 causal
// cells (a colour-free "pattern" of which cells are equal, or the cells' "values"),
// in 2^slot_bits hashed slots, and mixes those counts into the table by a weight learnt
// per bucket of the context's count. Bit for bit match.py, in JS numbers:
//
// - every table entry is below 2^23 (totals below 2^23), counts at most 1023 + 255, and
//   strengths k = base + per_symbol * d small (d <= 512), so a numerator c*T + k*t is below
//   2^36 and a denominator (n + k) * T below 2^36; the one product past 2^53, numerator
//   << 22, goes through exactFloorDiv (as in adaptive.js);
// - Math.floor(a / d) is exact for integers with |a| + d <= 2^53 (the division is correctly
//   rounded, and a non-integer quotient is at least 1/d from the next integer), which also
//   gives Python's floor division of negatives (the weight gain);
// - `>> 12` of a possibly negative int64 is floor division by 4096: Math.floor(x / 4096);
// - the key hash is mod 2^32: Math.imul, as match.py says.

const PALETTE = 512;
const NONE = PALETTE;
const BUCKETS = 10;
const WEIGHT_ONE = 4096;
const LEARNING_RATE = 82;
const COUNT_LIMIT = 1023;
const MAX_STEP = 255;
const SCALE = 2 ** 22;

/** (dx, dy) of the causal cells a level may read, nearest first (match.py TEMPLATE). */
export const TEMPLATE = [
  [-1, 0], [0, -1], [-1, -1], [1, -1], [-2, 0], [0, -2], [-2, -1], [2, -1],
  [-1, -2], [1, -2], [-3, 0], [0, -3], [-3, -1], [3, -1], [-2, -2], [2, -2],
];

export const HASH_MULTIPLIER = 0x9e3779b1;
export const KINDS = ['pattern', 'values'];

/** A level (match.py LevelSpec), with its defaults; refused as LevelSpec refuses it. */
export function levelSpec(kind, size = TEMPLATE.length, strengthBase = 4, strengthPerSymbol = 2,
  initialWeight = WEIGHT_ONE, symbols = false, slotBits = 16) {
  if (!KINDS.includes(kind)) throw new RangeError(`level kind must be one of ${KINDS}, got ${kind}`);
  if (!(Number.isInteger(size) && size >= 1 && size <= TEMPLATE.length)) throw new RangeError(`level size must be 1..${TEMPLATE.length}, got ${size}`);
  if (!(strengthBase >= 1 && strengthPerSymbol >= 0)) throw new RangeError("a level's strength needs base >= 1 and per_symbol >= 0");
  if (!(initialWeight >= 0 && initialWeight <= WEIGHT_ONE)) throw new RangeError(`initial weight must be 0..${WEIGHT_ONE}`);
  if (!(slotBits >= 1 && slotBits <= 24)) throw new RangeError(`slot_bits must be 1..24, got ${slotBits}`);
  return Object.freeze({
    kind, size, strengthBase, strengthPerSymbol, initialWeight, symbols: Boolean(symbols), slotBits,
    outcomes: symbols ? PALETTE : size + 1,
  });
}

/** match.py DEFAULT_LEVELS: three symbol levels, then three neighbour levels. */
export const DEFAULT_LEVELS = Object.freeze([
  levelSpec('pattern', 12, 4, 2, WEIGHT_ONE / 4, true, 12),
  levelSpec('values', 6, 4, 2, WEIGHT_ONE / 4, true, 12),
  levelSpec('values', 12, 4, 2, WEIGHT_ONE / 4, true, 12),
  levelSpec('pattern', 12, 1, 0, WEIGHT_ONE / 4),
  levelSpec('values', 6, 1, 0, WEIGHT_ONE / 4),
  levelSpec('values', 12, 1, 0, WEIGHT_ONE / 4),
]);

/**
 * The first `size` TEMPLATE cells of cell `cell` in a window of width `width` (an
 * Int32Array of its cells, raster order); NONE outside the window. Only earlier cells are read.
 */
export function windowTemplate(cells, cell, width, size = TEMPLATE.length) {
  const row = Math.floor(cell / width);
  const col = cell % width;
  const out = new Int32Array(size).fill(NONE);
  for (let i = 0; i < size; i++) {
    const [dx, dy] = TEMPLATE[i];
    if (col + dx >= 0 && col + dx < width && row + dy >= 0) out[i] = cells[cell + dy * width + dx];
  }
  return out;
}

/** For each template cell, the index of the first cell holding its value; NONE cells get the length. */
export function firstOf(template) {
  const size = template.length;
  const first = new Int32Array(size);
  for (let i = 0; i < size; i++) {
    if (template[i] === NONE) {
      first[i] = size;
      continue;
    }
    let j = 0;
    while (template[j] !== template[i]) j++;
    first[i] = j;
  }
  return first;
}

/** A level's 32-bit key hash: h = seed, then h = (h + v + 1) * M mod 2^32 per context value. */
export function levelKey(spec, template, first, number) {
  let h = ((number + 1) * 0x51ed27 + KINDS.indexOf(spec.kind)) & 0xffff;
  for (let i = 0; i < spec.size; i++) {
    const v = spec.kind === 'values' ? template[i] : Math.min(first[i], spec.size);
    h = Math.imul(h + v + 1, HASH_MULTIPLIER) >>> 0;
  }
  return h;
}

/** floor(a * 2^22 / d) for integers 0 <= a < 2^40, 1 <= d < 2^40, without a product past 2^53. */
export function exactFloorDiv(a, d) {
  const a1 = a * 2048;
  const q1 = Math.floor(a1 / d);
  const r1 = a1 - q1 * d;
  return q1 * 2048 + Math.floor((r1 * 2048) / d);
}

function bucketOf(n) {
  return Math.min(n === 0 ? 0 : 32 - Math.clz32(n), BUCKETS - 1);
}

class Level {
  constructor(spec, slotBits) {
    this.spec = spec;
    this.bits = slotBits;
    const slots = 2 ** slotBits;
    this.tags = new Float64Array(slots).fill(-1); // the key hash held, -1 for none
    this.counts = new Uint16Array(slots * spec.outcomes);
    this.totals = new Int32Array(slots);
    this.distinct = new Int32Array(slots);
    this.weights = new Float64Array(BUCKETS).fill(spec.initialWeight);
  }
}

/** One chain's match levels: tables() for a step, then update() with its symbols. */
export class MatchMixer {
  /** slotBits: every level's slots (tests make it small to collide); null: each level's own. */
  constructor(levels = DEFAULT_LEVELS, slotBits = null) {
    if (slotBits !== null && !(slotBits >= 1 && slotBits <= 24)) throw new RangeError(`slot_bits must be 1..24, got ${slotBits}`);
    this.levels = levels.map((spec) => new Level(spec, slotBits || spec.slotBits));
    /** Template cells tables() needs (windowTemplate(..., this.size)). */
    this.size = Math.max(1, ...levels.map((spec) => spec.size));
  }

  /**
   * Refined tables for one step of B windows. `tables`: B tables of 512 integers >= 1 with
   * totals below 2^23 (coding 2's output); `templates`: B windowTemplate(..., this.size).
   * Reads the state only. Returns {tables, step}; pass step to update().
   */
  tables(tables, templates) {
    const batch = tables.length;
    if (batch > MAX_STEP || templates.length !== batch) throw new RangeError(`a step has ${batch} tables and ${templates.length} templates; at most ${MAX_STEP}`);
    const out = [];
    const step = [];
    for (let b = 0; b < batch; b++) {
      const template = templates[b];
      if (template.length !== this.size) throw new RangeError(`template must have ${this.size} cells, got ${template.length}`);
      const first = firstOf(template);
      let table = tables[b];
      const perLevel = [];
      for (let number = 0; number < this.levels.length; number++) {
        const level = this.levels[number];
        const { spec } = level;
        const key = levelKey(spec, template, first, number);
        const slot = Math.floor(key / 2 ** (32 - level.bits));
        const held = level.tags[slot] === key;
        const seen = held ? level.totals[slot] : 0;
        const k = spec.strengthBase + spec.strengthPerSymbol * (held ? level.distinct[slot] : 0);
        const base = slot * spec.outcomes;
        let total = 0;
        for (let s = 0; s < PALETTE; s++) total += table[s];
        const denominator = (seen + k) * total;
        const refined = new Float64Array(PALETTE);
        if (spec.symbols && !held) {
          // No counts: ((k t) 2^22) // (k T) = (t 2^22) // T exactly, and t 2^22 < 2^45.
          for (let s = 0; s < PALETTE; s++) refined[s] = Math.floor((table[s] * SCALE) / total);
        } else if (spec.symbols) {
          const { counts } = level;
          for (let s = 0; s < PALETTE; s++) refined[s] = exactFloorDiv(counts[base + s] * total + k * table[s], denominator);
        } else {
          // Outcome o < size: template cell o, where it is the first with its value (it
          // carries its symbol's share of the table); outcome size: novel (the rest).
          const size = spec.size;
          let novelMass = total;
          const merged = new Float64Array(size + 1);
          for (let o = 0; o < size; o++) {
            const lead = first[o] === o;
            const share = lead ? table[template[o]] : 0;
            novelMass -= share;
            merged[o] = exactFloorDiv((held ? level.counts[base + o] : 0) * total + k * share, denominator);
          }
          const novel = exactFloorDiv((held ? level.counts[base + size] : 0) * total + k * novelMass, denominator);
          for (let s = 0; s < PALETTE; s++) refined[s] = Math.floor((table[s] * novel) / novelMass);
          for (let o = 0; o < size; o++) if (first[o] === o) refined[template[o]] = merged[o];
        }
        const bucket = bucketOf(seen);
        const weight = level.weights[bucket];
        const mixed = new Float64Array(PALETTE);
        for (let s = 0; s < PALETTE; s++) {
          const r = refined[s] < 1 ? (refined[s] = 1) : refined[s];
          // t + floor(w (r - t) / 4096): (t << 12) is a multiple of 4096.
          const m = table[s] + Math.floor((weight * (r - table[s])) / WEIGHT_ONE);
          mixed[s] = m < 1 ? 1 : m;
        }
        perLevel.push({ slot, key, bucket, table, refined, mixed });
        table = mixed;
      }
      out.push(table);
      step.push({ template, levels: perLevel });
    }
    return { tables: out, step };
  }

  /** Learn one step's symbols: a slot addressed this step goes to the key of the last window (batch order) that addressed it. */
  update(step, symbols) {
    if (symbols.length !== step.length) throw new RangeError(`expected ${step.length} symbols, got ${symbols.length}`);
    for (let number = 0; number < this.levels.length; number++) {
      const level = this.levels[number];
      const { spec } = level;
      const sums = new Float64Array(BUCKETS);
      for (let b = 0; b < step.length; b++) {
        const { bucket, table, refined, mixed } = step[b].levels[number];
        const x = symbols[b];
        sums[bucket] += Math.floor((LEARNING_RATE * (refined[x] - table[x])) / mixed[x]);
      }
      for (let i = 0; i < BUCKETS; i++) level.weights[i] = Math.min(WEIGHT_ONE, Math.max(0, level.weights[i] + sums[i]));
      const winners = new Map(); // slot -> the key of the last window addressing it
      for (let b = 0; b < step.length; b++) {
        const { slot, key } = step[b].levels[number];
        winners.set(slot, key);
      }
      const width = spec.outcomes;
      for (const [slot, key] of winners) {
        if (level.tags[slot] !== key) {
          level.tags[slot] = key;
          level.counts.fill(0, slot * width, (slot + 1) * width);
          level.totals[slot] = 0;
          level.distinct[slot] = 0;
        }
      }
      for (let b = 0; b < step.length; b++) {
        const { slot, key } = step[b].levels[number];
        if (level.tags[slot] !== key) continue;
        const x = symbols[b];
        let outcome = x;
        if (!spec.symbols) {
          const { template } = step[b];
          outcome = spec.size;
          for (let i = 0; i < spec.size; i++) {
            if (template[i] === x) {
              outcome = i;
              break;
            }
          }
        }
        const at = slot * width + outcome;
        if (level.counts[at] === 0) level.distinct[slot]++;
        level.counts[at]++;
        level.totals[slot]++;
      }
      for (const slot of winners.keys()) {
        if (level.totals[slot] > COUNT_LIMIT) {
          let total = 0;
          for (let i = slot * width; i < (slot + 1) * width; i++) {
            level.counts[i] = (level.counts[i] + 1) >> 1;
            total += level.counts[i];
          }
          level.totals[slot] = total;
        }
      }
    }
  }
}

export { NONE as MATCH_NONE };
