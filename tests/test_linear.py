"""Linear levels (the kind-3 LINEAR feature, format/SPEC.md "Linear levels";
codec/core/linear.py): the float64 product must be the exact integer table, the update must
learn from SPEC's scalar values, the header must carry the bit (and refuse it where it has
no meaning), and an image must round-trip through the pipelines with it, which a decoder
that ignored the bit could not do."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from igpt_codec.core.adaptive import AdaptiveMixer
from igpt_codec.core.linear import FIX_BITS, LinearMixer, coefficients, reference_table
from igpt_codec.core.mixers import AdaptiveStage, LinearStage, MatchStage, mixer_for
from igpt_codec.format import InvalidFieldError, TokenChecksumError
from igpt_codec.format.records import (
    BAND_CHECKS,
    CODING_ADAPTIVE,
    CODING_EXACT,
    CODING_FLOAT32,
    CODING_MATCH,
    KIND_FULL_IMAGE,
    LINEAR_LEVELS,
    FullImageHeader,
)

COUNT_MAX = 1023 + 255  # COUNT_LIMIT plus one step's windows
FP = bytes(range(8))


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
    """Every term is at most 2^44 and the sum below 2^46 (coefficients' bounds), so a float64
    matrix product gives the integer sum exactly; checked against Python integers. The
    totals stay within SPEC's 2^22 + 512 (coding 3's levels and the coder rely on it)."""
    freqs, counts, seen, spread, weight = step
    coeffs = coefficients(freqs.sum(axis=1), seen, spread, weight)
    assert (coeffs >= 0).all()
    vectors = np.concatenate([freqs[:, None], counts.transpose(1, 0, 2)], axis=1)
    terms = coeffs.astype(object)[:, :, None] * vectors.astype(object)  # Python integers
    assert terms.max() <= 1 << 44
    assert terms.sum(axis=1).max() < 1 << 46
    product = np.matmul(coeffs.astype(np.float64)[:, None, :], vectors.astype(np.float64))[:, 0]
    table = np.maximum(np.floor(product * 2.0**-FIX_BITS), 1).astype(np.int64)
    reference = reference_table(freqs, counts, seen, spread, weight)
    assert table.tolist() == reference
    assert max(sum(row) for row in reference) <= (1 << 22) + 512


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


def _spec_update_values(freqs, counts_at_x, seen, strength, weight, symbols):
    """SPEC.md's scalar q, r, m of each level at the coded symbols, by Python integers:
    (tables [4][B], refined [3][B])."""
    tables, refined = [[], [], [], []], [[], [], []]
    for b, x in enumerate(symbols):
        total = int(freqs[b].sum())
        q = max(1, (int(freqs[b, x]) << 22) // total)
        tables[0].append(q)
        for level in range(3):
            n, k, w = int(seen[level, b]), int(strength[level, b]), int(weight[level, b])
            r = max(1, ((int(counts_at_x[level][b]) << 22) + k * q) // (n + k))
            m = q + ((w * (r - q)) >> 12)
            assert m >= 1
            refined[level].append(r)
            tables[level + 1].append(m)
            q = m
    return tables, refined


def test_the_mixer_matches_spec_over_a_run_of_steps(monkeypatch) -> None:
    """A LinearMixer fed 300 steps of a random image: every table equals reference_table on
    the state it was made from, and every update learns SPEC's scalar values."""
    rng = np.random.default_rng(11)
    mixer = LinearMixer(capacity=64)  # small: the levels also forget on the way
    learned = []
    real_learn = mixer._learn

    def spy(rows, buckets, tables, refined, symbols, *known):
        learned.append((tables.tolist(), refined.tolist()))
        real_learn(rows, buckets, tables, refined, symbols, *known)

    monkeypatch.setattr(mixer, "_learn", spy)
    palette = rng.integers(0, 512, 6)  # few colours: contexts repeat and counts grow
    for _ in range(300):
        batch = int(rng.integers(1, 5))
        freqs = rng.integers(1, 1 << 16, (batch, 512))
        freqs[:, palette] <<= 4
        neighbours = rng.choice(np.append(palette, 512), (batch, 4))
        table, step = mixer.tables(freqs, neighbours)
        counts = mixer._counts[step.rows].reshape(3, batch, 512)
        reference = reference_table(
            freqs, counts, step.spread - step.strength, step.spread, step.weight
        )
        assert table.tolist() == reference
        symbols = rng.choice(palette, batch)
        at_x = counts[:, np.arange(batch), symbols].tolist()
        expected = _spec_update_values(
            freqs, at_x, step.spread - step.strength, step.strength, step.weight, symbols
        )
        mixer.update(step, symbols)
        assert learned[-1] == (expected[0], expected[1])
    assert mixer._weights.min() < 4096  # the weights moved: the update was exercised


