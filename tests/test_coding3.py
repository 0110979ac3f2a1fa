"""Coding 3 (format/SPEC.md, "Coding 3"): coding 2's tables refined by the longer-reach
levels of core/match.py, for full-resolution images only.

The encoder codes codings 2 and 3 side by side in one pass over the model and keeps the
smaller record (pipelines/fullres.encode_full), so these tests hold it to: round trips,
the same record as a lone coding would write, the smaller of the two kept, the payload
cap handled per coding, thumbnails refusing coding 3, and damage refused in one line.
Most run under the frozen tiny golden model (fast, no torch); the choice on real content
(text against a photo) runs under the shipped default.
"""

from __future__ import annotations

import dataclasses
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from igpt_codec import api
from igpt_codec.core.mixers import STAGES_OF, Chain, MatchStage, mixer_for
from igpt_codec.format.container import FILE_HEADER_LEN, pack_stream, unpack_stream
from igpt_codec.format.errors import CodecError, InvalidFieldError
from igpt_codec.format.records import (
    CODING_ADAPTIVE,
    CODING_EXACT,
    CODING_FLOAT32,
    CODING_MATCH,
    KIND_THUMBNAIL,
    RECORD_FINAL,
    FullImageRecord,
    RecordHeader,
)
from igpt_codec.pipelines.fullres import (
    EXTRA_DECIDE_BITS,
    EXTRA_DECIDE_STEPS,
    EXTRA_KEEP,
    FullImage,
    decode_full,
    encode_full,
    make_header,
)
from igpt_codec.pipelines.stream import FULL_WRITER_CODINGS
from igpt_codec.runtime.bundle import load_bundle
from igpt_codec.runtime.exact_runner import ExactTokenModel

GOLDEN = Path(__file__).parent / "golden"
SAMPLE = Path(__file__).parents[1] / "samples" / "bsds500_val_101085.jpg"
FP = bytes(range(8))


@pytest.fixture(scope="module")
def tiny():
    bundle = load_bundle(GOLDEN / "model")
    return bundle, ExactTokenModel(bundle, threads=1)


@pytest.fixture(scope="module")
def default():
    bundle = load_bundle(None)
    return bundle, ExactTokenModel(bundle, threads=1)


def _text(box: tuple[int, int, int, int]) -> Image.Image:
    from bench.synthetic import text_page

    return Image.fromarray(text_page(1, 11, ())).crop(box)


def _tokens(bundle, picture: Image.Image) -> np.ndarray:
    return api.tokenize([picture], bundle, 0, full=True)[0].tokens


def _encode(
    model, bundle, tokens: np.ndarray, codings, chain: bool | None = None, **kwargs
) -> FullImageRecord:
    image = FullImage(tokens, "RGB")
    header = make_header(image, bundle.fingerprint, 32, CODING_ADAPTIVE, chain_segments=chain)
    return encode_full(model, image, header, codings=codings, **kwargs)[0]


def _size(record: FullImageRecord) -> int:
    return len(pack_stream([record]))


def test_each_coding_has_its_mixer() -> None:
    """Coding 0 mixes nothing; coding 2 is the adaptive stage; coding 3 adds the match stage
    after it (its chain is coding 2's plus one); other codings are refused in one line."""
    assert mixer_for(CODING_EXACT) is None
    two, three = mixer_for(CODING_ADAPTIVE), mixer_for(CODING_MATCH)
    assert isinstance(two, Chain) and isinstance(three, Chain)
    assert len(two.stages) == STAGES_OF[CODING_ADAPTIVE] == 1
    assert len(three.stages) == STAGES_OF[CODING_MATCH] == 2
    assert type(three.stages[0]) is type(two.stages[0])
    with pytest.raises(ValueError, match="does not code full-resolution images"):
        mixer_for(CODING_FLOAT32)


def test_the_writer_tries_codings_2_and_3() -> None:
    assert FULL_WRITER_CODINGS == (CODING_ADAPTIVE, CODING_MATCH)


