"""format.container: round trips, the SPEC's byte layout, and a FormatError for every defect."""

from __future__ import annotations

import io
import os
import struct
import threading
import tracemalloc
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from format import (
    MAGIC,
    BadMagicError,
    ChecksumError,
    CodecError,
    EmptyStreamError,
    FormatError,
    InvalidFieldError,
    LengthOutOfRangeError,
    MissingEndMarkerError,
    PayloadError,
    Record,
    RecordHeader,
    StreamWriter,
    TrailingDataError,
    TruncatedError,
    UnknownExtensionError,
    UnknownFlagsError,
    UnknownRecordKindError,
    UnsupportedVersionError,
    iter_records,
    pack_extensions,
    pack_stream,
    read_file_header,
    token_crc,
    unpack_stream,
)
from format.container import _frame
from format.records import MAX_PAYLOAD, MAX_TOKENS, RECORD_ANCILLARY

HEADER = RecordHeader(
    fingerprint=b"\x01\x02\x03\x04\x05\x06\x07\x08",
    width=640,
    height=480,
    mode="RGB",
    side=32,
    token_count=1024,
    freq_bits=20,
)
RECORD = Record(HEADER, b"\x9a\x31\x40", padding_bits=6, token_crc=0xDEADBEEF)


class Pipe:
    """Only `.read(n)`, and short reads: what a pipe or socket gives a reader."""

    def __init__(self, data: bytes, step: int = 3) -> None:
        self._data = data
        self._pos = 0
        self._step = step

    def read(self, n: int) -> bytes:
        n = min(n, self._step)
        chunk = self._data[self._pos : self._pos + n]
        self._pos += len(chunk)
        return chunk


class BufferedPipe(Pipe):
    """Allocates the n bytes asked for before reading, as io.BufferedReader.read(n) does."""

    def read(self, n: int) -> bytes:
        scratch = bytearray(n)
        chunk = super().read(n)
        scratch[: len(chunk)] = chunk
        return bytes(scratch[: len(chunk)])


def file_header(version: int = 1, flags: int = 0) -> bytes:
    """Per SPEC: magic, version u16, flags u16."""
    return MAGIC + struct.pack("<HH", version, flags)


def end_marker(stream_so_far: bytes, count: int) -> bytes:
    """Per SPEC: 0x00, record count u32, CRC-32 of every byte before the CRC field."""
    body = b"\x00" + struct.pack("<I", count)
    return body + struct.pack("<I", zlib.crc32(stream_so_far + body))


def build_stream(frames: list[bytes], count: int | None = None) -> bytes:
    head = file_header() + b"".join(frames)
    return head + end_marker(head, len(frames) if count is None else count)


def expect_format_error(data: bytes) -> FormatError:
    """Both readers (known length and pipe) must fail with a FormatError and a 1-line message."""
    errors = []
    for read in (unpack_stream, lambda d: list(iter_records(Pipe(d)))):
        with pytest.raises(FormatError) as info:
            read(data)
        assert "\n" not in str(info.value) and str(info.value)
        errors.append(info.value)
    return errors[0]


# --- round trips -------------------------------------------------------------------------

printable = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=16)


@st.composite
def headers(draw: st.DrawFn) -> RecordHeader:
    side = draw(st.integers(1, 1024))
    batch_size = draw(st.integers(1, 0xFFFF))
    ext = draw(st.lists(st.tuples(st.integers(0, 0x7F), st.binary(max_size=20)), max_size=3))
    return RecordHeader(
        fingerprint=draw(st.binary(min_size=8, max_size=8)),
        width=draw(st.integers(1, 0xFFFF)),
        height=draw(st.integers(1, 0xFFFF)),
        mode=draw(printable),
        side=side,
        token_count=side * side,
        freq_bits=draw(st.integers(1, 31)),
        batch_size=batch_size,
        batch_index=draw(st.integers(0, batch_size - 1)),
        flags=draw(st.sampled_from([0, RECORD_ANCILLARY])),
        extensions=pack_extensions(ext),
    )