def test_the_linear_table_codes_as_well_as_coding_2s() -> None:
    """The same state makes nearly the same table both ways (the roundings differ): on a
    run of steps the ideal bits of the two agree within 0.1%."""
    rng = np.random.default_rng(3)
    mixers = (AdaptiveMixer(), LinearMixer())
    bits = [0.0, 0.0]
    palette = rng.integers(0, 512, 8)
    for _ in range(400):
        freqs = rng.integers(1, 1 << 12, (4, 512))
        neighbours = rng.choice(palette, (4, 4))
        symbols = rng.choice(palette, 4)
        for i, mixer in enumerate(mixers):
            table, step = mixer.tables(freqs, neighbours)
            picked = table[np.arange(4), symbols] / table.sum(axis=1)
            bits[i] -= float(np.log2(picked).sum())
            mixer.update(step, symbols)
    assert abs(bits[1] / bits[0] - 1) < 1e-3, bits


def test_mixer_for_picks_the_linear_stage() -> None:
    two, three = mixer_for(CODING_ADAPTIVE, linear=True), mixer_for(CODING_MATCH, linear=True)
    assert [type(s) for s in two.stages] == [LinearStage]
    assert [type(s) for s in three.stages] == [LinearStage, MatchStage]
    assert [type(s) for s in mixer_for(CODING_ADAPTIVE).stages] == [AdaptiveStage]
    with pytest.raises(ValueError, match="no levels"):
        mixer_for(CODING_EXACT, linear=True)


# --- the header bit ---------------------------------------------------------------------


@pytest.mark.parametrize("coding", [CODING_ADAPTIVE, CODING_MATCH])
@pytest.mark.parametrize("band_checks", [False, True])
def test_the_linear_bit_round_trips(coding: int, band_checks: bool) -> None:
    header = FullImageHeader(
        FP, 50, 90, "RGB", 32, 4, 2, coding, chain_segments=True, band_checks=band_checks,
        linear_levels=True,
    )  # fmt: skip
    body = header.to_bytes()
    assert body[-1] == LINEAR_LEVELS | (BAND_CHECKS if band_checks else 0)
    assert FullImageHeader.from_bytes(header.head_bits, FP, body) == header
    plain = dataclasses.replace(header, linear_levels=False)
    assert plain.to_bytes() == (body[:-1] + bytes([BAND_CHECKS]) if band_checks else body[:-1])


@pytest.mark.parametrize("coding", [CODING_EXACT, CODING_FLOAT32])
def test_the_linear_bit_needs_levels(coding: int) -> None:
    """LINEAR on a coding without coding 2's levels means nothing: refused both ways."""
    with pytest.raises(InvalidFieldError, match="coding 2 or 3"):
        FullImageHeader(FP, 50, 90, "RGB", 32, 4, 2, coding, linear_levels=True)
    body = FullImageHeader(FP, 50, 90, "RGB", 32, 4, 2, coding).to_bytes()
    head = KIND_FULL_IMAGE | coding << 4
    with pytest.raises(InvalidFieldError, match="coding 2 or 3") as info:
        FullImageHeader.from_bytes(head, FP, body + bytes([LINEAR_LEVELS]))
    assert "\n" not in str(info.value)


# --- through the pipelines ----------------------------------------------------------------


@pytest.fixture(scope="module")
def photo_case():
    from conftest import shared_photo

    from igpt_codec.core.palette import pixels_to_tokens
    from igpt_codec.pipelines.fullres import FullImage
    from igpt_codec.runtime.bundle import load_bundle
    from igpt_codec.runtime.exact_runner import ExactTokenModel

    bundle = load_bundle(None)
    model = ExactTokenModel(bundle, threads=1)
    photo = shared_photo("wikipedia-photos/045.png").resize((96, 40))
    rgb = np.asarray(photo, np.uint8)
    tokens = pixels_to_tokens(rgb, bundle.palette).reshape(rgb.shape[:2])
    return bundle, model, FullImage(tokens, "RGB"), tokens


@pytest.mark.parametrize("coding", [CODING_ADAPTIVE, CODING_MATCH])
def test_linear_levels_round_trip_and_the_bit_is_honoured(photo_case, coding: int) -> None:
    """The writer's default sets LINEAR; the decoder recomputes every table and gets the
    tokens back; the same payload read as without LINEAR fails the token check (the bit is
    what the decoder follows, and the two arithmetics differ on a real photo)."""
    from igpt_codec.pipelines.fullres import decode_full, encode_full, make_header

    bundle, model, image, tokens = photo_case
    header = make_header(image, bundle.fingerprint, 32, coding)
    assert header.linear_levels
    record, _ = encode_full(model, image, header, workers=1)
    assert record.header.linear_levels and record.header.coding == coding
    assert np.array_equal(decode_full(model, record, 0, workers=1).tokens, tokens)
    flipped = dataclasses.replace(
        record, header=dataclasses.replace(record.header, linear_levels=False)
    )
    with pytest.raises(TokenChecksumError):
        decode_full(model, flipped, 0, workers=1)


def test_linear_and_rounded_levels_cost_the_same_bits(photo_case) -> None:
    """On a photo crop the two arithmetics' records differ by a few bytes at most."""
    from igpt_codec.pipelines.fullres import encode_full, make_header

    bundle, model, image, _ = photo_case
    sizes = []
    for linear in (False, True):
        header = make_header(image, bundle.fingerprint, 32, CODING_ADAPTIVE, linear_levels=linear)
        record, _ = encode_full(model, image, header, workers=1)
        sizes.append(sum(len(s.payload) for s in record.segments))
    assert abs(sizes[1] - sizes[0]) <= max(8, sizes[0] // 500), sizes
