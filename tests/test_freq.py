"""igpt_codec.core.freq against an exact rational reference, its refusals, and its cost in bits."""

from __future__ import annotations

import math
from fractions import Fraction
from itertools import accumulate

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from igpt_codec.core.coder import MAX_TOTAL
from igpt_codec.core.errors import FrequencyError
from igpt_codec.core.freq import FREQ_BITS, MAX_FREQ_BITS, cumulative, quantize_probs
from igpt_codec.format.errors import CodecError

F32 = np.float32
TINY = np.finfo(F32).smallest_subnormal
ONE_MINUS = np.nextafter(F32(1), F32(0))


def reference(probs: np.ndarray, bits: int) -> list[list[int]]:
    """max(1, floor(p * 2**bits)) with exact rationals, row by row."""
    rows = probs.reshape(-1, probs.shape[-1])
    return [[max(1, math.floor(Fraction(float(p)) * 2**bits)) for p in row] for row in rows]


def check_against_reference(probs: np.ndarray, bits: int) -> None:
    expected = reference(probs, bits)
    if any(sum(row) > MAX_TOTAL for row in expected):
        with pytest.raises(FrequencyError):
            quantize_probs(probs, bits)
        return
    got = quantize_probs(probs, bits)
    assert got.dtype == np.int64 and got.shape == probs.shape
    assert got.reshape(-1, probs.shape[-1]).tolist() == expected


ADVERSARIAL = {
    "denormals": [TINY, TINY * 7, np.finfo(F32).tiny * F32(0.5), np.finfo(F32).tiny, 0.5],
    "zeros": [0.0, -0.0, 0.0, 1.0],
    "one": [1.0],
    "just below one": [ONE_MINUS, 0.0, np.nextafter(F32(2**-20), F32(0))],
    "grid points": [2**-20, 3 * 2**-21, 2**-19 - 2**-40, 2**-21, 0.25],
    "sum above one": [0.9, 0.9, 0.9, 0.9],
    "sum below one": [0.1, 0.2, 1e-3, 0.0],
    "huge spread": [1e-38, 1e-30, 1e-7, 0.9999999, 1e-12],
    "all ones, 512": [1.0] * 512,
}


@pytest.mark.parametrize("name", sorted(ADVERSARIAL))
@pytest.mark.parametrize("bits", [1, 8, 16, FREQ_BITS, 24, MAX_FREQ_BITS])
def test_adversarial_vectors_match_reference(name: str, bits: int) -> None:
    check_against_reference(np.array(ADVERSARIAL[name], dtype=F32), bits)


@settings(max_examples=150, deadline=None)
@given(
    probs=hnp.arrays(
        F32,
        st.tuples(st.integers(1, 4), st.integers(1, 64)),
        elements=st.floats(0, 1, width=32, allow_subnormal=True),
    ),
    bits=st.integers(1, MAX_FREQ_BITS),
)
def test_random_vectors_match_reference(probs: np.ndarray, bits: int) -> None:
    check_against_reference(probs, bits)
    if probs.shape[0] > 1 and sum(map(sum, reference(probs, bits))) <= MAX_TOTAL:
        # Batched quantization is exactly row-by-row quantization.
        batched = quantize_probs(probs, bits)
        for row, expected in zip(probs, batched, strict=True):
            assert np.array_equal(quantize_probs(row, bits), expected)


@settings(max_examples=50, deadline=None)
@given(
    probs=hnp.arrays(
        F32, st.integers(1, 64), elements=st.floats(0, 4096, width=32, allow_subnormal=True)
    )
)
def test_large_values_are_refused_or_exact(probs: np.ndarray) -> None:
    check_against_reference(probs, FREQ_BITS)


