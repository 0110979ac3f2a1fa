"""Round trips through the public API with a real (tiny) bundle: decoded tokens must equal
the encoded ones on every photo, whatever the batch grouping and thread count, and any
mismatch must surface as an error, never as a wrong image."""

from __future__ import annotations

import dataclasses
import io
import math
import random
from pathlib import Path

import numpy as np
import pytest

from igpt_codec import api
from igpt_codec.core.images import LoadedImage, load_image
from igpt_codec.core.palette import tokens_to_image
from igpt_codec.format.container import pack_stream, unpack_stream
from igpt_codec.format.errors import (
    CodecError,
    DecodeLimitError,
    InvalidFieldError,
    ModelMismatchError,
    PayloadError,
    TokenChecksumError,
)
from igpt_codec.format.records import CODING_FLOAT32, Record, RecordHeader
from igpt_codec.pipelines.stream import DecodeLimits, decode
from igpt_codec.runtime.bundle import Bundle, load_bundle

PHOTOS = 102
SIZES = (8, 24, 32)


@pytest.fixture(scope="module")
def bundle(tiny_bundle: Path) -> Bundle:
    return load_bundle(tiny_bundle)


@pytest.fixture(scope="module")
def photos(photo_paths: list[Path]) -> list[LoadedImage]:
    """Evenly spread over the sorted photos, so every folder and format is sampled."""
    if len(photo_paths) < PHOTOS:
        pytest.skip(f"need {PHOTOS} photos, found {len(photo_paths)}")
    step = len(photo_paths) / PHOTOS
    return [load_image(photo_paths[int(i * step)]) for i in range(PHOTOS)]


@pytest.fixture(scope="module")
def coded(bundle: Bundle, photos: list[LoadedImage]) -> dict[int, tuple[bytes, list[np.ndarray]]]:
    """size -> (stream, expected tokens): every photo at 8, alternate photos at 24 and 32."""
    chosen = {8: photos, 24: photos[0::2], 32: photos[1::2]}
    result = {}
    for size, images in chosen.items():
        stream = api.compress(images, bundle, size=size, threads=1)
        expected = [item.tokens for item in api.tokenize(images, bundle, size)]
        result[size] = (stream, expected)
    return result


@pytest.mark.parametrize("size", SIZES)
def test_round_trip_every_token(size: int, coded, bundle: Bundle) -> None:
    stream, expected = coded[size]
    decoded = api.decompress(stream, bundle, threads=1)
    assert len(decoded) == len(expected)
    wrong = sum(not np.array_equal(d.tokens, e) for d, e in zip(decoded, expected, strict=True))
    assert wrong == 0, f"{wrong} of {len(expected)} images decoded to other tokens"
    assert all(d.image.size == (size, size) for d in decoded)


def test_other_grouping_and_two_threads_decode_identically(coded, bundle: Bundle) -> None:
    """Records shuffled across sizes: the decoder's batches share no composition with the
    encoder's, and it runs on 2 threads where the encoder ran on 1."""
    pool = []
    for size in SIZES:
        stream, expected = coded[size]
        records = unpack_stream(stream)
        pool += [(records[i], expected[i]) for i in range(0, 8 * 3, 3)]
    random.Random(7).shuffle(pool)
    mixed = pack_stream([record for record, _ in pool])
    decoded = list(api.iter_decompress(io.BytesIO(mixed), bundle, threads=2))
    for got, (_, want) in zip(decoded, pool, strict=True):
        assert np.array_equal(got.tokens, want)


def test_decoded_image_fields(coded, bundle: Bundle, photos: list[LoadedImage]) -> None:
    stream, expected = coded[8]
    first = api.decompress(unpack_stream_head(stream), bundle, threads=1)[0]
    assert first.original_size == (photos[0].width, photos[0].height)
    assert first.original_mode == photos[0].mode
    assert first.side == 8
    assert np.array_equal(
        np.asarray(first.image), np.asarray(tokens_to_image(expected[0], bundle.palette, 8))
    )
    assert first.to_original_size().size == first.original_size


def unpack_stream_head(stream: bytes, count: int = 1) -> bytes:
    return pack_stream(unpack_stream(stream)[:count])


def test_model_mismatch(coded, other_bundle: Path, bundle: Bundle) -> None:
    other = load_bundle(other_bundle)
    with pytest.raises(ModelMismatchError) as info:
        api.decompress(coded[8][0], other)
    message = str(info.value)
    assert bundle.fingerprint.hex() in message and other.fingerprint.hex() in message


