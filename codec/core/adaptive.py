"""Adaptive context mixing for full-resolution images (record coding 2, "exact-adaptive").

Why: the model was trained on whole photos squashed to 32 x 32 and sees one window at a
time, so it cannot learn what a particular photo repeats: its few colours in a flat sky,
the grain of its sand, a colour it keeps predicting one step off. Counting what actually
followed each context *in this image*, and mixing those counts into the model's table,
recovers much of that (docs/full-resolution.md, "Adaptive context mixing": 1-15% fewer
bits, most on flat photos).

How (format/SPEC.md, "Coding 2", is the normative text): the model's table is refined by
three levels in turn, each keyed by a context of this image:

1. the model's own guess (the most likely symbol of its table);
2. the left and upper neighbours (W, N);
3. W, N and the two upper diagonals (NW, NE).

Each level blends its context's counts into the table as a Dirichlet prior centred on
the table (strength k = 16 + 4 x the symbols seen in the context), then mixes that with
its input by a weight it learns online (per level and by how often the context was
seen), so a level that does not help a photo fades out instead of costing bits.

Everything is integer arithmetic on int64 (no float, no library maths), so encoder and
decoder derive the same tables on every machine. The state belongs to one chain (the
window groups at one position in every band, format/tiling.py) and is updated
once per cell step, after every window of the step has been coded: the windows of a
step never see each other's symbols, so both sides can compute a step's tables as one
batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PALETTE = 512
NONE = PALETTE
"""The neighbour value for a cell outside the window."""

SCALE_BITS = 22
"""Every level's table is scaled to about 2^22 (the model's tables are normalized to it
first); totals stay below 2^22 + 512, far inside the coder's 2^32."""

WEIGHT_BITS = 12
WEIGHT_ONE = 1 << WEIGHT_BITS
"""Mixing weights are integers 0..4096 (4096: the level's counts-refined table alone)."""

LEARNING_RATE = 82
"""Weight step per unit of relative gain (about 0.02 in weight units): measured robust
from 0.005 to 0.02 (docs/full-resolution.md)."""

STRENGTH_BASE = 16
STRENGTH_PER_SYMBOL = 4
"""k = 16 + 4 d for a context that has seen d distinct symbols: noisy contexts lean on
the model, single-colour ones on their counts."""

COUNT_LIMIT = 1023
"""A context whose total passes this after a step has its counts halved (rounded up, so
no seen symbol drops to zero): recent pixels weigh more, and counts fit 11 bits
(measured: 1023 codes 0.1-0.3% smaller than 255, 127 up to 1% larger)."""

MAX_CONTEXTS = 16384
"""Contexts a level holds per chain; a level about to pass it forgets all of them first.
Bounds memory (16384 x 512 uint16 = 16 MB per level) whatever the photo's size."""

BUCKETS = 10
"""Weights are kept per level and per bucket min(bit_length(n), 9) of the context's total n."""


MAX_STEP = 255
"""Most windows in one step (igpt_codec.format.records.MAX_SEGMENT_WINDOWS)."""

_BUCKET_OF = np.minimum(
    np.array([n.bit_length() for n in range(COUNT_LIMIT + MAX_STEP + 1)]), BUCKETS - 1
)
_ONES = np.ones(3 * MAX_STEP, np.uint16)
_BASE = (PALETTE + 1) ** np.arange(3, -1, -1, dtype=np.int64)
"""Digit weights of a base-513 key, most significant (W) first."""


def window_neighbours(cells: np.ndarray, cell: int, width: int) -> np.ndarray:
    """W, N, NW, NE of one cell in each window [B, 4]; NONE outside the window.

    `cells` [B, rows * width] holds every window's cells in raster order; only cells
    before `cell` are read, and those both sides know (context rows, padding included).
    """
    row, col = divmod(cell, width)
    out = np.full((len(cells), 4), NONE, np.int64)
    if col > 0:
        out[:, 0] = cells[:, cell - 1]
    if row > 0:
        out[:, 1] = cells[:, cell - width]
        if col > 0:
            out[:, 2] = cells[:, cell - width - 1]
        if col + 1 < width:
            out[:, 3] = cells[:, cell - width + 1]
    return out


def normalize(freqs: np.ndarray) -> np.ndarray:
    """A model table [B, 512] (entries >= 1, totals < 2^32) scaled to about 2^22."""
    freqs = np.asarray(freqs, np.int64)
    out = np.empty(freqs.shape, np.int64)
    _normalize_into(freqs, out)
    return out


def _normalize_into(freqs: np.ndarray, out: np.ndarray) -> None:
    """normalize() written into `out` (int64, freqs' shape): three passes, no temporaries,
    because a step's tables are small and numpy's per-call cost dominates."""
    total = freqs.sum(axis=1, keepdims=True)
    np.left_shift(freqs, SCALE_BITS, out=out)
    _divide_rows(out, total)
    np.maximum(out, 1, out=out)


