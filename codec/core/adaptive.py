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
    total = freqs.sum(axis=1, keepdims=True)
    return np.maximum(1, (freqs << SCALE_BITS) // total)


@dataclass
class _Level:
    """One level's contexts: exact keys to rows of a dense count table."""

    slots: dict[int, int]
    counts: np.ndarray  # [MAX_CONTEXTS, 512] uint16
    totals: np.ndarray  # [MAX_CONTEXTS] int64
    distinct: np.ndarray  # [MAX_CONTEXTS] int64: symbols seen (halving never drops one)
    weights: np.ndarray  # [BUCKETS] int64

    @classmethod
    def empty(cls, contexts: int) -> _Level:
        return cls(
            {},
            np.zeros((contexts, PALETTE), np.uint16),
            np.zeros(contexts, np.int64),
            np.zeros(contexts, np.int64),
            np.full(BUCKETS, WEIGHT_ONE, np.int64),
        )

    def lookup(self, keys: np.ndarray) -> np.ndarray:
        """Rows of the given context keys, new contexts getting fresh rows."""
        if len(self.slots) + len(keys) > len(self.totals):
            self.slots.clear()
            self.counts[:] = 0
            self.totals[:] = 0
            self.distinct[:] = 0
        slots = self.slots
        rows = [slots.setdefault(key, len(slots)) for key in keys.tolist()]
        return np.array(rows, np.int64)


@dataclass
class Step:
    """What one cell step's tables were made from, kept until its symbols are known."""

    rows: list[np.ndarray]
    buckets: list[np.ndarray]
    inputs: list[np.ndarray]
    refined: list[np.ndarray]
    mixed: list[np.ndarray]


class AdaptiveMixer:
    """One chain's context counts and mixing weights (format/SPEC.md, "Coding 2")."""

    def __init__(self, capacity: int = MAX_CONTEXTS) -> None:
        """capacity: contexts per neighbour level (tests make it small to reach it)."""
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        self._capacity = capacity
        self._levels = [
            _Level.empty(PALETTE),  # the guess: one context per symbol
            _Level.empty(capacity),
            _Level.empty(capacity),
        ]

    def tables(self, freqs: np.ndarray, neighbours: np.ndarray) -> tuple[np.ndarray, Step]:
        """Refined tables [B, 512] for one cell step of B coded windows.

        freqs: the model's tables [B, 512]; neighbours: window_neighbours() of the
        same windows. Pass the returned Step to update() once the symbols are known.
        """
        if len(freqs) > min(MAX_STEP, self._capacity):
            raise ValueError(f"a step has {len(freqs)} windows; at most {MAX_STEP} fit")
        guess = np.argmax(freqs, axis=1).astype(np.int64)
        keys = self._keys(guess, neighbours)
        table = normalize(freqs)
        step = Step([], [], [], [], [])
        for level, key in zip(self._levels, keys, strict=True):
            rows = key if level is self._levels[0] else level.lookup(key)
            counts = level.counts[rows]
            seen = level.totals[rows][:, None]
            strength = STRENGTH_BASE + STRENGTH_PER_SYMBOL * level.distinct[rows][:, None]
            total = table.sum(axis=1, keepdims=True)
            # r = max(1, ((c Q + k q) 2^22) // ((n + k) Q)), in place to spare allocations.
            refined = counts * total
            refined += strength * table
            refined <<= SCALE_BITS
            refined //= (seen + strength) * total
            np.maximum(refined, 1, out=refined)
            buckets = _BUCKET_OF[seen[:, 0]]
            weight = level.weights[buckets][:, None]
            # m = max(1, ((4096 - w) q + w r) >> 12), written as 4096 q + w (r - q).
            mixed = refined - table
            mixed *= weight
            mixed += table << WEIGHT_BITS
            mixed >>= WEIGHT_BITS
            np.maximum(mixed, 1, out=mixed)
            step.rows.append(rows)
            step.buckets.append(buckets)
            step.inputs.append(table)
            step.refined.append(refined)
            step.mixed.append(mixed)
            table = mixed
        return table, step

    @staticmethod
    def _keys(guess: np.ndarray, neighbours: np.ndarray) -> list[np.ndarray]:
        """Each level's context key: the guess itself (a row of its own), then W,N and
        W,N,NW,NE as base-513 numbers (below 513^4 < 2^37)."""
        west, north, north_west, north_east = (neighbours[:, i] for i in range(4))
        wn = west * (PALETTE + 1) + north
        return [guess, wn, (wn * (PALETTE + 1) + north_west) * (PALETTE + 1) + north_east]

    def update(self, step: Step, symbols: np.ndarray) -> None:
        """Learn from one step's coded symbols (both sides call it in the same order)."""
        symbols = np.asarray(symbols, np.int64)
        pick = np.arange(len(symbols))
        for level, rows, buckets, table, refined, mixed in zip(
            self._levels,
            step.rows,
            step.buckets,
            step.inputs,
            step.refined,
            step.mixed,
            strict=True,
        ):
            gain = refined[pick, symbols] - table[pick, symbols]
            np.add.at(level.weights, buckets, (LEARNING_RATE * gain) // mixed[pick, symbols])
            np.minimum(
                np.maximum(level.weights, 0, out=level.weights), WEIGHT_ONE, out=level.weights
            )
            fresh = level.counts[rows, symbols] == 0
            if fresh.any():  # a symbol new to its context (once, if two windows bring it)
                pairs = set((rows[fresh] * PALETTE + symbols[fresh]).tolist())
                np.add.at(level.distinct, [pair // PALETTE for pair in pairs], 1)
            np.add.at(level.counts, (rows, symbols), 1)
            np.add.at(level.totals, rows, 1)
            over = level.totals[rows] > COUNT_LIMIT
            if over.any():
                full = np.unique(rows[over])
                halved = (level.counts[full] + 1) >> 1
                level.counts[full] = halved
                level.totals[full] = halved.sum(axis=1, dtype=np.int64)
