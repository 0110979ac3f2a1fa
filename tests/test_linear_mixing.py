"""The linear-mixing study (studies/linear_mixing.py): its float64 product must be the exact
integer table, and its mixer must code and decode a photo crop losslessly through the
pipelines' encoder and decoder (both sides swapped to it, as the study runs them)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from studies.linear_mixing import FIX_BITS, LinearMixer, coefficients, reference_table

COUNT_MAX = 1023 + 255  # COUNT_LIMIT plus one step's windows


@st.composite
def _step(draw):
    batch = draw(st.integers(1, 4))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    peak = draw(st.sampled_from([1, 2, 1 << 10, 1 << 20]))
    freqs = rng.integers(1, peak + 1, (batch, 512))
    sparse = draw(st.booleans())
    counts = rng.integers(0, COUNT_MAX + 1, (3, batch, 512))
    if sparse:
        counts[rng.random(counts.shape) < 0.98] = 0
    seen = counts.sum(axis=2)
    if not sparse:  # totals as a context can hold them: at most COUNT_MAX
        counts = (counts * COUNT_MAX) // np.maximum(seen, 1)[..., None]
        seen = counts.sum(axis=2)
    distinct = (counts > 0).sum(axis=2)
    spread = seen + 16 + 4 * distinct
    weight = rng.integers(0, 4097, (3, batch))
    weight[:, : draw(st.integers(0, batch))] = draw(st.sampled_from([0, 4096]))
    return freqs, counts, seen, spread, weight


@settings(max_examples=60, deadline=None)
@given(_step())
def test_the_float64_product_is_the_integer_table(step) -> None:
    """Every term is at most 2^44 and the sum at most 2^46 (coefficients' bounds), so a
    float64 matrix product gives the integer sum exactly; checked against Python integers."""
    freqs, counts, seen, spread, weight = step
    coeffs = coefficients(freqs.sum(axis=1), seen, spread, weight)
    assert (coeffs >= 0).all()
    vectors = np.concatenate([freqs[:, None], counts.transpose(1, 0, 2)], axis=1)
    terms = coeffs.astype(object) * vectors.max(axis=2).astype(object)  # Python integers
    assert terms.max() <= 1 << 44
    product = np.matmul(coeffs.astype(np.float64)[:, None, :], vectors.astype(np.float64))[:, 0]
    table = np.maximum(np.floor(product * 2.0**-FIX_BITS), 1).astype(np.int64)
    assert table.tolist() == reference_table(freqs, counts, seen, spread, weight)


def test_a_level_at_weight_zero_leaves_its_input() -> None:
    """With every weight 0 the levels pass the model's table through: t = 2^22 f / F,
    floored, at least 1 (alpha = 1 and beta = 0 at w = 0)."""
    rng = np.random.default_rng(5)
    freqs = rng.integers(1, 1 << 20, (3, 512))
    counts = rng.integers(0, 50, (3, 3, 512))
    seen = counts.sum(axis=2)
    spread = seen + 16 + 4 * (counts > 0).sum(axis=2)
    table = np.array(reference_table(freqs, counts, seen, spread, np.zeros((3, 3), np.int64)))
    expected = np.maximum(1, (freqs << 22) // freqs.sum(axis=1, keepdims=True))
    assert np.abs(table - expected).max() <= 1  # a_f is floored once more than q


def test_the_linear_mixer_round_trips_through_the_pipelines(monkeypatch) -> None:
    """Encoder and decoder both swapped to the linear mixer (coding 2's record, as the study
    runs it): the decoder recomputes every table and gets the tokens back."""
    from conftest import shared_photo

    from igpt_codec.core import mixers
    from igpt_codec.core.palette import pixels_to_tokens
    from igpt_codec.format.records import CODING_ADAPTIVE
    from igpt_codec.pipelines.fullres import FullImage, decode_full, encode_full, make_header
    from igpt_codec.runtime.bundle import load_bundle
    from igpt_codec.runtime.exact_runner import ExactTokenModel

    monkeypatch.setattr(mixers, "AdaptiveMixer", LinearMixer)
    bundle = load_bundle(None)
    model = ExactTokenModel(bundle, threads=1)
    photo = shared_photo("wikipedia-photos/045.png").resize((96, 40))
    rgb = np.asarray(photo, np.uint8)
    tokens = pixels_to_tokens(rgb, bundle.palette).reshape(rgb.shape[:2])
    image = FullImage(tokens, "RGB")
    header = make_header(image, bundle.fingerprint, 32, CODING_ADAPTIVE, band_checks=None)
    record, _ = encode_full(model, image, header, workers=1)
    assert np.array_equal(decode_full(model, record, 0, workers=1).tokens, tokens)


@pytest.mark.parametrize("weight", [0, 4096])
def test_coefficients_at_the_weight_ends(weight: int) -> None:
    seen = np.array([[0], [10], [1000]])
    spread = seen + 20
    coeffs = coefficients(np.array([1 << 29]), seen, spread, np.full((3, 1), weight))
    if weight == 0:
        assert coeffs[0, 1:].tolist() == [0, 0, 0]
        assert coeffs[0, 0] == (1 << 44) >> 29
    else:  # level 2's counts weigh 2^22 / (n + k) in units of 2^-22
        assert coeffs[0, 3] == (1 << 44) // 1020