@pytest.mark.parametrize(
    ("probs", "what"),
    [
        (np.array([0.5, 0.5], dtype=np.float64), "float32"),
        (np.array([0.5, 0.5], dtype=np.float16), "float32"),
        (np.array([1, 1], dtype=np.int64), "float32"),
        (np.array([0.5, np.nan], dtype=F32), "NaN"),
        (np.array([0.5, np.inf], dtype=F32), "infinity"),
        (np.array([0.5, -np.inf], dtype=F32), "infinity"),
        (np.array([0.5, -1e-30], dtype=F32), "negative"),
        (np.array([], dtype=F32), "non-empty"),
        (np.zeros((0, 4), dtype=F32), "non-empty"),
        (np.zeros((2, 2, 2), dtype=F32), "non-empty"),
        (np.array(0.5, dtype=F32), "non-empty"),
        (np.float32(0.5), "numpy array"),
        (np.array([np.finfo(F32).max], dtype=F32), "exceeds"),
        (np.full(512, 2048.0, dtype=F32), "exceeds"),  # each fits, the total does not
    ],
)
def test_unusable_vectors_are_refused(probs: np.ndarray, what: str) -> None:
    with pytest.raises(FrequencyError, match=what) as info:
        quantize_probs(probs)
    assert isinstance(info.value, CodecError) and isinstance(info.value, ValueError)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("bits", [0, -1, MAX_FREQ_BITS + 1, True, 20.0])
def test_bad_bits_are_refused(bits: object) -> None:
    with pytest.raises(FrequencyError):
        quantize_probs(np.array([0.5, 0.5], dtype=F32), bits)  # type: ignore[arg-type]


def test_non_array_is_refused() -> None:
    with pytest.raises(FrequencyError):
        quantize_probs([0.5, 0.5])  # type: ignore[arg-type]


def test_largest_scale_fits_the_coder() -> None:
    one_hot = np.zeros(512, dtype=F32)
    one_hot[0] = 1.0  # the largest total a normalised row can reach still fits
    assert quantize_probs(one_hot, MAX_FREQ_BITS).sum() == 2**MAX_FREQ_BITS + 511
    assert 2**MAX_FREQ_BITS + 511 <= MAX_TOTAL


@settings(max_examples=60, deadline=None)
@given(
    freqs=hnp.arrays(
        np.int64, st.tuples(st.integers(1, 3), st.integers(1, 40)), elements=st.integers(0, 2**32)
    )
)
def test_cumulative_is_exact_prefix_sum(freqs: np.ndarray) -> None:
    cum = cumulative(freqs)
    assert cum.dtype == np.int64 and cum.shape == (freqs.shape[0], freqs.shape[1] + 1)
    for row, crow in zip(freqs.tolist(), cum.tolist(), strict=True):
        assert crow == [0, *accumulate(row)]
    assert cumulative(freqs[0]).tolist() == cum[0].tolist()


@pytest.mark.parametrize("bad", [np.array([0.5]), np.array([], dtype=np.int64), np.int64(3)])
def test_cumulative_refuses_non_integer_or_empty(bad: np.ndarray) -> None:
    with pytest.raises(FrequencyError):
        cumulative(bad)


def softmax32(logits: np.ndarray) -> np.ndarray:
    """What a model's float32 softmax looks like (rows sum to 1 only approximately)."""
    z = logits.astype(F32)
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return (e / e.sum(axis=-1, keepdims=True)).astype(F32)


def quantization_overhead(probs: np.ndarray, bits: int) -> tuple[float, float]:
    """(entropy in bits, relative excess of the expected code length) over all rows."""
    p = probs.astype(np.float64)
    p /= p.sum(axis=-1, keepdims=True)
    ideal = -(p * np.log2(np.where(p > 0, p, 1))).sum()
    freqs = quantize_probs(probs, bits).astype(np.float64)
    q = freqs / freqs.sum(axis=-1, keepdims=True)
    actual = -(p * np.log2(q)).sum()
    return ideal / len(p), (actual - ideal) / ideal


def test_quantization_overhead_is_below_half_a_percent() -> None:
    rng = np.random.default_rng(2024)
    print("\nquantization overhead over ideal -log2 p, 512 symbols, softmax(N(0, s^2) logits):")
    worst = 0.0
    for sigma in (1.0, 2.0, 3.0, 4.0, 6.0, 8.0):
        probs = softmax32(rng.normal(scale=sigma, size=(128, 512)))
        entropy, overhead = quantization_overhead(probs, FREQ_BITS)
        _, overhead16 = quantization_overhead(probs, 16)
        print(
            f"  s={sigma:4.1f} H={entropy:5.2f} bits: {FREQ_BITS} bits {overhead:8.4%}"
            f"   (16 bits {overhead16:7.4%})"
        )
        assert 1.0 <= entropy <= 9.0
        worst = max(worst, overhead)
    print(f"  worst at {FREQ_BITS} bits: {worst:.4%}")
    assert 0 <= worst < 0.005