@st.composite
def tiled_images(draw: st.DrawFn) -> np.ndarray:
    """A few colours in repeated tiles with some noise: content where either coding may
    win, of sizes with padding, one or several bands and chains."""
    width, height = draw(st.integers(1, 70)), draw(st.integers(1, 66))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    colours = rng.integers(0, 512, draw(st.integers(1, 6)))
    tile = rng.integers(0, len(colours), (rng.integers(1, 6), rng.integers(1, 6)))
    reps = (height // tile.shape[0] + 1, width // tile.shape[1] + 1)
    image = colours[np.tile(tile, reps)[:height, :width]]
    noise = rng.random(image.shape) < draw(st.sampled_from([0.0, 0.05, 0.5]))
    image[noise] = rng.integers(0, 512, int(noise.sum()))
    return image.astype(np.uint16)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tokens=tiled_images(), workers=st.sampled_from([1, 2]))
def test_side_by_side_keeps_the_smaller_and_round_trips(tiny, tokens, workers) -> None:
    """Codings 2 and 3 coded in one pass give exactly the record each gives alone: the
    base's, unless the extra's payload is at most EXTRA_KEEP (63/64) of it, whatever the
    threads; it decodes to the tokens. With the early judgment (the default) the record
    is the same or the base's, never another."""
    bundle, model = tiny
    alone = {c: _encode(model, bundle, tokens, (c,)) for c in (CODING_ADAPTIVE, CODING_MATCH)}
    for record in alone.values():
        assert np.array_equal(decode_full(model, record, 0, workers=workers).tokens, tokens)
    sizes = {c: sum(len(s.payload) for s in r.segments) for c, r in alone.items()}
    for base, extra in ((CODING_ADAPTIVE, CODING_MATCH), (CODING_MATCH, CODING_ADAPTIVE)):
        saves = sizes[extra] * EXTRA_KEEP[1] <= sizes[base] * EXTRA_KEEP[0]
        want = extra if saves else base
        judged_at_end = _encode(
            model, bundle, tokens, (base, extra), workers=workers, early_judgment=False
        )
        assert judged_at_end.header.coding == want
        assert pack_stream([judged_at_end]) == pack_stream([alone[want]])
        judged_early = _encode(model, bundle, tokens, (base, extra), workers=workers)
        assert judged_early.header.coding in (want, base)
        assert pack_stream([judged_early]) == pack_stream([alone[judged_early.header.coding]])


def _count_match_steps(monkeypatch) -> dict[int, int]:
    """Steps of coding 3's levels, per chain (one MatchStage each), counted from now on."""
    steps: dict[int, int] = {}
    real_tables = MatchStage.tables

    def counted(self, *args, **kwargs):
        steps[id(self)] = steps.get(id(self), 0) + 1
        return real_tables(self, *args, **kwargs)

    monkeypatch.setattr(MatchStage, "tables", counted)
    return steps


def test_an_extra_that_saves_too_little_is_dropped_early(default, monkeypatch) -> None:
    """A photo crop under the shipped model: coding 3's levels find little, so each chain
    drops them at its first step past EXTRA_DECIDE_BITS, inside a band (their levels stop
    at a step that is not a band's last: band 0 has 1,024 cell steps, every later band 28
    rows of 32; their size is then unknown, None); coded to the end they are within 63/64
    of coding 2 and not kept either, so the record is the same."""
    bundle, model = default
    with Image.open(SAMPLE) as photo:
        tokens = _tokens(bundle, photo.convert("RGB").crop((0, 0, 128, 96)))
    early: dict[int, int | None] = {}
    late: dict[int, int | None] = {}
    with monkeypatch.context() as patch:
        steps = _count_match_steps(patch)
        a = _encode(model, bundle, tokens, FULL_WRITER_CODINGS, sizes=early)
    band_ends = {32 * min(32 + 28 * band, 96) for band in range(4)}  # 96 rows, 32 a window
    assert steps and all(n > 0 and n not in band_ends for n in steps.values()), steps
    b = _encode(model, bundle, tokens, FULL_WRITER_CODINGS, sizes=late, early_judgment=False)
    assert early[CODING_MATCH] is None and early[CODING_ADAPTIVE] == late[CODING_ADAPTIVE]
    assert late[CODING_MATCH] is not None
    assert late[CODING_MATCH] * EXTRA_KEEP[1] > late[CODING_ADAPTIVE] * EXTRA_KEEP[0]
    assert a.header.coding == b.header.coding == CODING_ADAPTIVE
    assert pack_stream([a]) == pack_stream([b])