@st.composite
def records(draw: st.DrawFn) -> Record:
    payload = draw(st.binary(max_size=300))
    if not payload:
        padding = 0
    elif payload[-1] == 0:
        padding = draw(st.integers(0, 7))
    else:
        last = payload[-1]
        padding = draw(st.integers(0, min(7, (last & -last).bit_length() - 1)))
    return Record(draw(headers()), payload, padding, draw(st.integers(0, 2**32 - 1)))


@settings(max_examples=150, deadline=None)
@given(recs=st.lists(records(), min_size=1, max_size=4), step=st.integers(1, 64))
def test_round_trip(recs: list[Record], step: int) -> None:
    data = pack_stream(recs)
    assert unpack_stream(data) == recs
    assert unpack_stream(bytearray(data)) == recs
    assert list(iter_records(Pipe(data, step))) == recs


def test_layout_matches_spec() -> None:
    """A stream assembled by hand from SPEC.md's tables equals the writer's output."""
    ext = pack_extensions([(0x05, b"hi")])
    assert ext == b"\x05\x02\x00hi"
    header = RecordHeader(
        fingerprint=b"ABCDEFGH",
        width=3,
        height=2,
        mode="RGBA",
        side=4,
        token_count=16,
        freq_bits=20,
        batch_size=5,
        batch_index=2,
        extensions=ext,
    )
    body = (
        b"ABCDEFGH"
        + struct.pack("<HHB", 3, 2, 4)
        + b"RGBA"
        + struct.pack("<HIBHHH", 4, 16, 20, 5, 2, len(ext))
        + ext
    )
    assert len(body) == 26 + 4 + len(ext)
    payload = b"\x12\x80"
    frame = struct.pack("<BBH", 1, 0, len(body)) + body + struct.pack("<BII", 7, 99, 2) + payload
    frame += struct.pack("<I", zlib.crc32(frame))
    expected = build_stream([frame])
    record = Record(header, payload, padding_bits=7, token_crc=99)
    assert pack_stream([record]) == expected
    assert unpack_stream(expected) == [record]


def test_real_pipe() -> None:
    data = pack_stream([RECORD, RECORD])
    read_fd, write_fd = os.pipe()

    def feed() -> None:
        with os.fdopen(write_fd, "wb") as w:
            for i in range(0, len(data), 5):
                w.write(data[i : i + 5])
                w.flush()

    thread = threading.Thread(target=feed)
    thread.start()
    with os.fdopen(read_fd, "rb") as r:
        assert not r.seekable()
        assert list(iter_records(r)) == [RECORD, RECORD]
    thread.join()


def test_writer_protocol() -> None:
    buf = io.BytesIO()
    with StreamWriter(buf) as writer:
        assert buf.getvalue() == b""  # header is written with the first record
        writer.write_record(RECORD)
    assert unpack_stream(buf.getvalue()) == [RECORD]
    assert read_file_header(io.BytesIO(buf.getvalue())).version == 1
    writer.close()  # idempotent
    with pytest.raises(ValueError):
        writer.write_record(RECORD)
    with pytest.raises(ValueError, match="at least one record"):
        StreamWriter(io.BytesIO()).close()
    with pytest.raises(TypeError):
        StreamWriter(io.BytesIO()).write_record(HEADER)  # type: ignore[arg-type]


def test_failed_block_leaves_a_truncated_stream() -> None:
    buf = io.BytesIO()
    with pytest.raises(RuntimeError), StreamWriter(buf) as writer:
        writer.write_record(RECORD)
        raise RuntimeError("compression failed")
    with pytest.raises(MissingEndMarkerError):
        unpack_stream(buf.getvalue())


# --- corruption --------------------------------------------------------------------------


