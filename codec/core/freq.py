"""Float32 probabilities -> integer frequency tables, with exact operations only.

Encoder and decoder must derive the same table from the same float32 vector on
any CPU. Sums, exp, log and division of floats may round differently with
another SIMD path, so none are used: a float32 is widened to float64 (exact),
multiplied by 2**bits (exact: only the exponent changes), floored (exact) and
converted to an integer (exact once bounded). Everything after that is integer
arithmetic. Each symbol keeps a frequency of at least 1 so it stays codable;
rows need not sum to 1, the coder takes any total up to `MAX_TOTAL`.

FREQ_BITS = 20 costs under 0.06% over the ideal -log2 p on 512-symbol
softmaxes with entropies of 1 to 9 bits (tests/test_freq.py measures it);
16 bits would cost up to 0.9% at the peaked end, and 24 bits buy < 0.06%.
"""

from __future__ import annotations

import numpy as np

from igpt_codec.core.coder import MAX_TOTAL
from igpt_codec.core.errors import FrequencyError

FREQ_BITS = 20
"""Default scale: frequencies are floor(p * 2**FREQ_BITS), at least 1."""

MAX_FREQ_BITS = 31
"""Largest scale accepted; 2**31 plus a floor of 1 per symbol still fits `MAX_TOTAL`."""


def _validate(probs: np.ndarray, bits: int) -> None:
    if not isinstance(probs, np.ndarray):
        raise FrequencyError(f"probabilities must be a numpy array, got {type(probs).__name__}")
    if probs.dtype != np.float32:
        raise FrequencyError(f"probabilities must be float32, got {probs.dtype}")
    if probs.ndim not in (1, 2) or probs.size == 0:
        raise FrequencyError(f"probabilities must be a non-empty (V,) or (B, V), got {probs.shape}")
    if isinstance(bits, bool) or not isinstance(bits, int | np.integer):
        raise FrequencyError(f"bits must be an integer, got {bits!r}")
    if not 1 <= bits <= MAX_FREQ_BITS:
        raise FrequencyError(f"bits must be 1..{MAX_FREQ_BITS}, got {bits}")
    if not np.isfinite(probs).all():
        raise FrequencyError("probabilities contain NaN or infinity")
    if (probs < 0).any():
        raise FrequencyError(f"probabilities contain negative values (min {probs.min()!r})")


def quantize_probs(probs: np.ndarray, bits: int = FREQ_BITS) -> np.ndarray:
    """max(1, floor(p * 2**bits)) per entry, as int64 of the input's shape.

    Raises FrequencyError for anything the coder could not use: wrong dtype or
    shape, NaN, infinity, negative values, or a row whose total exceeds MAX_TOTAL.
    """
    _validate(probs, bits)
    scaled = np.floor(probs.astype(np.float64) * float(1 << int(bits)))
    # Bound each entry before the int conversion, which would wrap on huge values.
    if (scaled > MAX_TOTAL).any():
        raise FrequencyError(
            f"a probability of {probs.max()!r} scaled by 2**{bits} exceeds the coder's "
            f"total limit {MAX_TOTAL}"
        )
    freqs = np.maximum(scaled.astype(np.int64), 1)
    totals = freqs.sum(axis=-1)
    if (totals > MAX_TOTAL).any():
        raise FrequencyError(
            f"frequency total {int(totals.max())} exceeds the coder's limit {MAX_TOTAL} "
            f"(probabilities sum to far more than 1?)"
        )
    return freqs


def cumulative(freqs: np.ndarray) -> np.ndarray:
    """Exact integer prefix sums on the last axis, with a leading 0: shape (..., V + 1)."""
    freqs = np.asarray(freqs)
    if not np.issubdtype(freqs.dtype, np.integer) or freqs.ndim == 0 or freqs.shape[-1] == 0:
        raise FrequencyError(
            f"frequencies must be a non-empty integer array, got {freqs.dtype} {freqs.shape}"
        )
    cum = np.zeros((*freqs.shape[:-1], freqs.shape[-1] + 1), dtype=np.int64)
    np.cumsum(freqs, axis=-1, dtype=np.int64, out=cum[..., 1:])
    return cum
