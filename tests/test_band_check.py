"""Band checks (the BAND_CHECKS feature of kind-3 headers, format/SPEC.md "Band checks"):
a chain segment spans every band of its chain, so its token check alone rejects a damaged
or forged chain only at the chain's end, which can be the whole image (issue 26: 12.1 s for
a 256 x 256 file against 1.65 s without CHAIN). With a check per band the decoder stops
after the first band whose tokens are wrong.

The forged file is built byte by byte from SPEC.md (zlib's CRC-32 only); the model steps a
decode feeds are counted, so the bound holds on a loaded machine too.
"""

from __future__ import annotations

import dataclasses
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from conftest import leb128
from hypothesis import given, settings
from hypothesis import strategies as st

from igpt_codec import api
from igpt_codec.format import InvalidFieldError, PayloadError, TokenChecksumError
from igpt_codec.format.container import SegmentCheck, pack_stream, segment_check, unpack_stream
from igpt_codec.format.records import (
    BAND_CHECKS,
    CHAIN_SEGMENTS,
    CODING_ADAPTIVE,
    CODING_EXACT,
    KIND_FULL_IMAGE,
    FullImageHeader,
    FullImageRecord,
    Segment,
)
from igpt_codec.format.tiling import MAX_CONTEXT_ROWS, Tiling
from igpt_codec.pipelines.fullres import FullImage, decode_full, encode_full, make_header
from igpt_codec.runtime.bundle import load_bundle
from igpt_codec.runtime.exact_runner import ExactTokenModel

FP = bytes(range(8))
GOLDEN = Path(__file__).parent / "golden"


@pytest.fixture(scope="module")
def tiny():
    """The frozen tiny golden model: a real exact bundle whose steps are cheap."""
    return load_bundle(GOLDEN / "model")


@pytest.fixture(scope="module")
def model(tiny):
    return ExactTokenModel(tiny, threads=1)


class CountingModel:
    """The model, counting every cell it is fed (known-rows calls and single steps): the
    decoder's work, independent of the machine's speed."""

    def __init__(self, model: ExactTokenModel) -> None:
        self._model = model
        self.cells = 0

    def start(self, batch: int):
        return self._model.start(batch)

    def run(self, ids, positions, state, *args):
        self.cells += int(np.prod(np.shape(ids)))
        return self._model.run(ids, positions, state, *args)

    def stepper(self, state):
        inner = self._model.stepper(state)
        outer = self

        class Stepper:
            def step(self, ids, position):
                outer.cells += len(ids)
                return inner.step(ids, position)

        return Stepper()


# --- the header's features byte ---------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(
    width=st.integers(1, 65535),
    height=st.integers(1, 65535),
    mode=st.sampled_from(["RGB", "L", "CMYK"]),
    context=st.integers(0, MAX_CONTEXT_ROWS),
    segment=st.integers(1, 255),
    coding=st.sampled_from([CODING_EXACT, CODING_ADAPTIVE]),
    band_checks=st.booleans(),
)
def test_features_byte_round_trips(width, height, mode, context, segment, coding, band_checks):
    header = FullImageHeader(
        FP, width, height, mode, 32, context, segment, coding, chain_segments=True,
        band_checks=band_checks,
    )  # fmt: skip
    body = header.to_bytes()
    assert FullImageHeader.from_bytes(header.head_bits, FP, body) == header
    plain = dataclasses.replace(header, band_checks=False).to_bytes()
    # The feature costs one byte, after segment windows; without it the bytes are as before.
    assert body == (plain + bytes([BAND_CHECKS]) if band_checks else plain)
    if band_checks:
        bands = Tiling(width, height, 32, context, segment, True).bands()
        assert header.band_check_count == len(bands) - 1


@pytest.mark.parametrize("features", [0x00, *(1 << bit for bit in range(2, 8)), 0xFF])
def test_a_zero_or_unknown_features_byte_is_refused(features: int) -> None:
    """A zero byte would be a second encoding of a plain header; bits 2-7 are reserved (bit 1,
    LINEAR, is tests/test_linear.py's)."""
    body = FullImageHeader(FP, 50, 90, "RGB", 32, 4, 2, chain_segments=True).to_bytes()
    with pytest.raises(InvalidFieldError, match="features") as info:
        FullImageHeader.from_bytes(KIND_FULL_IMAGE, FP, body + bytes([features]))
    assert "\n" not in str(info.value)


def test_band_checks_need_the_chain_layout() -> None:
    """Without CHAIN every segment holds one band, whose token check is already a band check."""
    with pytest.raises(InvalidFieldError, match="CHAIN"):
        FullImageHeader(FP, 50, 90, "RGB", 32, 4, 2, band_checks=True)
    body = FullImageHeader(FP, 50, 90, "RGB", 32, 4, 2).to_bytes()
    with pytest.raises(InvalidFieldError, match="CHAIN"):
        FullImageHeader.from_bytes(KIND_FULL_IMAGE, FP, body + bytes([BAND_CHECKS]))


