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

from dataclasses import dataclass

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


def window_template(cells: np.ndarray, cell: int, width: int, size: int = len(TEMPLATE)):
    """The first `size` TEMPLATE cells of one cell in each window [B, size] int64; NONE
    outside the window. Only cells before `cell` are read (both sides know them)."""
    row, col = divmod(cell, width)
    out = np.full((len(cells), size), NONE, np.int64)
    for i, (dx, dy) in enumerate(TEMPLATE[:size]):
        if 0 <= col + dx < width and row + dy >= 0:
            out[:, i] = cells[:, cell + dy * width + dx]
    return out


def first_of(template: np.ndarray) -> np.ndarray:
    """For each template cell, the index of the first cell holding its value [B, size];
    a cell outside the window (NONE) gets `size` (it can be no outcome)."""
    size = template.shape[1]
    equal = template[:, :, None] == template[:, None, :]  # [B, i, j]
    first = np.argmax(equal, axis=2).astype(np.int64)  # the first j with the value of i
    return np.where(template == NONE, size, first)


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


def level_keys(spec: LevelSpec, template: np.ndarray, first: np.ndarray, number: int):
    """The 32-bit key hash of each window's context under one level [B]."""
    part = template[:, : spec.size] if spec.kind == "values" else first[:, : spec.size]
    if spec.kind == "pattern":  # first_of over the level's cells only: map `len` to size
        part = np.minimum(part, spec.size)
    return _hash(part, ((number + 1) * 0x51ED27 + KINDS.index(spec.kind)) & 0xFFFF)


_BUCKET_OF = np.minimum(
    np.array([n.bit_length() for n in range(COUNT_LIMIT + MAX_STEP + 1)]), BUCKETS - 1
)


@dataclass
class _Level:
    spec: LevelSpec
    tags: np.ndarray  # [slots] int64: the key hash held, -1 for none
    counts: np.ndarray  # [slots, size + 1] uint16: outcomes (a template cell, or novel)
    totals: np.ndarray  # [slots] int64
    distinct: np.ndarray  # [slots] int64
    weights: np.ndarray  # [BUCKETS] int64

    @classmethod
    def empty(cls, spec: LevelSpec, slot_bits: int) -> _Level:
        slots = 1 << slot_bits
        return cls(
            spec,
            np.full(slots, -1, np.int64),
            np.zeros((slots, spec.outcomes), np.uint16),
            np.zeros(slots, np.int64),
            np.zeros(slots, np.int64),
            np.full(BUCKETS, spec.initial_weight, np.int64),
        )


@dataclass
class MatchStep:
    """What one step's tables were made from, kept until its symbols are known."""

    template: np.ndarray
    slots: list[np.ndarray]
    keys: list[np.ndarray]
    buckets: list[np.ndarray]
    inputs: list[np.ndarray]
    refined: list[np.ndarray]
    mixed: list[np.ndarray]


def _neighbour_refined(table, total, template, first, spec, counts, seen, strength) -> np.ndarray:
    """A neighbour-outcome level's refined tables: the table's mass on each outcome (a
    cell that is the first with its value carries its symbol's share; novel, every other
    symbol's), blended with the counts, R_o = ((c_o T + k Q_o) 2^22) // ((n + k) T), then
    spread back (novel in proportion to the table)."""
    pick = np.arange(len(table))[:, None]
    cells = template[:, : spec.size]
    leads = first[:, : spec.size] == np.arange(spec.size)
    share = np.where(leads, table[pick, np.minimum(cells, PALETTE - 1)], 0)
    outcome = np.concatenate([share, total - share.sum(axis=1, keepdims=True)], axis=1)
    merged = ((counts * total + strength * outcome) << SCALE_BITS) // ((seen + strength) * total)
    refined = table * merged[:, -1:] // outcome[:, -1:]
    rows, cols = np.nonzero(leads)
    refined[rows, cells[rows, cols]] = merged[rows, cols]
    return refined