def _divide_rows(values: np.ndarray, divisors: np.ndarray) -> None:
    """values[i] //= divisors[i] in place, one row at a time: numpy divides by a scalar
    through a precomputed reciprocal (libdivide, exact), about 30% faster than by a
    broadcast column, and the division is most of a step's arithmetic."""
    for row, divisor in zip(values, divisors.reshape(-1).tolist(), strict=True):
        np.floor_divide(row, divisor, out=row)


@dataclass
class _Level:
    """One level's contexts: exact keys to rows of a dense count table.

    The arrays are views into the mixer's stacked arrays (all three levels in one), so a
    step gathers and updates every level with one numpy call instead of three."""

    slots: dict[int, int]
    counts: np.ndarray  # [contexts, 512] uint16
    totals: np.ndarray  # [contexts] int64
    distinct: np.ndarray  # [contexts] int64: symbols seen (halving never drops one)
    weights: np.ndarray  # [BUCKETS] int64

    def lookup(self, keys: np.ndarray) -> list[int]:
        """Rows (within this level) of the given context keys, new contexts getting
        fresh rows."""
        if len(self.slots) + len(keys) > len(self.totals):
            self.slots.clear()
            self.counts[:] = 0
            self.totals[:] = 0
            self.distinct[:] = 0
        slots = self.slots
        return [slots.setdefault(key, len(slots)) for key in keys.tolist()]


@dataclass
class Step:
    """What one cell step's tables were made from, kept until its symbols are known.

    rows: [3B] every level's context rows in the stacked count table (level by level);
    buckets: [3B] their indexes into the stacked weights; tables: [4, B, 512] the
    normalized model tables then each level's mixed output; refined: [3, B, 512] each
    level's counts-refined table."""

    rows: np.ndarray
    buckets: np.ndarray
    tables: np.ndarray
    refined: np.ndarray


