"""Longer-reach levels for synthetic images: which neighbour repeats, and what follows a shape.

Why: the coding-2 mixer (adaptive.py) counts symbols under contexts of the four nearest
neighbours. On text, line art, charts and screenshots that is too short a reach: a glyph's
stroke, a dashed line or a tiled sprite is told apart only by a dozen cells around it, and
there most pixels *repeat* one of those cells, while the rest (anti-aliased edges) take a
colour that the shape, not the model, predicts. These levels model both, after coding 2's
three levels (docs/synthetic.md, "Longer-reach levels", has the measurements).

Contexts: a level reads the first `size` cells of TEMPLATE (up to 16 causal cells, nearest
first), as one of two kinds:

- "pattern": which template cells equal which (for each cell, the first earlier cell with
  its value; outside the window marked apart). Colour-free: a glyph learnt in black on
  white predicts the same glyph in any colour, and a run or a copied row is "equals W" or
  "equals N" whatever the colour.
- "values": the cells' palette symbols themselves: an exact local match, like a match
  model's hash of a long context, with counts instead of one remembered symbol.

Outcomes: a neighbour level counts which template cell the coded symbol equals (the first
holding its value) or "none" (novel): size + 1 counts a context. It maps the incoming table
to those outcomes (a cell's outcome carries its symbol's share, novel the rest), blends its
counts in as a Dirichlet prior centred there, and maps back (novel mass spread over the
other symbols in proportion to the table). A symbol level (`symbols=True`) counts the 512
palette symbols and blends as adaptive.py does. Either way the prior's strength is
k = base + per_symbol x distinct outcomes seen, and the result is mixed with the level's
input by a weight learnt online per bucket of the context's count, as in adaptive.py: on a
photo these contexts rarely repeat, so their weights stay low and they cost little.

State is per chain and bounded: a level holds 2^slot_bits context slots addressed by a
32-bit multiplicative hash of its key (JavaScript's Math.imul computes the same), each
slot keeping its key's hash as a tag; a slot whose tag differs reads as empty and is taken
over by the new key at the update. Memory per level: 2^slot_bits x (2 x outcomes + 24)
bytes (MatchMixer.memory_bytes): 3.3 MB for a neighbour level of 12 cells at 16 bits,
4.3 MB for a symbol level at 12 bits. Everything is int64 integer arithmetic with floor
divisions: the same bits on every machine.

Steps work as in adaptive.py: tables() reads the state only (every window of a step sees
the state before the step, so the order of windows in the batch does not matter), and
update() applies the step's symbols once they are known: a slot addressed this step is
held by the key of the last window (in batch order) that addressed it, and only windows
of that key count. Both sides call it the same way.

Core layer: numpy only. Not yet part of the format (a new coding id would make it one).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np

from igpt_codec.core.adaptive import (
    BUCKETS,
    COUNT_LIMIT,
    LEARNING_RATE,
    MAX_STEP,
    NONE,
    PALETTE,
    SCALE_BITS,
    WEIGHT_BITS,
    WEIGHT_ONE,
)

TEMPLATE: tuple[tuple[int, int], ...] = (
    (-1, 0),  # W
    (0, -1),  # N
    (-1, -1),  # NW
    (1, -1),  # NE
    (-2, 0),  # WW
    (0, -2),  # NN
    (-2, -1),  # NWW
    (2, -1),  # NEE
    (-1, -2),  # NNW
    (1, -2),  # NNE
    (-3, 0),  # WWW
    (0, -3),  # NNN
    (-3, -1),  # NWWW
    (3, -1),  # NEEE
    (-2, -2),  # NNWW
    (2, -2),  # NNEE
)
"""(dx, dy) of the causal cells a level may look at, nearest first (JBIG's templates
reach as far): the first `size` of them make a level's context and its outcomes."""

HASH_MULTIPLIER = 0x9E3779B1
"""Odd 32-bit multiplier of the key hash (Knuth's golden ratio constant)."""