class MatchMixer:
    """One chain's neighbour-copy levels: tables() for a step, then update() with its symbols."""

    def __init__(
        self, levels: tuple[LevelSpec, ...] = DEFAULT_LEVELS, slot_bits: int | None = None
    ) -> None:
        """slot_bits: every level's slots (tests make it small to collide); None: each
        level's own."""
        if slot_bits is not None and not 1 <= slot_bits <= 24:
            raise ValueError(f"slot_bits must be 1..24, got {slot_bits}")
        self._levels = [_Level.empty(spec, slot_bits or spec.slot_bits) for spec in levels]
        self.size = max((spec.size for spec in levels), default=1)
        """Template cells tables() needs (window_template(..., size=self.size))."""

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
        first = first_of(template)
        step = MatchStep(template, [], [], [], [], [], [])
        for number, level in enumerate(self._levels):
            spec = level.spec
            keys = level_keys(spec, template, first, number)
            slots = keys >> (32 - (len(level.tags) - 1).bit_length())
            held = level.tags[slots] == keys
            counts = np.where(held[:, None], level.counts[slots], 0).astype(np.int64)
            seen = np.where(held, level.totals[slots], 0)[:, None]
            distinct = np.where(held, level.distinct[slots], 0)[:, None]
            strength = spec.strength_base + spec.strength_per_symbol * distinct
            total = table.sum(axis=1, keepdims=True)
            if spec.symbols:  # adaptive.py's rule: ((c Q + k q) 2^22) // ((n + k) Q)
                refined = ((counts * total + strength * table) << SCALE_BITS) // (
                    (seen + strength) * total
                )
            else:
                refined = _neighbour_refined(
                    table, total, template, first, spec, counts, seen, strength
                )
            np.maximum(refined, 1, out=refined)
            buckets = _BUCKET_OF[seen[:, 0]]
            weight = level.weights[buckets][:, None]
            mixed = ((table << WEIGHT_BITS) + weight * (refined - table)) >> WEIGHT_BITS
            np.maximum(mixed, 1, out=mixed)
            for part, value in zip(
                (step.slots, step.keys, step.buckets, step.inputs, step.refined, step.mixed),
                (slots, keys, buckets, table, refined, mixed),
                strict=True,
            ):
                part.append(value)
            table = mixed
        return table, step

    def update(self, step: MatchStep, symbols: np.ndarray) -> None:
        """Learn one step's coded symbols (a slot two keys want goes to the later window)."""
        symbols = np.asarray(symbols, np.int64)
        if symbols.shape != (len(step.template),):
            raise ValueError(f"expected {len(step.template)} symbols, got {symbols.shape}")
        if symbols.min(initial=0) < 0 or symbols.max(initial=0) >= PALETTE:
            raise ValueError(f"symbols must be 0..{PALETTE - 1}")
        pick = np.arange(len(symbols))
        for level, slots, keys, buckets, table, refined, mixed in zip(
            self._levels,
            step.slots,
            step.keys,
            step.buckets,
            step.inputs,
            step.refined,
            step.mixed,
            strict=True,
        ):
            gain = refined[pick, symbols] - table[pick, symbols]
            np.add.at(level.weights, buckets, (LEARNING_RATE * gain) // mixed[pick, symbols])
            np.clip(level.weights, 0, WEIGHT_ONE, out=level.weights)
            size = level.spec.size
            hits = step.template[:, :size] == symbols[:, None]
            outcomes = np.where(hits.any(axis=1), np.argmax(hits, axis=1), size)
            if level.spec.symbols:
                outcomes = symbols
            width = level.spec.outcomes
            # A slot addressed this step ends up holding the key of the last window that
            # addressed it (reset if that is a new key); windows of other keys are dropped.
            held, where = np.unique(slots, return_inverse=True)
            last = np.zeros(len(held), np.int64)
            np.maximum.at(last, where, pick)
            winners = keys[last]
            taken = level.tags[held] != winners
            if taken.any():
                fresh_slots = held[taken]
                level.tags[fresh_slots] = winners[taken]
                level.counts[fresh_slots] = 0
                level.totals[fresh_slots] = 0
                level.distinct[fresh_slots] = 0
            keep = keys == level.tags[slots]
            rows, outs = slots[keep], outcomes[keep]
            new = level.counts[rows, outs] == 0
            if new.any():  # an outcome new to its slot (once, if two windows bring it)
                pairs = np.unique(rows[new] * width + outs[new])
                np.add.at(level.distinct, pairs // width, 1)
            np.add.at(level.counts, (rows, outs), 1)
            np.add.at(level.totals, rows, 1)
            over = level.totals[rows] > COUNT_LIMIT
            if over.any():
                full = np.unique(rows[over])
                halved = (level.counts[full] + 1) >> 1
                level.counts[full] = halved
                level.totals[full] = halved.sum(axis=1, dtype=np.int64)