def test_the_judgment_waits_for_its_steps(default, monkeypatch) -> None:
    """A 256 x 32 photo crop in one chain of 8 windows passes EXTRA_DECIDE_BITS within about
    150 steps; coding 3's levels learn down a band, so the judgment still waits for
    EXTRA_DECIDE_STEPS, and drops them there (on this crop they find nothing)."""
    bundle, model = default
    with Image.open(SAMPLE) as photo:
        tokens = _tokens(bundle, photo.convert("RGB").crop((0, 200, 256, 232)))
    steps = _count_match_steps(monkeypatch)
    image = FullImage(tokens, "RGB")
    header = make_header(image, bundle.fingerprint, 32, CODING_ADAPTIVE, chains=1)
    sizes: dict[int, int | None] = {}
    record, ideal = encode_full(model, image, header, codings=FULL_WRITER_CODINGS, sizes=sizes)
    assert list(steps.values()) == [EXTRA_DECIDE_STEPS], steps
    assert ideal > 2 * EXTRA_DECIDE_BITS  # the bits alone would have judged far earlier
    assert sizes[CODING_MATCH] is None and record.header.coding == CODING_ADAPTIVE


def test_text_keeps_coding_3_and_a_photo_coding_2(default) -> None:
    """Under the shipped model: a text crop codes smaller with the longer-reach levels, a
    photo crop (where they rarely help) keeps coding 2; either way the kept record is the
    smaller of the two and decodes."""
    bundle, model = default
    with Image.open(SAMPLE) as photo:
        crop = photo.convert("RGB").crop((64, 160, 128, 224))
    for picture, want in ((_text((0, 0, 64, 64)), CODING_MATCH), (crop, CODING_ADAPTIVE)):
        tokens = _tokens(bundle, picture)
        alone = {c: _encode(model, bundle, tokens, (c,)) for c in (CODING_ADAPTIVE, CODING_MATCH)}
        kept = _encode(model, bundle, tokens, FULL_WRITER_CODINGS, workers=2)
        assert kept.header.coding == want
        assert _size(kept) == min(_size(r) for r in alone.values())
        assert pack_stream([kept]) == pack_stream([alone[want]])
        assert np.array_equal(decode_full(model, kept, 0).tokens, tokens)


def test_compress_full_writes_coding_3_where_it_pays(default) -> None:
    """The public API chooses by itself: text through `compress(full=True)` (the model's
    record kept over the classical files) is coding 3 and decodes exactly."""
    bundle, _ = default
    from igpt_codec.pipelines import classical

    picture = _text((0, 0, 64, 64))
    real = classical.keep_smaller  # the stream dispatch imports it at each full image
    classical.keep_smaller = lambda encoded, *_args: encoded
    try:
        data = api.compress(picture, bundle, full=True)
    finally:
        classical.keep_smaller = real
    (record,) = unpack_stream(data)
    assert isinstance(record, FullImageRecord) and record.header.coding == CODING_MATCH
    assert np.array_equal(api.decompress(data, bundle)[0].tokens, _tokens(bundle, picture))


@pytest.mark.parametrize("workers", [1, 2])
def test_a_coding_over_the_payload_cap_is_dropped_not_written(tiny, workers) -> None:
    """With a payload cap between the two codings' widest chain segments: when coding 3's
    passes it, coding 2 is kept in the chain layout; when coding 2's (the base: it decides
    the layout) passes it, the image is coded again one record per band, both codings
    side by side, and the smaller kept. Never a segment over the cap."""
    bundle, model = tiny
    rng = np.random.default_rng(5)
    tokens = np.where(rng.random((67, 70)) < 0.3, rng.integers(0, 512, (67, 70)), 7)
    tokens = tokens.astype(np.uint16)
    alone = {c: _encode(model, bundle, tokens, (c,)) for c in (CODING_ADAPTIVE, CODING_MATCH)}
    widest = {c: max(len(s.payload) for s in r.segments) for c, r in alone.items()}
    assert widest[CODING_ADAPTIVE] != widest[CODING_MATCH]
    limit = min(widest.values())
    record = _encode(
        model, bundle, tokens, FULL_WRITER_CODINGS, payload_limit=limit, workers=workers
    )
    assert max(len(s.payload) for s in record.segments) <= limit
    assert np.array_equal(decode_full(model, record, 0).tokens, tokens)
    if widest[CODING_ADAPTIVE] <= limit:
        assert record.header.chain_segments and record.header.coding == CODING_ADAPTIVE
        assert pack_stream([record]) == pack_stream([alone[CODING_ADAPTIVE]])
    else:
        assert not record.header.chain_segments
        per_band = {c: _encode(model, bundle, tokens, (c,), False) for c in alone}
        assert _size(record) == min(_size(r) for r in per_band.values())