def sample_streams() -> list[bytes]:
    with_ext = Record(
        RecordHeader(
            fingerprint=b"\xff" * 8,
            width=1,
            height=65535,
            mode="I;16",
            side=1,
            token_count=1,
            freq_bits=16,
            batch_size=4,
            batch_index=3,
            extensions=pack_extensions([(1, b"abc"), (0x7F, b"")]),
        ),
        b"",
        0,
        0,
    )
    buf = io.BytesIO()
    with StreamWriter(buf) as writer:
        writer.write_raw_record(0x42, RECORD_ANCILLARY, b"opaque", b"\x01", 0, 5)
        writer.write_record(RECORD)
    return [pack_stream([RECORD]), pack_stream([RECORD, with_ext, RECORD]), buf.getvalue()]


def test_every_single_byte_flip_is_detected() -> None:
    seen: set[str] = set()
    for data in sample_streams():
        for i in range(len(data)):
            for mask in (0x01, 0x80, 0xFF):
                flipped = bytearray(data)
                flipped[i] ^= mask
                seen.add(type(expect_format_error(bytes(flipped))).__name__)
    # The flips exercise most of the error types, all FormatError subclasses.
    assert {"ChecksumError", "BadMagicError", "UnsupportedVersionError"} <= seen
    assert {"UnknownFlagsError", "UnknownRecordKindError", "LengthOutOfRangeError"} <= seen


def test_every_truncation_is_detected() -> None:
    for data in sample_streams():
        for n in range(len(data)):
            with pytest.raises((TruncatedError, LengthOutOfRangeError)):
                unpack_stream(data[:n])
            with pytest.raises(TruncatedError):
                list(iter_records(Pipe(data[:n])))
        with pytest.raises(MissingEndMarkerError):
            unpack_stream(data[:-9])


@settings(max_examples=300, deadline=None)
@given(garbage=st.binary(max_size=200), prefix=st.sampled_from([b"", file_header()]))
def test_random_garbage_raises_format_error(garbage: bytes, prefix: bytes) -> None:
    expect_format_error(prefix + garbage)


def test_trailing_data() -> None:
    data = pack_stream([RECORD])
    for extra in (b"\x00", b"junk", data):
        error = expect_format_error(data + extra)
        assert isinstance(error, TrailingDataError)


def forged_payload_length(length: int) -> bytes:
    """A stream whose first record announces a payload of `length` bytes, then ends."""
    data = pack_stream([RECORD])
    at = 12 + 4 + len(HEADER.to_bytes()) + 5  # file header, frame start, header, pad+tok CRC
    assert data[at : at + 4] == struct.pack("<I", len(RECORD.payload))
    return data[:at] + struct.pack("<I", length) + data[at + 4 :]


def test_length_over_limit_is_refused_before_reading() -> None:
    data = forged_payload_length(MAX_PAYLOAD + 1)
    with pytest.raises(LengthOutOfRangeError, match="limit"):
        unpack_stream(data)
    with pytest.raises(LengthOutOfRangeError, match="limit"):
        list(iter_records(Pipe(data)))


def test_length_over_remaining_is_refused_without_allocating() -> None:
    data = forged_payload_length(MAX_PAYLOAD)
    with pytest.raises(LengthOutOfRangeError, match="left in the stream"):
        unpack_stream(data)
    tracemalloc.start()
    try:
        with pytest.raises(TruncatedError, match="record payload needs 16777216 bytes"):
            list(iter_records(BufferedPipe(data, step=1 << 20)))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20  # the forged 16 MiB were never allocated