def test_corrupted_payload_is_never_a_wrong_image(coded, bundle: Bundle) -> None:
    """Flip payload bytes, re-frame (so the record CRC is valid again) and decode."""
    record = unpack_stream(coded[8][0])[0]
    payload = record.payload
    outcomes = []
    for position in (0, len(payload) // 3, len(payload) // 2, len(payload) - 2):
        corrupted = bytearray(payload)
        corrupted[position] ^= 0x5A
        with pytest.raises(CodecError) as info:
            bad = dataclasses.replace(record, payload=bytes(corrupted))
            api.decompress(pack_stream([bad]), bundle, threads=1)
        outcomes.append(type(info.value))
    # A changed payload decodes to tokens whose canonical payload differs: caught as such.
    assert set(outcomes) <= {PayloadError, TokenChecksumError} and outcomes


def test_token_check_message_does_not_guess(coded, bundle: Bundle) -> None:
    record = unpack_stream(coded[8][0])[0]
    bad = dataclasses.replace(record, token_check=record.token_check ^ 1)
    with pytest.raises(TokenChecksumError, match="fail the record's token check") as info:
        api.decompress(pack_stream([bad]), bundle, threads=1)
    assert "CPU" not in str(info.value)


def test_payloads_are_canonical(coded, bundle: Bundle) -> None:
    """Issue 12 finding 8: one byte string per token sequence. Bytes appended to a payload
    (which may decode to the same tokens) are refused, as is a trailing zero byte."""
    record = unpack_stream(coded[8][0])[0]
    for tail in (b"\x01", b"\x80", b"\xff\x01"):
        longer = dataclasses.replace(record, payload=record.payload + tail)
        with pytest.raises(PayloadError, match="canonical"):
            api.decompress(pack_stream([longer]), bundle, threads=1)
    with pytest.raises(PayloadError):
        dataclasses.replace(record, payload=record.payload + b"\x00")


def test_decode_limits(coded, bundle: Bundle) -> None:
    """Issue 12 finding 7: a server bounds the work a stream may ask for, before model time."""
    records = unpack_stream(coded[8][0])[:5]
    with pytest.raises(DecodeLimitError, match="more than 4 images"):
        list(decode(records, bundle, limits=DecodeLimits(max_images=4)))
    with pytest.raises(DecodeLimitError, match="more than 256 tokens"):
        list(decode(iter(records), bundle, limits=DecodeLimits(max_tokens=256)))
    assert len(list(decode(records, bundle, limits=DecodeLimits(max_images=5)))) == 5


def test_summary_progress_and_ideal_bits(bundle: Bundle, photos: list[LoadedImage]) -> None:
    seen: list[tuple[int, int | None]] = []
    buffer = io.BytesIO()
    summary = api.compress_to(
        buffer, photos[:3], bundle, size=8, threads=1, progress=lambda d, t: seen.append((d, t))
    )
    assert summary.images == 3 and summary.tokens == 3 * 64
    assert summary.stream_bytes == len(buffer.getvalue())
    records = unpack_stream(buffer.getvalue())
    assert summary.payload_bytes == sum(len(r.payload) for r in records)
    assert math.isfinite(summary.ideal_bits) and summary.ideal_bits > 0
    assert seen[-1] == (192, 192)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)


def test_inputs_of_every_kind_code_alike(bundle: Bundle, photo_paths: list[Path]) -> None:
    path = photo_paths[0]
    from PIL import Image

    with Image.open(path) as image:
        as_image = image.copy()
    streams = {
        api.compress([source], bundle, size=4, threads=1)
        for source in (path, str(path), path.read_bytes(), as_image, load_image(path))
    }
    assert len(streams) == 1


def test_float_profile_round_trip(float_bundle: Path, photos) -> None:
    """The float32 profile (kept for contrast) still codes; its records say so, and an
    exact bundle refuses them by coding as well as by fingerprint."""
    bundle = load_bundle(float_bundle)
    assert not bundle.exact and bundle.position_layout == "raster"
    stream = api.compress(photos[:3], bundle, size=8, threads=1)
    records = unpack_stream(stream)
    assert {r.header.coding for r in records} == {CODING_FLOAT32}
    decoded = api.decompress(stream, bundle, threads=2)
    expected = api.tokenize(photos[:3], bundle, 8)
    assert all(np.array_equal(d.tokens, e.tokens) for d, e in zip(decoded, expected, strict=True))


def test_coding_must_match_the_bundle(coded, bundle: Bundle) -> None:
    record = unpack_stream(coded[8][0])[0]
    forged = dataclasses.replace(
        record, header=dataclasses.replace(record.header, coding=CODING_FLOAT32)
    )
    with pytest.raises(ModelMismatchError, match="coding 1"):
        api.decompress(pack_stream([forged]), bundle)


def _record(side: int = 2) -> Record:
    header = RecordHeader(
        fingerprint=bytes(8), width=1, height=1, mode="RGB", side=side, token_count=side * side
    )
    return Record(header, b"", 0)


def test_record_longer_than_the_model(bundle: Bundle) -> None:
    record = _record(side=40)
    record = dataclasses.replace(
        record, header=dataclasses.replace(record.header, fingerprint=bundle.fingerprint)
    )
    with pytest.raises(InvalidFieldError, match="positions"):
        api.decompress(pack_stream([record]), bundle)


@pytest.mark.parametrize("size", [0, 33])
def test_size_out_of_range(size: int, bundle: Bundle, photos) -> None:
    with pytest.raises(ValueError, match="size"):
        api.compress(photos[:1], bundle, size=size)


def test_nothing_to_compress(bundle: Bundle) -> None:
    with pytest.raises(ValueError, match="no images"):
        api.compress([], bundle)


@pytest.mark.parametrize("field", [{"width": 9999}, {"height": 1}, {"mode": "CMYK"}])
def test_forged_geometry_fails_the_token_check(field: dict, coded, bundle: Bundle) -> None:
    """Issue 12 finding 8: size and mode are inside the token check, so a record whose
    header was changed and its frame CRC recomputed is refused, not decoded."""
    record = unpack_stream(coded[8][0])[0]
    forged = dataclasses.replace(record, header=dataclasses.replace(record.header, **field))
    with pytest.raises(TokenChecksumError):
        api.decompress(pack_stream([forged]), bundle, threads=1)