def test_a_thumbnail_refuses_coding_3(tiny) -> None:
    """Coding 3 is for full-resolution records: a thumbnail header with it is refused when
    made, when parsed, and in a stream (its CRCs made right), in one line."""
    bundle, _ = tiny
    with pytest.raises(InvalidFieldError, match="full-resolution images, not thumbnails"):
        RecordHeader(FP, 50, 40, "RGB", 8, 64, coding=CODING_MATCH)
    body = RecordHeader(FP, 50, 40, "RGB", 8, 64).to_bytes()
    with pytest.raises(InvalidFieldError, match="not thumbnails"):
        RecordHeader.from_bytes(KIND_THUMBNAIL | CODING_MATCH << 4, FP, body)
    data = api.compress(_text((0, 0, 40, 40)), bundle, size=8)
    # One FINAL record: the file header, its head byte (no length), ..., its chained CRC.
    assert data[FILE_HEADER_LEN] == KIND_THUMBNAIL | RECORD_FINAL
    framed = bytearray(data[:-4])
    framed[FILE_HEADER_LEN] |= CODING_MATCH << 4
    crc = zlib.crc32(bytes(framed[FILE_HEADER_LEN:]), zlib.crc32(bytes(framed[:FILE_HEADER_LEN])))
    with pytest.raises(InvalidFieldError, match="not thumbnails") as caught:
        api.decompress(bytes(framed) + struct.pack("<I", crc), bundle)
    assert "\n" not in str(caught.value)


def test_damaged_coding_3_records_are_refused_in_one_line(tiny) -> None:
    """A coding-3 stream with a payload byte changed (CRCs recomputed, so the decoder runs
    the levels on it), or relabelled coding 2 throughout, is refused with one line: the
    canonical payload and the token checks catch what the CRCs no longer do."""
    bundle, model = tiny
    tokens = _tokens(bundle, _text((0, 0, 70, 67)))
    record = _encode(model, bundle, tokens, (CODING_MATCH,))
    assert record.header.coding == CODING_MATCH
    for index in range(len(record.segments)):
        segment = record.segments[index]
        payload = bytearray(segment.payload)
        payload[len(payload) // 2] ^= 0x10
        segments = list(record.segments)
        segments[index] = dataclasses.replace(segment, payload=bytes(payload))
        damaged = pack_stream([dataclasses.replace(record, segments=tuple(segments))])
        with pytest.raises(CodecError) as caught:
            api.decompress(damaged, bundle)
        assert "\n" not in str(caught.value) and f"segment {index}" in str(caught.value)
    relabelled = dataclasses.replace(
        record, header=dataclasses.replace(record.header, coding=CODING_ADAPTIVE)
    )
    with pytest.raises(CodecError) as caught:
        api.decompress(pack_stream([relabelled]), bundle)
    assert "\n" not in str(caught.value)


def test_the_decoders_memory_estimate_counts_the_levels() -> None:
    """full_image_memory charges coding 3's slot tables per worker: the constant it uses is
    the levels' real size, and a coding-3 header costs that much more per worker."""
    from igpt_codec.core.match import DEFAULT_LEVELS, MatchMixer
    from igpt_codec.pipelines.limits import MATCH_STATE_BYTES, full_image_memory

    assert MatchMixer(DEFAULT_LEVELS).memory_bytes == MATCH_STATE_BYTES
    image = FullImage(np.zeros((96, 128), np.uint16), "RGB")
    two = make_header(image, b"\0" * 8, 32, CODING_ADAPTIVE)
    three = dataclasses.replace(two, coding=CODING_MATCH)
    for workers in (1, 2):
        extra = full_image_memory(three, 2304, workers) - full_image_memory(two, 2304, workers)
        assert extra == workers * MATCH_STATE_BYTES
