"""A chain segment's payload is capped (MAX_PAYLOAD, and its frame with its band checks
within MAX_FRAME), and one segment per chain spans the whole height: a 6000 x 4000 photo's
chain at 32 windows per segment is 4.1M tokens, about 1.8 MB at 3.5 bits/token. The encoder
plans such chains one record per band (a layout every reader reads) and re-encodes that way
when a chain passes the cap anyway; these tests hold it to that, at the real cap (a stub
model of known bits per token, encode only) and at a lowered one (the tiny golden model,
round trips).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from igpt_codec.format.container import (
    MAX_FRAME,
    pack_stream,
    segment_payload_limit,
    unpack_stream,
)
from igpt_codec.format.records import CODING_ADAPTIVE, CODING_EXACT, MAX_PAYLOAD
from igpt_codec.pipelines.fullres import (
    PLAN_BITS_PER_TOKEN,
    FullImage,
    decode_full,
    encode_full,
    make_header,
    plan_layout,
)
from igpt_codec.runtime.bundle import load_bundle
from igpt_codec.runtime.exact_runner import ExactTokenModel

FP = bytes(range(8))
GOLDEN = Path(__file__).parent / "golden"


class StubModel:
    """Whole-sequence calls only (what the encoder makes), every table the same: `peak` on
    token 0 and 1 on every other, so a token other than 0 costs log2(peak + 511) bits and
    the payload size is known without running a model over a million tokens."""

    def __init__(self, peak: int) -> None:
        self.table = np.ones(512, np.int32)
        self.table[0] = peak

    def start(self, batch: int) -> None:
        return None

    def run(self, ids: np.ndarray, positions: np.ndarray, state: None, *args: object):
        return np.broadcast_to(self.table, (*np.shape(ids), 512)).copy(), None


def _segment_sizes_fit(record) -> None:
    """Every segment within the payload cap and its frame within MAX_FRAME, and the stream
    reads back record for record."""
    for segment in record.segments:
        assert len(segment.payload) <= MAX_PAYLOAD
        assert 2 + len(segment.band_checks) + len(segment.payload) <= MAX_FRAME
    (back,) = unpack_stream(pack_stream([record]))
    assert back.header == record.header and back.segments == record.segments


# --- the planner ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("width", "height"), [(6000, 4000), (3000, 4000), (4000, 3000), (32, 30000), (1024, 65535)]
)
def test_planned_segments_fit_the_cap_at_the_planned_rate(width: int, height: int) -> None:
    """The widest segment of the planned layout holds at most the tokens the cap codes at
    PLAN_BITS_PER_TOKEN (before: one segment per chain whatever its height, so 24 MP needed
    1.8 MB and more in one record)."""
    image = FullImage(np.broadcast_to(np.uint16(0), (height, width)), "RGB")
    header = make_header(image, FP, 32, CODING_ADAPTIVE)
    tiling = header.tiling
    widest_group = min(header.segment_windows * tiling.window_width, width)
    rows = height if header.chain_segments else max(b.coded_rows for b in tiling.bands())
    limit = segment_payload_limit(header.band_check_count)
    assert widest_group * rows * PLAN_BITS_PER_TOKEN <= limit * 8
    assert header.segment_windows == min(32, math.ceil(math.ceil(width / 32) / 2))


@pytest.mark.parametrize(("width", "height"), [(481, 321), (768, 512), (70, 67), (1030, 3)])
def test_images_that_fit_keep_one_segment_per_chain(width: int, height: int) -> None:
    """Today's layout, bytes and all, for every image whose chains fit (golden files too)."""
    windows, chain = plan_layout(width, height, 32)
    assert chain and windows == min(32, math.ceil(math.ceil(width / 32) / 2))