class AdaptiveMixer:
    """One chain's context counts and mixing weights (format/SPEC.md, "Coding 2")."""

    def __init__(self, capacity: int = MAX_CONTEXTS) -> None:
        """capacity: contexts per neighbour level (tests make it small to reach it)."""
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        self._capacity = capacity
        # Level 0 (the guess: one context per symbol), then the two neighbour levels,
        # stacked so one gather or scatter serves all three.
        self._offsets = (0, PALETTE, PALETTE + capacity)
        contexts = PALETTE + 2 * capacity
        self._counts = np.zeros((contexts, PALETTE), np.uint16)
        self._counts_flat = self._counts.reshape(-1)  # a view: (row, symbol) as one index
        self._totals = np.zeros(contexts, np.int64)
        self._distinct = np.zeros(contexts, np.int64)
        self._weights = np.full(3 * BUCKETS, WEIGHT_ONE, np.int64)
        ends = (PALETTE, PALETTE + capacity, contexts)
        self._levels = [
            _Level(
                {},
                self._counts[start:end],
                self._totals[start:end],
                self._distinct[start:end],
                self._weights[n * BUCKETS : (n + 1) * BUCKETS],
            )
            for n, (start, end) in enumerate(zip(self._offsets, ends, strict=True))
        ]
        self._bucket_base: dict[int, np.ndarray] = {}

    def tables(self, freqs: np.ndarray, neighbours: np.ndarray) -> tuple[np.ndarray, Step]:
        """Refined tables [B, 512] for one cell step of B coded windows.

        freqs: the model's tables [B, 512]; neighbours: window_neighbours() of the
        same windows. Pass the returned Step to update() once the symbols are known.
        """
        batch = len(freqs)
        freqs = np.asarray(freqs, np.int64)
        rows, buckets, seen, strength = self._contexts(freqs, neighbours)
        # Everything that does not depend on a level's input table, for all three levels.
        counts = self._counts[rows].reshape(3, batch, PALETTE)
        weight = self._weights[buckets].reshape(3, batch, 1)
        spread = (seen + strength).reshape(3, batch, 1)
        strength <<= SCALE_BITS
        scaled = strength.reshape(3, batch, 1)
        # Levels whose contexts are all new (no counts to add) and levels whose weights
        # are all 4096 (the mix is the refined table itself) skip that arithmetic.
        counted = seen.reshape(3, batch).any(axis=1).tolist()
        whole = (weight == WEIGHT_ONE).reshape(3, batch).all(axis=1).tolist()
        out = np.empty((4, batch, PALETTE), np.int64)
        refined = np.empty((3, batch, PALETTE), np.int64)
        _normalize_into(freqs, out[0])
        for n in range(3):
            table, mixed, fine = out[n], out[n + 1], refined[n]
            total = table.sum(axis=1, keepdims=True)
            # r = max(1, ((c Q + k q) 2^22) // ((n + k) Q)), as c (Q 2^22) + q (k 2^22).
            if counted[n]:
                np.multiply(counts[n], total << SCALE_BITS, out=fine)
                np.multiply(table, scaled[n], out=mixed)
                fine += mixed
            else:
                np.multiply(table, scaled[n], out=fine)
            _divide_rows(fine, spread[n] * total)
            np.maximum(fine, 1, out=fine)
            # m = max(1, ((4096 - w) q + w r) >> 12) = q + ((w (r - q)) >> 12) exactly
            # (4096 q is a multiple of 2^12), and it is at least 1 without the max:
            # q, r >= 1 and 0 <= w <= 4096 make the numerator at least 4096.
            if whole[n]:
                np.copyto(mixed, fine)
            else:
                np.subtract(fine, table, out=mixed)
                mixed *= weight[n]
                mixed >>= WEIGHT_BITS
                mixed += table
        return out[3], Step(rows, buckets, out, refined)

    def _contexts(
        self, freqs: np.ndarray, neighbours: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """A step's context rows [3B] in the stacked count table (level by level), their
        weight buckets [3B], their count totals n [3B] and prior strengths k [3B]."""
        batch = len(freqs)
        if batch > min(MAX_STEP, self._capacity):
            raise ValueError(f"a step has {batch} windows; at most {MAX_STEP} fit")
        guess = np.argmax(freqs, axis=1)
        keys = self._keys(guess, neighbours)
        rows = np.empty(3 * batch, np.int64)
        rows[:batch] = guess
        for n in (1, 2):
            rows[n * batch : (n + 1) * batch] = self._levels[n].lookup(keys[n])
            rows[n * batch : (n + 1) * batch] += self._offsets[n]
        base = self._bucket_base.get(batch)
        if base is None:
            base = self._bucket_base[batch] = np.repeat(np.arange(3) * BUCKETS, batch)
        seen = self._totals[rows]
        strength = self._distinct[rows]
        strength *= STRENGTH_PER_SYMBOL
        strength += STRENGTH_BASE
        buckets = _BUCKET_OF[seen]
        buckets += base
        return rows, buckets, seen, strength

    @staticmethod
    def _keys(guess: np.ndarray, neighbours: np.ndarray) -> list[np.ndarray]:
        """Each level's context key: the guess itself (a row of its own), then W,N and
        W,N,NW,NE as base-513 numbers (below 513^4 < 2^37)."""
        neighbours = np.asarray(neighbours, np.int64)
        return [guess, neighbours[:, :2] @ _BASE[2:], neighbours @ _BASE]

    def update(self, step: Step, symbols: np.ndarray) -> None:
        """Learn from one step's coded symbols (both sides call it in the same order).

        All three levels at once: their rows and weights are disjoint parts of the
        stacked arrays, so one scatter per kind does what three did."""
        symbols = np.asarray(symbols, np.int64)
        pick = np.arange(len(symbols))
        tables = step.tables[:, pick, symbols]  # [4, B]: each level's input, then output
        refined = step.refined[:, pick, symbols]
        self._learn(step.rows, step.buckets, tables, refined, symbols)

    def _learn(
        self,
        rows: np.ndarray,
        buckets: np.ndarray,
        tables: np.ndarray,
        refined: np.ndarray,
        symbols: np.ndarray,
        pairs: np.ndarray | None = None,
        counts: np.ndarray | None = None,
    ) -> None:
        """The update from each level's values at the coded symbols: tables [4, B] (each
        level's input, then the output), refined [3, B] (each level's counts-refined).
        `pairs` [3, B] (rows * 512 + symbols) and `counts` (the counts there, before this
        step) when the caller has them already."""
        gain = refined - tables[:3]
        gain *= LEARNING_RATE
        gain //= tables[1:]
        weights = self._weights
        np.add.at(weights, buckets, gain.reshape(-1))
        np.minimum(np.maximum(weights, 0, out=weights), WEIGHT_ONE, out=weights)
        if pairs is None:
            pairs = rows.reshape(3, -1) * PALETTE
            pairs += symbols
        pairs = pairs.reshape(-1)
        flat = self._counts_flat
        fresh = (flat[pairs] if counts is None else counts.reshape(-1)) == 0
        if fresh.any():  # a symbol new to its context (once, if two windows bring it)
            new = set(pairs[fresh].tolist())  # a handful: cheaper than np.unique
            np.add.at(self._distinct, np.fromiter(new, np.int64, len(new)) // PALETTE, 1)
        # uint16 increments: numpy's fast path needs the value in the array's own type.
        np.add.at(flat, pairs, _ONES[: len(pairs)])
        totals = self._totals
        np.add.at(totals, rows, 1)
        over = totals[rows] > COUNT_LIMIT
        if over.any():
            full = np.unique(rows[over])
            halved = (self._counts[full] + 1) >> 1
            self._counts[full] = halved
            totals[full] = halved.sum(axis=1, dtype=np.int64)