# --- the segment body -------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    checks=st.lists(st.integers(0, 255), max_size=40),
    payload=st.binary(max_size=30).filter(lambda b: not b or b[-1]),
    token_check=st.integers(0, 0xFFFF),
)
def test_segment_bodies_round_trip(checks, payload, token_check) -> None:
    segment = Segment(payload, token_check, tuple(checks))
    body = segment.to_bytes()
    assert len(body) == 2 + len(checks) + len(payload)
    assert Segment.from_bytes(body, len(checks)) == segment
    if len(body) < 2 + len(checks) + 1:
        return
    # Read with one band check more, a body's first payload byte becomes a check: a
    # different segment (the decoder's band and token checks catch it), never a crash.
    try:
        other = Segment.from_bytes(body, len(checks) + 1)
    except PayloadError:
        return
    assert other != segment


def test_a_segment_too_short_for_its_band_checks_is_refused() -> None:
    with pytest.raises(InvalidFieldError, match="ends inside its 3 band checks"):
        Segment.from_bytes(b"\x01\x02\x03\x04", 3)
    with pytest.raises(InvalidFieldError, match="token check"):
        Segment.from_bytes(b"\x01", 0)


def test_a_record_needs_one_band_check_per_band_but_the_last() -> None:
    header = FullImageHeader(FP, 40, 80, "RGB", 32, 4, 1, chain_segments=True, band_checks=True)
    assert header.band_check_count == 2  # bands at rows 0, 28 and 48
    good = FullImageRecord(header, (Segment(b"", 0, (1, 2)),) * 2)
    assert unpack_stream(pack_stream([good])) == [good]
    for checks in [(), (1,), (1, 2, 3)]:
        with pytest.raises(InvalidFieldError, match="2 band checks"):
            FullImageRecord(header, (Segment(b"", 0, checks),) * 2)


@settings(max_examples=100, deadline=None)
@given(bands=st.lists(st.lists(st.integers(0, 511), max_size=50), min_size=1, max_size=8))
def test_a_band_check_is_the_low_byte_of_the_check_of_the_tokens_so_far(bands) -> None:
    """Band check k = low 8 bits of the segment token check's CRC after bands 0..k: what
    SegmentCheck gives piece by piece equals the whole-prefix check."""
    header = FullImageHeader(FP, 40, 90, "RGB", 32, 4, 1, chain_segments=True, band_checks=True)
    running = SegmentCheck(header, 1)
    done: list[int] = []
    for tokens in bands:
        running.add(np.array(tokens, np.int64))
        done += tokens
        whole = segment_check(np.array(done, np.int64), header, 1)
        assert running.band_value == whole & 0xFF and running.value == whole


# --- encoder and decoder ----------------------------------------------------------------


@pytest.fixture(scope="module")
def coded(tiny, model):
    """A 40 x 70 image: 2 chains (windows at x = 0 and 32, the second 8 wide plus padding),
    3 bands (rows 0, 28 and 38 up): 2 band checks per segment."""
    tokens = np.random.default_rng(26).integers(0, 512, (70, 40)).astype(np.uint16)
    image = FullImage(tokens, "RGB")
    header = make_header(image, tiny.fingerprint, 32, CODING_ADAPTIVE)
    record, _ = encode_full(model, image, header)
    return tokens, record


def test_the_encoder_writes_band_checks_by_default(tiny, model, coded) -> None:
    tokens, record = coded
    header = record.header
    assert header.chain_segments and header.band_checks and header.band_check_count == 2
    assert all(len(segment.band_checks) == 2 for segment in record.segments)
    assert np.array_equal(
        decode_full(model, unpack_stream(pack_stream([record]))[0], 0).tokens, tokens
    )
    # The same tokens without the feature: the same payloads, and the stream a byte per
    # band but the last of each chain shorter (the features byte stays: LINEAR is set).
    plain = make_header(
        FullImage(tokens, "RGB"), tiny.fingerprint, 32, CODING_ADAPTIVE, band_checks=False
    )
    without, _ = encode_full(model, FullImage(tokens, "RGB"), plain)
    assert [s.payload for s in without.segments] == [s.payload for s in record.segments]
    saved = len(pack_stream([record])) - len(pack_stream([without]))
    assert header.linear_levels and without.header.linear_levels
    assert saved == header.band_check_count * len(record.segments)
    # A one-band image gains nothing from the feature, so the encoder leaves it off.
    one_band = make_header(FullImage(tokens[:20], "RGB"), tiny.fingerprint, 32, CODING_ADAPTIVE)
    assert not one_band.band_checks


def coded_tokens_per_band(header: FullImageHeader, group: int) -> list[int]:
    tiling = header.tiling
    columns = tiling.segments()[group]
    return [band.coded_rows * sum(tiling.real_width(c) for c in columns) for band in tiling.bands()]