def test_the_frame_is_the_tighter_cap_with_many_band_checks() -> None:
    """MAX_FRAME leaves 62 bytes beside MAX_PAYLOAD; a chain of a tall image holds more band
    checks than that."""
    assert segment_payload_limit(0) == MAX_PAYLOAD
    assert segment_payload_limit(142) == MAX_FRAME - 2 - 142 < MAX_PAYLOAD


# --- the real cap, a stub model ---------------------------------------------------------


def test_a_chain_over_the_cap_is_planned_one_record_per_band() -> None:
    """32 x 30000 at 9 bits/token: 1.08 MB in one chain. Before, encode_full raised
    LengthOutOfRangeError; now the header is planned one record per band."""
    image = FullImage(np.ones((30000, 32), np.uint16), "RGB")
    header = make_header(image, FP, 32, CODING_EXACT)
    assert not header.chain_segments and not header.band_checks
    record, ideal = encode_full(StubModel(1), image, header)
    assert record.header == header
    assert ideal == pytest.approx(9 * 32 * 30000)
    assert sum(len(s.payload) for s in record.segments) > MAX_PAYLOAD
    _segment_sizes_fit(record)


def test_a_chain_that_passes_the_cap_anyway_is_coded_again_per_band() -> None:
    """Tokens at 16 bits (over the planner's 9): the planned chain passes the cap while it
    is coded, and the image comes back one record per band instead of an error."""
    image = FullImage(np.ones((17000, 32), np.uint16), "RGB")
    header = make_header(image, FP, 32, CODING_EXACT)
    assert header.chain_segments  # planned at 9 bits/token: 612 KB
    seen: list[int] = []
    record, _ = encode_full(StubModel(65024), image, header, lambda done, _: seen.append(done))
    assert not record.header.chain_segments and not record.header.band_checks
    assert sum(len(s.payload) for s in record.segments) > MAX_PAYLOAD
    assert seen == sorted(seen) and seen[-1] == 32 * 17000  # progress never goes back
    _segment_sizes_fit(record)


# --- a lowered cap, the tiny golden model, round trips ----------------------------------


@pytest.fixture(scope="module")
def model() -> ExactTokenModel:
    return ExactTokenModel(load_bundle(GOLDEN / "model"), threads=1)


def _noise(height: int, width: int) -> FullImage:
    rng = np.random.default_rng(height * 1000 + width)
    return FullImage(rng.integers(0, 512, (height, width)).astype(np.uint16), "RGB")


@pytest.mark.parametrize("force_chain", [False, True])
def test_round_trip_past_a_lowered_cap(model: ExactTokenModel, force_chain: bool) -> None:
    """Planned per band (force_chain False), or forced into chains that pass the cap while
    coded (True): either way every segment fits and the image decodes to its tokens."""
    image = _noise(120, 64)
    limit = 2000  # a chain: 32 x 120 tokens at ~9 bits = ~4.3 KB; a band's group ~1.1 KB
    header = make_header(
        image,
        FP,
        32,
        CODING_ADAPTIVE,
        chain_segments=True if force_chain else None,
        payload_limit=limit,
    )
    assert header.chain_segments == force_chain
    record, _ = encode_full(model, image, header, workers=2, payload_limit=limit)
    assert not record.header.chain_segments
    assert record.header.tiling.record_count == len(record.header.tiling.bands()) * 2
    assert all(len(s.payload) <= limit for s in record.segments)
    (back,) = unpack_stream(pack_stream([record]))
    decoded = decode_full(model, back, 0, workers=2)
    np.testing.assert_array_equal(decoded.tokens, image.tokens)


def test_under_the_cap_nothing_changes(model: ExactTokenModel) -> None:
    """The same image with room to spare: one record per chain, the same bytes as without a
    limit."""
    image = _noise(120, 64)
    header = make_header(image, FP, 32, CODING_ADAPTIVE)
    assert header.chain_segments and header.band_checks
    plain, _ = encode_full(model, image, header)
    roomy, _ = encode_full(model, image, header, payload_limit=100_000)
    assert plain == roomy and roomy.header.chain_segments