SLOT_BITS = 16
"""Default slots of a level: 2^16 (3.3 MB for 12 cells); a synthetic 256 x 256 image
fills a few thousand, and a photo's unseen contexts only evict each other."""

KINDS = ("pattern", "values")


@dataclass(frozen=True)
class LevelSpec:
    """One level: its context kind, the template cells it reads, its prior strength, and
    what it counts: which neighbour repeats (size + 1 outcomes), or with `symbols` the
    palette symbol itself (512 outcomes: what a shape's novel colour is; 1 KB a slot)."""

    kind: str
    size: int = len(TEMPLATE)
    strength_base: int = 4
    strength_per_symbol: int = 2
    initial_weight: int = WEIGHT_ONE
    symbols: bool = False
    slot_bits: int = SLOT_BITS

    @property
    def outcomes(self) -> int:
        return PALETTE if self.symbols else self.size + 1

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"level kind must be one of {KINDS}, got {self.kind!r}")
        if not 1 <= self.size <= len(TEMPLATE):
            raise ValueError(f"level size must be 1..{len(TEMPLATE)}, got {self.size}")
        if self.strength_base < 1 or self.strength_per_symbol < 0:
            raise ValueError("a level's strength needs base >= 1 and per_symbol >= 0")
        if not 0 <= self.initial_weight <= WEIGHT_ONE:
            raise ValueError(f"initial weight must be 0..{WEIGHT_ONE}")
        if not isinstance(self.symbols, bool):
            raise ValueError(f"symbols must be True or False, got {self.symbols!r}")
        if not 1 <= self.slot_bits <= 24:
            raise ValueError(f"slot_bits must be 1..24, got {self.slot_bits}")