def test_header_mangling_versions_and_flags() -> None:
    data = pack_stream([RECORD])
    for mangled in (data.replace(b"\r\n", b"\n", 1), data.replace(b"\n", b"\r\n")):
        assert "text-mode" in str(expect_format_error(mangled))
    assert "7-bit" in str(expect_format_error(bytes([data[0] & 0x7F]) + data[1:]))
    assert isinstance(expect_format_error(b"GIF89a" + data[6:]), BadMagicError)
    assert isinstance(expect_format_error(MAGIC[:5]), TruncatedError)
    assert isinstance(expect_format_error(b""), TruncatedError)
    for version in (0, 2, 0xFFFF):
        stream = file_header(version=version) + data[12:]
        assert isinstance(expect_format_error(stream), UnsupportedVersionError)
    stream = file_header(flags=0x0100) + data[12:]
    assert isinstance(expect_format_error(stream), UnknownFlagsError)
    with pytest.raises(TypeError, match="binary"):
        list(iter_records(io.StringIO("text")))


# --- record kinds, flags, extensions, fields ---------------------------------------------


def test_unknown_ancillary_kind_is_skipped_and_must_understand_refused() -> None:
    skippable = _frame(0x42, RECORD_ANCILLARY, b"future", 0, 0, b"\x10")
    known = _frame(1, 0, HEADER.to_bytes(), RECORD.padding_bits, RECORD.token_crc, RECORD.payload)
    assert unpack_stream(build_stream([skippable, known, skippable])) == [RECORD]
    with pytest.raises(InvalidFieldError, match="counts 2 records"):
        unpack_stream(build_stream([skippable, known, skippable], count=2))
    critical = _frame(0x42, 0, b"future", 0, 0, b"")
    error = expect_format_error(build_stream([known, critical]))
    assert isinstance(error, UnknownRecordKindError)
    # A skippable record is still checked: its CRC must hold.
    bad_crc = skippable[:-1] + bytes([skippable[-1] ^ 1])
    assert isinstance(expect_format_error(build_stream([bad_crc, known])), ChecksumError)
    # The known kind with the ancillary bit is read normally.
    ancillary_thumb = Record(
        RecordHeader(**{**HEADER.__dict__, "flags": RECORD_ANCILLARY}), b"", 0, 1
    )
    assert unpack_stream(pack_stream([ancillary_thumb])) == [ancillary_thumb]


def test_only_skipped_records_is_not_empty_but_zero_records_is() -> None:
    skippable = _frame(0x42, RECORD_ANCILLARY, b"", 0, 0, b"")
    assert unpack_stream(build_stream([skippable])) == []
    assert isinstance(expect_format_error(build_stream([])), EmptyStreamError)


def thumb_frame(body: bytes, padding: int = 0, payload: bytes = b"") -> bytes:
    return _frame(1, 0, body, padding, 0, payload)


def test_extension_rules() -> None:
    ext = pack_extensions([(0x05, b"xy")])
    header = RecordHeader(**{**HEADER.__dict__, "extensions": ext})
    body = bytearray(header.to_bytes())
    assert unpack_stream(build_stream([thumb_frame(bytes(body))]))[0].header.extensions == ext
    body[-len(ext)] |= 0x80  # the tag becomes must-understand and unknown
    error = expect_format_error(build_stream([thumb_frame(bytes(body))]))
    assert isinstance(error, UnknownExtensionError)
    with pytest.raises(UnknownExtensionError):
        RecordHeader(**{**HEADER.__dict__, "extensions": pack_extensions([(0x85, b"")])})
    for malformed in (b"\x01", b"\x01\x05\x00ab", b"\x01\x00"):
        with pytest.raises(InvalidFieldError):
            RecordHeader(**{**HEADER.__dict__, "extensions": malformed})


