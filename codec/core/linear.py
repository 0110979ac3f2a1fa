"""Coding 2's three levels as one exact linear combination (format/SPEC.md, "Linear
levels": the kind-3 `LINEAR` feature).

Why: coding 2's table arithmetic (adaptive.py) was about a fifth of a full-resolution
decode's and encode's CPU: three levels of about ten numpy passes over [B, 512] int64 each,
because every level floors, divides and clamps its whole table before the next level reads
it. Without those per-level roundings the levels are linear in their inputs. With every
level's input taken to total 2^22, level l turns its input q into

    r = (2^22 c + k q) / (n + k)          the counts-refined table
    m = q + w'(r - q) = alpha q + beta c  alpha = 1 - w' n / (n + k), beta = w' 2^22 / (n + k)

(w' = w / 4096), so the output of all three levels, from the model's table f with total F,
is one weighted sum of four vectors with per-row coefficients:

    t = A_f f + A_0 c_0 + A_1 c_1 + A_2 c_2
    A_f = alpha_0 alpha_1 alpha_2 2^22 / F,  A_0 = alpha_1 alpha_2 beta_0,
    A_1 = alpha_2 beta_1,                    A_2 = beta_2.

The coefficients are integers in fixed point of FIX_BITS = 22 fractional bits, each floored
in the order `coefficients` gives, and

    t[s] = max(1, (a_f f[s] + a_0 c_0[s] + a_1 c_1[s] + a_2 c_2[s]) >> 22).

Every product is at most 2^44 and the sum below 2^46, so a float64 matrix product computes
the sum exactly in any order, with or without FMA: one BLAS call per step instead of about
33 numpy passes. The state (contexts, counts, capacity, halving) and the weight update are
coding 2's (AdaptiveMixer); the update reads each level's values at the coded symbol from
the same formulas per cell (scalars), not from whole tables.

Measured against coding 2 (docs/speed.md, "Session 27"): the same bytes within a few per
photo, `tables` about half the CPU.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from igpt_codec.core.adaptive import (
    PALETTE,
    SCALE_BITS,
    WEIGHT_BITS,
    WEIGHT_ONE,
    AdaptiveMixer,
)

FIX_BITS = 22
"""Fractional bits of the coefficients: alpha <= 2^22 and beta <= 2^40 keep every product
of two coefficients below 2^62."""

_UNIT = 2.0**-FIX_BITS


def coefficients(
    totals: np.ndarray, seen: np.ndarray, spread: np.ndarray, weight: np.ndarray
) -> np.ndarray:
    """Per-row coefficients [B, 4] int64 (a_f, a_0, a_1, a_2) in FIX_BITS fixed point.

    totals: F [B] (the model tables' totals); seen: n [3, B]; spread: D = n + k [3, B]
    (>= 16); weight: w [3, B] (0..4096). Floors, in this order:
        alpha_l = (2^22 (4096 D - w n)) // (4096 D)     <= 2^22, numerator < 2^47
        beta_l  = (2^32 w) // D                          <= 2^40 (D >= 16, w <= 2^12)
        a_2 = beta_2
        a_1 = (alpha_2 beta_1) >> 22                     product < 2^62
        a_12 = (alpha_2 alpha_1) >> 22                   <= 2^22
        a_0 = (a_12 beta_0) >> 22
        a_f = (((a_12 alpha_0) >> 22) 2^22) // F          <= 2^44 / F
    Bounds of the table's terms: a_f f <= 2^44 f / F <= 2^44; a_l c <= beta_l c <=
    2^32 w c / D < 2^44, as c <= n < D.
    """
    unit = WEIGHT_ONE * spread
    alpha = ((unit - weight * seen) << FIX_BITS) // unit
    beta = (weight << (FIX_BITS + SCALE_BITS - WEIGHT_BITS)) // spread
    a12 = (alpha[2] * alpha[1]) >> FIX_BITS
    out = np.empty((len(totals), 4), np.int64)
    out[:, 3] = beta[2]
    out[:, 2] = (alpha[2] * beta[1]) >> FIX_BITS
    out[:, 1] = (a12 * beta[0]) >> FIX_BITS
    out[:, 0] = (((a12 * alpha[0]) >> FIX_BITS) << SCALE_BITS) // totals
    return out


@dataclass
class LinearStep:
    """What one step's table was made from, kept until its symbols are known."""

    rows: np.ndarray  # [3B] context rows, level by level
    buckets: np.ndarray  # [3B]
    freqs: np.ndarray  # [B, 512] the model's tables
    totals: np.ndarray  # [B]
    strength: np.ndarray  # k [3, B]
    spread: np.ndarray  # D = n + k [3, B]
    weight: np.ndarray  # w [3, B]


class LinearMixer(AdaptiveMixer):
    """Coding 2's state and update, its table as one linear combination (module docstring)."""

    def tables(self, freqs: np.ndarray, neighbours: np.ndarray) -> tuple[np.ndarray, LinearStep]:  # type: ignore[override]
        """Tables [B, 512] for one cell step (entries >= 1, totals <= 2^22 + 512); pass the
        step to update() once the symbols are known."""
        batch = len(freqs)
        freqs = np.asarray(freqs, np.int64)
        rows, buckets, seen, strength = self._contexts(freqs, neighbours)
        seen3, strength3 = seen.reshape(3, batch), strength.reshape(3, batch)
        spread = seen3 + strength3
        weight = self._weights[buckets].reshape(3, batch)
        totals = freqs.sum(axis=1)
        coeffs = coefficients(totals, seen3, spread, weight).astype(np.float64)
        # 2^-22 folded into the coefficients: scaling by a power of two is exact, so every
        # product and partial sum is the exact integer's, scaled.
        coeffs *= _UNIT
        vectors = np.empty((batch, 4, PALETTE), np.float64)
        vectors[:, 0] = freqs
        vectors[:, 1:] = self._counts[rows].reshape(3, batch, PALETTE).transpose(1, 0, 2)
        # Exact: every term is an integer <= 2^44 and every partial sum one below 2^46.
        mixed = np.matmul(coeffs[:, None, :], vectors)[:, 0]
        # The sum is never negative, so truncation toward zero is the floor.
        out = mixed.astype(np.int64)
        np.maximum(out, 1, out=out)
        step = LinearStep(rows, buckets, freqs, totals, strength3, spread, weight)
        return out, step

    def update(self, step: LinearStep, symbols: np.ndarray) -> None:  # type: ignore[override]
        """Coding 2's update, each level's q, r and m at the coded symbols from the scalar
        formulas of SPEC.md's "Linear levels"."""
        symbols = np.asarray(symbols, np.int64)
        batch = len(symbols)
        pairs = step.rows.reshape(3, batch) * PALETTE
        pairs += symbols
        counts = self._counts_flat[pairs]
        tables = np.empty((4, batch), np.int64)
        refined = np.empty((3, batch), np.int64)
        first = tables[0]
        first[:] = step.freqs[np.arange(batch), symbols]
        first <<= SCALE_BITS
        first //= step.totals
        np.maximum(first, 1, out=first)
        r = np.empty(batch, np.int64)
        for n in range(3):
            q = tables[n]
            np.left_shift(counts[n], SCALE_BITS, out=r, dtype=np.int64)
            r += step.strength[n] * q
            r //= step.spread[n]
            np.maximum(r, 1, out=refined[n])
            m = tables[n + 1]
            np.subtract(refined[n], q, out=m)
            m *= step.weight[n]
            m >>= WEIGHT_BITS
            m += q
        self._learn(step.rows, step.buckets, tables, refined, symbols, pairs, counts)


def reference_table(
    freqs: np.ndarray, counts: np.ndarray, seen: np.ndarray, spread: np.ndarray, w: np.ndarray
) -> list[list[int]]:
    """The table by Python integers, row by row (what the float64 product must equal):
    for tests, and as the plainest statement of the arithmetic."""
    coeffs = coefficients(freqs.sum(axis=1), seen, spread, w).tolist()
    out = []
    for row, (af, a0, a1, a2) in enumerate(coeffs):
        f, c0, c1, c2 = (v.tolist() for v in (freqs[row], *counts[:, row]))
        out.append(
            [
                max(1, (af * f[s] + a0 * c0[s] + a1 * c1[s] + a2 * c2[s]) >> FIX_BITS)
                for s in range(PALETTE)
            ]
        )
    return out