DEFAULT_LEVELS = (
    LevelSpec("pattern", 12, 4, 2, WEIGHT_ONE // 4, symbols=True, slot_bits=12),
    LevelSpec("values", 6, 4, 2, WEIGHT_ONE // 4, symbols=True, slot_bits=12),
    LevelSpec("values", 12, 4, 2, WEIGHT_ONE // 4, symbols=True, slot_bits=12),
    LevelSpec("pattern", 12, 1, 0, WEIGHT_ONE // 4),
    LevelSpec("values", 6, 1, 0, WEIGHT_ONE // 4),
    LevelSpec("values", 12, 1, 0, WEIGHT_ONE // 4),
)
"""What the study chose (docs/synthetic.md, "Longer-reach levels"): three symbol levels
(a colour-free pattern of 12 cells, exact values of 6 and of 12; k = 4 + 2d, 4,096 slots
each), then three neighbour levels over the same contexts (k = 1: the sharpest prior
measured best); symbol levels first beat them last (text 0.603 of coding 2 against
0.614, dithered 0.841 against 0.896). Weights start at a quarter (a photo paid 0.05%
instead of 0.17%). Memory per chain: 3 x 4.3 + 3.3 + 2.5 + 3.3 MB = 22 MB."""


_FAR = -(1 << 40)
"""Offset of a template cell outside the window: take(mode="clip") reads column 0 for it,
which window_template then overwrites with NONE."""


@functools.lru_cache(maxsize=4096)
def _template_offsets(row: int, col: int, width: int, size: int) -> tuple[np.ndarray, list[int]]:
    """window_template's geometry at (row, capped at 3: no template cell reaches higher,
    col): each template cell's offset from the coded cell, and the cells outside."""
    offsets = np.full(size, _FAR, np.int64)
    outside = []
    for i in range(size):
        dx, dy = TEMPLATE[i] if i < len(TEMPLATE) else (width, 0)
        if 0 <= col + dx < width and row + dy >= 0:
            offsets[i] = dy * width + dx
        else:
            outside.append(i)
    return offsets, outside


def window_template(cells: np.ndarray, cell: int, width: int, size: int = len(TEMPLATE)):
    """The first `size` TEMPLATE cells of one cell in each window [B, size] int64; NONE
    outside the window. Only cells before `cell` are read (both sides know them).

    One gather per call (the offsets are cached per position): a decoder calls it at
    every cell step."""
    row, col = divmod(cell, width)
    offsets, outside = _template_offsets(min(row, 3), col, width, size)
    out = np.take(cells, offsets + cell, axis=1, mode="clip")
    if out.dtype != np.int64:
        out = out.astype(np.int64)
    if outside:
        out[:, outside] = NONE
    return out


def first_of(template: np.ndarray) -> np.ndarray:
    """For each template cell, the index of the first cell holding its value [B, size];
    a cell outside the window (NONE) gets `size` (it can be no outcome)."""
    size = template.shape[1]
    equal = template[:, :, None] == template[:, None, :]  # [B, i, j]
    first = np.argmax(equal, axis=2).astype(np.int64, copy=False)  # the first j with i's value
    first[template == NONE] = size
    return first


def _hash(columns: np.ndarray, seed: int) -> np.ndarray:
    """32-bit hash of each row (v_1..v_K) of integers 0..512: h_0 = seed, then
    h_i = (h_(i-1) + v_i + 1) x M mod 2^32. Computed as the polynomial it expands to,
    seed M^K + sum (v_i + 1) M^(K+1-i) mod 2^32: every term is below 2^42, the sum
    below 2^47, so int64 holds it exactly."""
    powers = _POWERS[columns.shape[1]]
    poly = (columns + 1) @ powers[:-1]
    return (poly + seed * int(powers[0])) & 0xFFFFFFFF


_POWERS = {
    size: np.array([pow(HASH_MULTIPLIER, size - i, 1 << 32) for i in range(size + 1)], np.int64)
    for size in range(len(TEMPLATE) + 1)
}
"""M^K, ..., M^1, M^0 mod 2^32 for each key length K: the seed's and the cells' coefficients."""


def _seed(spec: LevelSpec, number: int) -> int:
    """h_0 of a level's key: its place in the mixer and its kind."""
    return ((number + 1) * 0x51ED27 + KINDS.index(spec.kind)) & 0xFFFF


def level_keys(spec: LevelSpec, template: np.ndarray, first: np.ndarray, number: int):
    """The 32-bit key hash of each window's context under one level [B] (the plain form:
    MatchMixer computes every level's keys at once, as one matrix product)."""
    part = template[:, : spec.size] if spec.kind == "values" else first[:, : spec.size]
    if spec.kind == "pattern":  # first_of over the level's cells only: map `len` to size
        part = np.minimum(part, spec.size)
    return _hash(part, _seed(spec, number))


_BUCKET_OF = np.minimum(
    np.array([n.bit_length() for n in range(COUNT_LIMIT + MAX_STEP + 1)]), BUCKETS - 1
)


@dataclass
class _Level:
    """One level's state: views into the mixer's stacked arrays (MatchMixer.__init__)."""

    spec: LevelSpec
    tags: np.ndarray  # [slots] int64: the key hash held, -1 for none
    counts: np.ndarray  # [slots, outcomes] uint16: a template cell or novel, or a symbol
    totals: np.ndarray  # [slots] int64
    distinct: np.ndarray  # [slots] int64: outcomes seen (halving never drops one)
    weights: np.ndarray  # [BUCKETS] int64


@dataclass
class _Group:
    """Levels with the same number of outcomes: their counts are one array (rows in level
    order, then one row of zeros that a slot not held reads), gathered in one call."""

    rows: slice | np.ndarray  # the levels' rows in a step's [levels, B] arrays
    counts: np.ndarray  # [slots of its levels + 1, outcomes] uint16
    start: int  # the first level's first slot in the mixer's slot numbering


@dataclass
class MatchStep:
    """What one step's tables were made from, kept until its symbols are known.

    keys, slots (numbered across all levels), buckets (indexes into the stacked weights),
    strength k and spread n + k: [levels, B]; counts: each group's counts [its levels, B,
    outcomes] (zeros for a slot not held); tables: [levels + 1, B, 512] the input then
    each level's mixed output; refined: [levels, B, 512] each level's counts-refined
    table, but for the idle levels (every weight 0: their mix is their input), whose
    entry at the symbol update() works out alone."""

    template: np.ndarray
    keys: np.ndarray
    slots: np.ndarray
    buckets: np.ndarray
    counts: list[np.ndarray]
    strength: np.ndarray
    spread: np.ndarray
    tables: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    refined: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    idle: list[int] = field(default_factory=list)
    neighbours: _Neighbours | None = None


@functools.lru_cache(maxsize=MAX_STEP + 1)
def _rows(batch: int) -> tuple[np.ndarray, np.ndarray]:
    """np.arange(batch), and the same x 512 as a column [B, 1]: row picks and row
    offsets in flattened tables, made once per batch size (read-only)."""
    pick = np.arange(batch)
    offsets = (pick * PALETTE)[:, None]
    pick.flags.writeable = offsets.flags.writeable = False
    return pick, offsets


def _divide_rows(values: np.ndarray, divisors: np.ndarray) -> None:
    """values[i] //= divisors[i] in place. Row by row from two rows on: numpy divides by a
    scalar through a precomputed reciprocal (libdivide, exact), faster than by a column."""
    if len(values) < 2:
        np.floor_divide(values, divisors[:, None], out=values)
        return
    for row, divisor in zip(values, divisors.tolist(), strict=True):
        np.floor_divide(row, divisor, out=row)


class MatchMixer:
    """One chain's neighbour-copy levels: tables() for a step, then update() with its symbols.

    Why it is laid out this way: a step holds a chain's windows (4 on a 256-wide image, 8
    at 481, 12 at 768), so numpy's cost per call is much of the price. Every level's state is one
    stacked array (tags, totals, distinct, weights; counts per number of outcomes), so a
    step hashes, looks up and updates all levels with one call per kind of work; only the
    table arithmetic, which chains level to level, runs per level. The arithmetic is the
    docstring's, term for term (tests/test_match_model.py checks it against a plain
    reference); the rewritings used are exact in integers: (a + b) << s = (a << s) +
    (b << s); ((t << 12) + x) >> 12 = t + (x >> 12); a mix of entries >= 1 by a weight
    0..4096 is >= 1 without the max; a weight of 4096 mixes to the refined table itself."""

    def __init__(
        self, levels: tuple[LevelSpec, ...] = DEFAULT_LEVELS, slot_bits: int | None = None
    ) -> None:
        """slot_bits: every level's slots (tests make it small to collide); None: each
        level's own."""
        if slot_bits is not None and not 1 <= slot_bits <= 24:
            raise ValueError(f"slot_bits must be 1..24, got {slot_bits}")
        self._specs = tuple(levels)
        self.size = max((spec.size for spec in self._specs), default=1)
        """Template cells tables() needs (window_template(..., size=self.size))."""
        count = len(self._specs)
        bits = [slot_bits or spec.slot_bits for spec in self._specs]
        slots = sum(1 << b for b in bits)
        self._tags = np.full(slots, -1, np.int64)
        self._totals = np.zeros(slots + 1, np.int64)  # the last: a slot never held
        self._distinct = np.zeros(slots + 1, np.int64)
        weights = [spec.initial_weight for spec in self._specs for _ in range(BUCKETS)]
        self._weights = np.array(weights, np.int64)
        widths = list(dict.fromkeys(spec.outcomes for spec in self._specs))
        rows_of = {
            w: sum(1 << bits[n] for n, s in enumerate(self._specs) if s.outcomes == w)
            for w in widths
        }
        self._counts_flat = np.zeros(sum((rows_of[w] + 1) * w for w in widths), np.uint16)
        start = np.zeros(count, np.int64)  # a level's first slot
        local = np.zeros(count, np.int64)  # the same, in its group's counts
        empty = np.zeros(count, np.int64)  # its group's row of zeros
        base = np.zeros(count, np.int64)  # flat count index = slot x outcomes + base + outcome
        self._groups: list[_Group] = []
        self._group_of: list[tuple[int, int]] = [(0, 0)] * count
        at_slot = at_flat = 0
        for w in widths:
            members = [n for n, spec in enumerate(self._specs) if spec.outcomes == w]
            counts = self._counts_flat[at_flat : at_flat + (rows_of[w] + 1) * w]
            counts = counts.reshape(rows_of[w] + 1, w)
            group_start, inside = at_slot, 0
            for n in members:
                start[n], local[n], empty[n] = at_slot, inside, rows_of[w]
                base[n] = at_flat - group_start * w
                self._group_of[n] = (len(self._groups), members.index(n))
                at_slot += 1 << bits[n]
                inside += 1 << bits[n]
            rows: slice | np.ndarray = np.array(members)
            if members == list(range(members[0], members[-1] + 1)):
                rows = slice(members[0], members[-1] + 1)
            self._groups.append(_Group(rows, counts, group_start))
            at_flat += (rows_of[w] + 1) * w
        self._levels = []
        for n, spec in enumerate(self._specs):
            group = self._groups[self._group_of[n][0]]
            lo, hi = int(start[n]), int(start[n]) + (1 << bits[n])
            self._levels.append(
                _Level(
                    spec,
                    self._tags[lo:hi],
                    group.counts[lo - group.start : hi - group.start],
                    self._totals[lo:hi],
                    self._distinct[lo:hi],
                    self._weights[n * BUCKETS : (n + 1) * BUCKETS],
                )
            )
        column = (count, 1)
        self._start = start.reshape(column)
        self._local = local.reshape(column)
        self._empty_row = empty.reshape(column)
        self._empty_slot = slots
        self._shift = np.array([32 - b for b in bits], np.int64).reshape(column)
        self._bucket_base = (np.arange(count, dtype=np.int64) * BUCKETS).reshape(column)
        self._base = np.array([s.strength_base for s in self._specs], np.int64).reshape(column)
        self._per = np.array([s.strength_per_symbol for s in self._specs], np.int64).reshape(column)
        self._outcomes = np.array([s.outcomes for s in self._specs], np.int64).reshape(column)
        self._flat_base = base.reshape(column)
        self._symbols = np.array([s.symbols for s in self._specs]).reshape(column)
        self._sizes = np.array([s.size for s in self._specs], np.int64).reshape(column)
        self._ones = np.ones(count * MAX_STEP, np.uint16)
        self._needs_outcomes = not all(s.symbols for s in self._specs)
        self._cells = np.arange(self.size)
        self._hash_setup()

    def _hash_setup(self) -> None:
        """Every level's key as one product: features [B, F] (the template; first_of's
        indexes; first_of with `len` mapped to a shorter pattern level's size) times
        [F, levels] coefficients, plus each level's seed and +1 terms, mod 2^32."""
        size = self.size
        patterns = sorted({s.size for s in self._specs if s.kind == "pattern"})
        self._short = [s for s in patterns if s < size]
        starts = {("values", size): 0}
        at = size
        for s in ([size] if size in patterns else []) + self._short:
            starts["pattern", s] = at
            at += s
        matrix = np.zeros((len(self._specs), at), np.int64)
        const = np.zeros((len(self._specs), 1), np.int64)
        for n, spec in enumerate(self._specs):
            powers = _POWERS[spec.size]
            begin = (
                starts["values", size] if spec.kind == "values" else starts["pattern", spec.size]
            )
            matrix[n, begin : begin + spec.size] = powers[:-1]
            const[n] = (_seed(spec, n) * int(powers[0]) + int(powers[:-1].sum())) & 0xFFFFFFFF
        self._hash_matrix = matrix
        self._hash_const = const
        self._has_patterns = bool(patterns)
        self._full_pattern = size in patterns
        self._needs_first = bool(patterns) or not all(s.symbols for s in self._specs)

    @property
    def memory_bytes(self) -> int:
        """Bytes the state holds (bounded: it never grows with the image)."""
        return sum(
            lv.tags.nbytes + lv.counts.nbytes + lv.totals.nbytes + lv.distinct.nbytes
            for lv in self._levels
        )

    def tables(self, table: np.ndarray, template: np.ndarray) -> tuple[np.ndarray, MatchStep]:
        """Refined tables [B, 512] for one step: `table` [B, 512] entries >= 1 with totals
        below 2^23 (adaptive.py's output, or adaptive.normalize of the model's), `template`
        window_template(..., size=self.size) of the same windows."""
        table = np.asarray(table, np.int64)
        template = np.asarray(template, np.int64)
        if table.ndim != 2 or table.shape[1] != PALETTE or len(table) > MAX_STEP:
            raise ValueError(f"tables must be [B <= {MAX_STEP}, {PALETTE}], got {table.shape}")
        if template.shape != (len(table), self.size):
            raise ValueError(f"template must be [{len(table)}, {self.size}], got {template.shape}")
        if template.min(initial=0) < 0 or template.max(initial=0) > NONE:
            raise ValueError(f"template cells must be symbols 0..{PALETTE - 1} or NONE")
        if table.min(initial=1) < 1:
            raise ValueError("table entries must be at least 1")
        batch, count = len(table), len(self._specs)
        if batch == 0:  # nothing to code: an empty step, which update() takes as a no-op
            empty = np.empty((count, 0), np.int64)
            step = MatchStep(template, empty, empty, empty, [], empty, empty)
            return np.empty((0, PALETTE), np.int64), step
        # Keys, slots and everything read from the state, for every level at once.
        first = first_of(template) if self._needs_first else template
        features = [template]
        if self._has_patterns:
            features += [first] if self._full_pattern else []
            features += [np.minimum(first[:, :s], s) for s in self._short]
        if len(features) > 1:
            features = [np.concatenate(features, axis=1)]
        keys = self._hash_matrix @ features[0].T  # [levels, B]
        keys += self._hash_const
        keys &= 0xFFFFFFFF
        slots = keys >> self._shift  # within the level
        numbered = slots + self._start
        held = self._tags[numbered] == keys
        at = np.where(held, numbered, self._empty_slot)  # a slot not held reads zeros
        seen = self._totals[at]
        strength = self._distinct[at]
        strength *= self._per
        strength += self._base
        spread = seen + strength
        buckets = _BUCKET_OF[seen]
        buckets += self._bucket_base
        weight = self._weights[buckets]
        counted = seen.max(axis=1).tolist()
        lowest, highest = weight.min(axis=1).tolist(), weight.max(axis=1).tolist()
        rows = np.where(held, slots + self._local, self._empty_row)
        counts = [group.counts[rows[group.rows]] for group in self._groups]
        step = MatchStep(template, keys, numbered, buckets, counts, strength, spread)
        if self._needs_outcomes:
            step.neighbours = _Neighbours(template, first, self._cells, _rows(batch))
        scaled = strength << SCALE_BITS
        step.tables = out = np.empty((count + 1, batch, PALETTE), np.int64)
        out[0] = table
        step.refined = refined = np.empty((count, batch, PALETTE), np.int64)
        for n, spec in enumerate(self._specs):
            t, fine, mixed = out[n], refined[n], out[n + 1]
            if highest[n] == 0:  # every weight 0: the mix is the input (update() needs one entry)
                np.copyto(mixed, t)
                step.idle.append(n)
                continue
            group, member = self._group_of[n]
            level_counts = counts[group][member]
            total = t.sum(axis=1)
            if spec.symbols:  # adaptive.py's rule: ((c Q + k q) 2^22) // ((n + k) Q)
                if counted[n]:
                    np.multiply(level_counts, (total << SCALE_BITS)[:, None], out=fine)
                    np.multiply(t, scaled[n][:, None], out=mixed)  # scratch until the mix
                    fine += mixed
                else:
                    np.multiply(t, scaled[n][:, None], out=fine)
                _divide_rows(fine, spread[n] * total)
            else:
                step.neighbours.refine(
                    t, total, level_counts, strength[n], spread[n], spec.size, fine
                )
            np.maximum(fine, 1, out=fine)
            if lowest[n] == WEIGHT_ONE:
                np.copyto(mixed, fine)
            else:
                np.subtract(fine, t, out=mixed)
                mixed *= weight[n][:, None]
                mixed >>= WEIGHT_BITS
                mixed += t
        return out[count], step

    def _refined_at(self, step: MatchStep, n: int, symbols, outcome, chosen) -> np.ndarray:
        """Level n's refined entry at each window's symbol [B], for a level tables() left
        out: what refine() would have put there, worked out for that entry alone."""
        spec = self._specs[n]
        table = step.tables[n]
        total = table.sum(axis=1)
        group, member = self._group_of[n]
        count = step.counts[group][member][_rows(len(symbols))[0], outcome]
        if spec.symbols:
            mass = chosen
        else:  # the symbol's outcome: its leading template cell's share, or novel
            share = table.take(step.neighbours.cells[:, : spec.size])
            share *= step.neighbours.leads[:, : spec.size]
            novel = total - share.sum(axis=1)
            lead = outcome < spec.size
            mass = np.where(lead, chosen, novel)
        merged = ((count * total + step.strength[n] * mass) << SCALE_BITS) // (
            step.spread[n] * total
        )
        if not spec.symbols:  # a novel symbol takes its share of the novel mass
            merged = np.where(lead, merged, chosen * merged // novel)
        return np.maximum(merged, 1)

    def update(self, step: MatchStep, symbols: np.ndarray) -> None:
        """Learn one step's coded symbols (a slot two keys want goes to the later window)."""
        symbols = np.asarray(symbols, np.int64)
        if symbols.shape != (len(step.template),):
            raise ValueError(f"expected {len(step.template)} symbols, got {symbols.shape}")
        if symbols.min(initial=0) < 0 or symbols.max(initial=0) >= PALETTE:
            raise ValueError(f"symbols must be 0..{PALETTE - 1}")
        batch = len(symbols)
        if batch == 0:
            return
        pick = _rows(batch)[0]
        if self._needs_outcomes:  # a neighbour level's: the first cell with the symbol
            found = np.where(step.template == symbols[:, None], self._cells, self.size)
            outcomes = np.where(self._symbols, symbols, np.minimum(found.min(axis=1), self._sizes))
        else:
            outcomes = np.broadcast_to(symbols, step.keys.shape)
        chosen = step.tables[:, pick, symbols]  # [levels + 1, B]: inputs, then outputs
        gain = step.refined[:, pick, symbols]
        for n in step.idle:
            gain[n] = self._refined_at(step, n, symbols, outcomes[n], chosen[n])
        gain -= chosen[:-1]
        gain *= LEARNING_RATE
        gain //= chosen[1:]
        weights = self._weights
        np.add.at(weights, step.buckets, gain)
        np.minimum(np.maximum(weights, 0, out=weights), WEIGHT_ONE, out=weights)
        # A slot addressed this step ends up holding the key of the last window that
        # addressed it (reset if that is a new key); windows of other keys are dropped.
        numbered, keys = step.slots, step.keys
        index = numbered * self._outcomes
        index += self._flat_base
        index += outcomes
        fresh = self._tags[numbered] != keys
        if fresh.any():
            kept = None
            slots, hashes = numbered.reshape(-1).tolist(), keys.reshape(-1).tolist()
            pairs = set(zip(slots, hashes, strict=True))
            if len(pairs) != len(set(slots)):  # two keys want one slot: the later window's
                winner = dict(zip(slots, hashes, strict=True))  # level by level, window order
                kept = keys == np.array([winner[slot] for slot in slots]).reshape(keys.shape)
                fresh &= kept  # a slot is reset once per window of its winner: the same reset
            if fresh.any():
                taken = numbered[fresh]
                self._tags[taken] = keys[fresh]
                self._totals[taken] = 0
                self._distinct[taken] = 0
                for group in self._groups:
                    mine = fresh[group.rows]
                    if mine.any():
                        group.counts[numbered[group.rows][mine] - group.start] = 0
            if kept is not None:
                numbered, index = numbered[kept], index[kept]
        numbered, index = numbered.reshape(-1), index.reshape(-1)
        flat = self._counts_flat
        new = flat[index] == 0
        if new.any():  # an outcome new to its slot (once, if two windows bring it)
            pairs = dict(zip(index[new].tolist(), numbered[new].tolist(), strict=True))
            np.add.at(self._distinct, list(pairs.values()), 1)
        # uint16 increments: numpy's fast path needs the value in the array's own type.
        np.add.at(flat, index, self._ones[: len(index)])
        totals = self._totals
        np.add.at(totals, numbered, 1)
        over = totals[numbered] > COUNT_LIMIT
        if over.any():
            full = np.unique(numbered[over])
            for group in self._groups:
                rows = full[(full >= group.start) & (full < group.start + len(group.counts) - 1)]
                if len(rows):
                    halved = (group.counts[rows - group.start] + 1) >> 1
                    group.counts[rows - group.start] = halved
                    totals[rows] = halved.sum(axis=1, dtype=np.int64)


class _Neighbours:
    """What a step's neighbour-outcome levels share: where each template cell's symbol
    sits in the flattened tables, which cells lead (are the first with their value), and
    per level size, the leads' places in the refined table and in the merged outcomes."""

    def __init__(self, template: np.ndarray, first: np.ndarray, cells, rows) -> None:
        """cells: np.arange(template cells); rows: _rows(B)."""
        self.leads = first == cells
        self.cells = np.minimum(template, PALETTE - 1)
        self.cells += rows[1]
        self._places: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def places(self, size: int) -> tuple[np.ndarray, np.ndarray]:
        """Flat indexes of the leads among the first `size` cells: in the tables [B, 512],
        and in the outcomes [B, size + 1]."""
        if size not in self._places:
            rows, cols = np.nonzero(self.leads[:, :size])
            self._places[size] = (self.cells[rows, cols], rows * (size + 1) + cols)
        return self._places[size]

    def refine(self, table, total, counts, strength, spread, size, out) -> None:
        """A neighbour-outcome level's refined table into `out` (before the max with 1):
        the table's mass on each outcome (a cell that is the first with its value carries
        its symbol's share; novel, every other symbol's), blended with the counts,
        R_o = ((c_o T + k Q_o) 2^22) // ((n + k) T), then spread back (novel in
        proportion to the table)."""
        outcome = np.empty((len(table), size + 1), np.int64)
        share = outcome[:, :size]
        np.take(table, self.cells[:, :size], out=share)
        share *= self.leads[:, :size]
        np.subtract(total, share.sum(axis=1), out=outcome[:, size])
        merged = counts * total[:, None]
        merged += outcome * strength[:, None]
        merged <<= SCALE_BITS
        merged //= (spread * total)[:, None]
        np.multiply(table, merged[:, size:], out=out)
        _divide_rows(out, outcome[:, size])
        put, take = self.places(size)
        out.reshape(-1)[put] = merged.reshape(-1)[take]