def header_body(**changes: object) -> bytes:
    """HEADER's body with raw field values replaced, bypassing validation."""
    fields = {
        "fp": HEADER.fingerprint,
        "width": HEADER.width,
        "height": HEADER.height,
        "mode": HEADER.mode.encode(),
        "side": HEADER.side,
        "count": HEADER.token_count,
        "bits": HEADER.freq_bits,
        "bsize": 1,
        "bindex": 0,
        "ext": b"",
    }
    fields.update(changes)
    mode, ext = fields["mode"], fields["ext"]
    return (
        struct.pack("<8sHHB", fields["fp"], fields["width"], fields["height"], len(mode))
        + mode
        + struct.pack(
            "<HIBHHH",
            fields["side"],
            fields["count"],
            fields["bits"],
            fields["bsize"],
            fields["bindex"],
            len(ext),
        )
        + ext
    )


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (header_body(), None),
        (header_body(width=0), InvalidFieldError),
        (header_body(height=0), InvalidFieldError),
        (header_body(mode=b""), InvalidFieldError),
        (header_body(mode=b"RG\xffB"), InvalidFieldError),
        (header_body(mode=b"R G"), InvalidFieldError),
        (header_body(mode=b"X" * 17), InvalidFieldError),
        (header_body(side=0, count=0), InvalidFieldError),
        (header_body(side=31), InvalidFieldError),
        (header_body(side=1025, count=1025**2), InvalidFieldError),
        (header_body(bits=0), InvalidFieldError),
        (header_body(bits=32), InvalidFieldError),
        (header_body(bsize=0, bindex=0), InvalidFieldError),
        (header_body(bsize=2, bindex=2), InvalidFieldError),
        (header_body(ext=b"\x01\x09\x00"), InvalidFieldError),
        (header_body() + b"\x00", InvalidFieldError),
        (header_body()[:-1], InvalidFieldError),
        (header_body()[:10], InvalidFieldError),
        (b"", InvalidFieldError),
    ],
)
def test_impossible_field_values(body: bytes, error: type[FormatError] | None) -> None:
    data = build_stream([thumb_frame(body)])
    if error is None:
        assert unpack_stream(data)[0].header == HEADER
    else:
        assert isinstance(expect_format_error(data), error)


@pytest.mark.parametrize(
    ("padding", "payload", "error"),
    [(8, b"\x80", InvalidFieldError), (1, b"\x81", PayloadError), (2, b"", PayloadError)],
)
def test_padding_rules(padding: int, payload: bytes, error: type[FormatError]) -> None:
    data = build_stream([thumb_frame(header_body(), padding, payload)])
    assert isinstance(expect_format_error(data), error)
    with pytest.raises(error):
        Record(HEADER, payload, padding, 0)


@pytest.mark.parametrize(
    "changes",
    [
        {"width": 0},
        {"width": 65536},
        {"height": True},
        {"mode": ""},
        {"mode": "RGBÄ"},
        {"mode": "x" * 17},
        {"side": 31},
        {"token_count": MAX_TOKENS + 1, "side": 1025},
        {"freq_bits": 0},
        {"batch_index": 1},
        {"fingerprint": b"1234567"},
        {"kind": 2},
    ],
)
def test_header_validation(changes: dict[str, object]) -> None:
    with pytest.raises(InvalidFieldError):
        RecordHeader(**{**HEADER.__dict__, **changes})


def test_record_validation() -> None:
    with pytest.raises(UnknownFlagsError):
        RecordHeader(**{**HEADER.__dict__, "flags": 2})
    with pytest.raises(InvalidFieldError):
        Record(HEADER, b"", 0, 2**32)
    with pytest.raises(InvalidFieldError):
        Record(HEADER, bytearray(b"x"), 0, 0)  # type: ignore[arg-type]


def test_errors_share_one_base() -> None:
    assert issubclass(FormatError, CodecError)
    assert issubclass(MissingEndMarkerError, TruncatedError)


def test_token_crc() -> None:
    tokens = np.array([0, 1, 511, 65535], dtype=np.int64)
    expected = zlib.crc32(struct.pack("<4H", 0, 1, 511, 65535))
    assert token_crc(tokens) == token_crc(tokens.astype(np.uint16)) == expected
    assert token_crc(np.array([], dtype=np.uint16)) == 0
    for bad in (np.array([-1]), np.array([65536]), np.zeros((2, 2), dtype=int), np.array([0.5])):
        with pytest.raises(ValueError):
            token_crc(bad)