@pytest.mark.parametrize(("segment", "band"), [(0, 0), (0, 1), (1, 0), (1, 1)])
def test_a_wrong_band_check_stops_the_decode_at_that_band(
    model, tiny, coded, segment, band
) -> None:
    """Each band check, corrupted (frame CRCs recomputed): a one-line TokenChecksumError
    naming the segment and the band, raised right after that band: the pixels decoded
    before it are the earlier chains' and this chain's earlier bands', no more."""
    _, record = coded
    damaged = list(record.segments)
    checks = list(damaged[segment].band_checks)
    checks[band] ^= 0x40
    damaged[segment] = dataclasses.replace(damaged[segment], band_checks=tuple(checks))
    stream = pack_stream([dataclasses.replace(record, segments=tuple(damaged))])
    done = []
    with pytest.raises(
        TokenChecksumError, match=rf"segment {segment}: .*band {band}'s check"
    ) as info:
        api.decompress(stream, model=tiny, threads=1, progress=lambda d, _t: done.append(d))
    assert "\n" not in str(info.value)
    header = record.header
    before = sum(sum(coded_tokens_per_band(header, g)) for g in range(segment))
    before += sum(coded_tokens_per_band(header, segment)[:band])
    assert max(done, default=0) == before


# --- a forged chain, built from SPEC.md -------------------------------------------------


def forged_chain(fingerprint: bytes, height: int, band_checks: bool) -> bytes:
    """A 32 x `height` RGB image, context rows 4, CHAIN, one window per segment: one chain,
    its segment's payload 600 random bytes (as a damaged or forged file has) with band checks
    and a token check that are nobody's. SPEC.md: file header, a kind-3 record, the kind-4
    record FINAL, each frame followed by the chained CRC-32."""
    header = b"\x89IG\x02" + fingerprint
    body = bytes([4 | CHAIN_SEGMENTS]) + leb128(32) + leb128(height) + bytes([32, 1])
    bands = len(Tiling(32, height, 32, 4, 1, True).bands())
    if band_checks:
        body += bytes([BAND_CHECKS])
    frame = bytes([KIND_FULL_IMAGE]) + leb128(len(body)) + body
    crc = zlib.crc32(frame, zlib.crc32(header))
    stream = header + frame + struct.pack("<I", crc)
    payload = np.random.default_rng(12).integers(0, 256, 600, np.uint8).tobytes() + b"\x01"
    checks = bytes(range(0x50, 0x50 + bands - 1)) if band_checks else b""
    segment = bytes([0x80 | 4]) + struct.pack("<H", 0x1234) + checks + payload
    return stream + segment + struct.pack("<I", zlib.crc32(segment, crc))


def test_a_forged_chain_is_rejected_after_one_bands_work(tiny, model) -> None:
    """256 rows: 9 bands in one chain. With band checks the forgery fails band 0's check
    after band 0's cells (1,024 model steps); without (CHAIN alone, as before this feature)
    the decoder runs all 9 bands (9,216 cells) to reach the chain's token check."""
    height = 256
    bands = Tiling(32, height, 32, 4, 1, True).bands()
    assert len(bands) == 9
    one_band = 32 * 32  # band 0: SOS and its 1,023 cells before the last
    outcomes = {}
    for band_checks in (True, False):
        (record,) = unpack_stream(forged_chain(tiny.fingerprint, height, band_checks))
        assert record.header.band_checks == band_checks
        counting = CountingModel(model)
        with pytest.raises((TokenChecksumError, PayloadError)) as info:
            decode_full(counting, record, 0)
        outcomes[band_checks] = counting.cells, str(info.value)
    cells, message = outcomes[True]
    assert cells <= one_band and "band 0's check" in message and "\n" not in message
    cells_before, _ = outcomes[False]
    every_band = sum(band.rows * 32 for band in bands)
    assert cells_before >= every_band - 2 * 32 and cells_before >= 8 * cells


def test_only_the_band_check_golden_file_has_the_feature() -> None:
    """The golden files written before the feature have no features byte (they decode as
    they always did: tests/test_golden.py); the feature's own one has it where an image has
    several bands, and not on its one-band image (golden files written later may have it)."""
    seen = {}
    for path in sorted(GOLDEN.glob("*.igpt")):
        for record in unpack_stream(path.read_bytes()):
            if isinstance(record, FullImageRecord):
                bands = len(record.header.tiling.bands())
                seen.setdefault(path.name, []).append((record.header.band_checks, bands))
    with_feature = {name for name, images in seen.items() if any(flag for flag, _ in images)}
    before = {
        "tiny_full.igpt",
        "tiny_full_adaptive.igpt",
        "tiny_full_chain.igpt",
        "default_full_adaptive.igpt",
        "default_full_chain.igpt",
    }
    assert before <= set(seen) and not before & with_feature
    assert "tiny_full_band_checks.igpt" in with_feature
    assert seen["tiny_full_band_checks.igpt"] == [(True, 3), (False, 1)]
