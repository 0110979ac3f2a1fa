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
from format.container import MAX_RECORDS
from format.records import MAX_PAYLOAD, MAX_SIDE, MAX_TOKENS, RECORD_ANCILLARY
from format.source import ByteSource
from format.varint import decode_varint, encode_varint, varint_size

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


def leb128(value: int) -> bytes:
    """Per SPEC, written independently of format.varint: 7 bits a byte, low group first."""
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        out.append(low | (0x80 if value else 0))
        if not value:
            return bytes(out)


def file_header(version: int = 1, flags: int = 0) -> bytes:
    """Per SPEC: magic, version u8, flags u8."""
    return MAGIC + bytes([version, flags])


FINAL = 0x02


def frame(
    kind: int, flags: int, body: bytes, padding: int = 0, tok_crc: int = 0, payload: bytes = b""
) -> bytes:
    """Per SPEC, a record frame up to (not including) its record CRC."""
    return (
        bytes([kind, flags | padding << 5])
        + leb128(len(body))
        + body
        + struct.pack("<I", tok_crc)
        + leb128(len(payload))
        + payload
    )


def build_stream(frames: list[bytes], count: int | None = None, final: bool = True) -> bytes:
    """Per SPEC: file header; each frame with its chained CRC (the CRC-32 of the file header
    and every frame so far, CRC fields excluded), the last one marked FINAL; end marker."""
    out = bytearray(file_header())
    chain = zlib.crc32(out)
    for i, raw in enumerate(frames):
        if final and i == len(frames) - 1:
            raw = raw[:1] + bytes([raw[1] | FINAL]) + raw[2:]
        chain = zlib.crc32(raw, chain)
        out += raw + struct.pack("<I", chain)
    return bytes(out) + b"\x00" + leb128(len(frames) if count is None else count)


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
    """A stream assembled by hand, byte by byte, from SPEC.md's tables equals the writer's."""
    ext = pack_extensions([(0x05, b"hi")])
    assert ext == b"\x05\x02\x00hi"
    header = RecordHeader(
        fingerprint=b"ABCDEFGH",
        width=300,
        height=2,
        mode="RGBA",
        side=200,
        token_count=40000,
        freq_bits=20,
        batch_size=129,
        batch_index=128,
        extensions=ext,
    )
    body = (
        b"ABCDEFGH"  # fingerprint
        + b"\xac\x02"  # width 300 = 0b10_0101100: 0x2C | 0x80, then 0x02
        + b"\x02"  # height
        + b"\x04RGBA"  # mode length, mode
        + b"\xc8\x01"  # side 200
        + b"\x14"  # freq bits 20
        + b"\x81\x01"  # batch size 129
        + b"\x80\x01"  # batch index 128
        + b"\x05"  # extension area length
        + ext
    )
    assert header.to_bytes() == body
    payload = b"\x12\x80" * 100  # 200 bytes; the last byte 0x80 has 7 padding bits
    record = Record(header, payload, padding_bits=7, token_crc=99)
    file_head = b"\x89IGP\r\n\x1a\n\x01\x00"
    frame_bytes = (
        b"\x01"  # kind 1
        + bytes([7 << 5 | FINAL])  # padding bits 7, FINAL, not ANCILLARY
        + bytes([len(body)])  # H < 128: one byte
        + body
        + b"\x63\x00\x00\x00"  # token CRC 99
        + b"\xc8\x01"  # P = 200
        + payload
    )
    crc = struct.pack("<I", zlib.crc32(file_head + frame_bytes))
    expected = file_head + frame_bytes + crc + b"\x00\x01"
    assert build_stream([frame(1, 0, body, 7, 99, payload)]) == expected
    assert pack_stream([record]) == expected
    assert unpack_stream(expected) == [record]
    # Two records: the first is not final; the second CRC continues the first's chain.
    first = frame_bytes[:1] + bytes([7 << 5]) + frame_bytes[2:]
    crc1 = zlib.crc32(file_head + first)
    crc2 = zlib.crc32(file_head + first + frame_bytes)
    two = file_head + first + struct.pack("<I", crc1) + frame_bytes + struct.pack("<I", crc2)
    assert pack_stream([record, record]) == two + b"\x00\x02"


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
        assert buf.getvalue() == b""  # held back until it is known whether it is the last
        writer.write_record(RECORD)
        one = pack_stream([RECORD])
        # The first record is out, without FINAL (flags at byte 11; its CRC differs, so the
        # last 4 bytes are left out); the second is held.
        assert buf.getvalue()[:-4] == one[:11] + bytes([one[11] & ~FINAL]) + one[12:-6]
    assert unpack_stream(buf.getvalue()) == [RECORD, RECORD]
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
    one = pack_stream([RECORD])
    # The held record went out, without FINAL.
    assert buf.getvalue()[:-4] == one[:11] + bytes([one[11] & ~FINAL]) + one[12:-6]
    with pytest.raises(ValueError):
        writer.write_record(RECORD)
    writer.close()  # a failed writer stays without its end marker
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
    # Multi-byte varints: P = 300, side 200, batch size/index 300/299, width 16384.
    wide = Record(
        RecordHeader(
            fingerprint=bytes(8),
            width=16384,
            height=128,
            mode="RGB",
            side=200,
            token_count=40000,
            freq_bits=31,
            batch_size=300,
            batch_index=299,
        ),
        bytes(range(1, 256)) + b"\x55" * 44 + b"\x08",
        3,
        0xFFFFFFFF,
    )
    buf = io.BytesIO()
    with StreamWriter(buf) as writer:
        writer.write_raw_record(0x42, RECORD_ANCILLARY, b"opaque", b"\x01", 0, 5)
        writer.write_record(RECORD)
    return [
        pack_stream([RECORD]),
        pack_stream([RECORD, with_ext, RECORD]),
        buf.getvalue(),
        pack_stream([wide]),
    ]


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
    assert {"InvalidFieldError", "TruncatedError"} <= seen


def test_every_truncation_is_detected() -> None:
    for data in sample_streams():
        for n in range(len(data)):
            with pytest.raises((TruncatedError, LengthOutOfRangeError)):
                unpack_stream(data[:n])
            with pytest.raises(TruncatedError):
                list(iter_records(Pipe(data[:n])))
        with pytest.raises(MissingEndMarkerError):
            unpack_stream(data[:-2])


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
    at = 10 + 3 + len(HEADER.to_bytes()) + 4  # file header, kind+flags+H, header, token CRC
    assert data[at : at + 1] == leb128(len(RECORD.payload))
    return data[:at] + leb128(length) + data[at + 1 :]


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
    for version in (0, 2, 0xFF):
        stream = file_header(version=version) + data[10:]
        assert isinstance(expect_format_error(stream), UnsupportedVersionError)
    for flags in (0x01, 0x80):
        stream = file_header(flags=flags) + data[10:]
        assert isinstance(expect_format_error(stream), UnknownFlagsError)
    with pytest.raises(TypeError, match="binary"):
        list(iter_records(io.StringIO("text")))


# --- record kinds, flags, extensions, fields ---------------------------------------------


def test_unknown_ancillary_kind_is_skipped_and_must_understand_refused() -> None:
    skippable = frame(0x42, RECORD_ANCILLARY, b"future", 0, 0, b"\x10")
    known = frame(1, 0, HEADER.to_bytes(), RECORD.padding_bits, RECORD.token_crc, RECORD.payload)
    assert unpack_stream(build_stream([skippable, known, skippable])) == [RECORD]
    with pytest.raises(InvalidFieldError, match="counts 2 records"):
        unpack_stream(build_stream([skippable, known, skippable], count=2))
    critical = frame(0x42, 0, b"future", 0, 0, b"")
    error = expect_format_error(build_stream([known, critical]))
    assert isinstance(error, UnknownRecordKindError)
    # A skippable record is still checked: its CRC must hold.
    bad_crc = bytearray(build_stream([skippable, known]))
    bad_crc[10 + len(skippable)] ^= 1
    assert isinstance(expect_format_error(bytes(bad_crc)), ChecksumError)
    # A skippable record may be the final one.
    assert unpack_stream(build_stream([known, skippable])) == [RECORD]
    # The known kind with the ancillary bit is read normally.
    ancillary_thumb = Record(
        RecordHeader(**{**HEADER.__dict__, "flags": RECORD_ANCILLARY}), b"", 0, 1
    )
    assert unpack_stream(pack_stream([ancillary_thumb])) == [ancillary_thumb]


def test_only_skipped_records_is_not_empty_but_zero_records_is() -> None:
    skippable = frame(0x42, RECORD_ANCILLARY, b"", 0, 0, b"")
    assert unpack_stream(build_stream([skippable])) == []
    assert isinstance(expect_format_error(build_stream([])), EmptyStreamError)
    assert isinstance(expect_format_error(build_stream([], count=1)), InvalidFieldError)


def test_reserved_record_flags() -> None:
    for bit in (0x04, 0x08, 0x10):
        data = build_stream([frame(1, bit, HEADER.to_bytes())])
        assert isinstance(expect_format_error(data), UnknownFlagsError)
    with pytest.raises(UnknownFlagsError):
        RecordHeader(**{**HEADER.__dict__, "flags": FINAL})  # FINAL is the writer's alone


def thumb_frame(body: bytes, padding: int = 0, payload: bytes = b"") -> bytes:
    return frame(1, 0, body, padding, 0, payload)


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
    """HEADER's body per SPEC with raw field values replaced, bypassing validation.

    A varint field given as bytes is written as those bytes (to forge encodings).
    """
    fields: dict[str, object] = {
        "fp": HEADER.fingerprint,
        "width": HEADER.width,
        "height": HEADER.height,
        "mode": HEADER.mode.encode(),
        "side": HEADER.side,
        "bits": HEADER.freq_bits,
        "bsize": 1,
        "bindex": 0,
        "ext": b"",
    }
    fields.update(changes)

    def var(name: str) -> bytes:
        value = fields[name]
        return value if isinstance(value, bytes) else leb128(value)

    mode, ext = fields["mode"], fields["ext"]
    assert isinstance(mode, bytes) and isinstance(ext, bytes)
    return b"".join(
        (
            fields["fp"],
            var("width"),
            var("height"),
            bytes([len(mode)]),
            mode,
            var("side"),
            bytes([fields["bits"]]),
            var("bsize"),
            var("bindex"),
            leb128(len(ext)) if "ext_len" not in fields else fields["ext_len"],
            ext,
        )
    )


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (header_body(), None),
        (header_body(width=0), InvalidFieldError),
        (header_body(height=0), InvalidFieldError),
        (header_body(width=65536), InvalidFieldError),
        (header_body(width=b"\x80\x85\x00"), InvalidFieldError),  # 640, not minimal
        (header_body(height=b"\xe0\x83\x80\x00"), InvalidFieldError),  # 4 bytes, 3 allowed
        (header_body(mode=b""), InvalidFieldError),
        (header_body(mode=b"RG\xffB"), InvalidFieldError),
        (header_body(mode=b"R G"), InvalidFieldError),
        (header_body(mode=b"X" * 17), InvalidFieldError),
        (header_body(side=0), InvalidFieldError),
        (header_body(side=MAX_SIDE + 1), InvalidFieldError),
        (header_body(side=b"\xa0\x80\x00"), InvalidFieldError),  # 3 bytes, 2 allowed
        (header_body(side=b"\xa0\x00"), InvalidFieldError),  # 32, not minimal
        (header_body(bits=0), InvalidFieldError),
        (header_body(bits=32), InvalidFieldError),
        (header_body(bsize=0, bindex=0), InvalidFieldError),
        (header_body(bsize=2, bindex=2), InvalidFieldError),
        (header_body(bsize=0xFFFF, bindex=0xFFFF), InvalidFieldError),
        (header_body(ext=b"\x01\x09\x00"), InvalidFieldError),
        (header_body(ext_len=b"\x80\x00"), InvalidFieldError),  # 0, not minimal
        (header_body() + b"\x00", InvalidFieldError),
        (header_body()[:-1], InvalidFieldError),
        (header_body()[:10], InvalidFieldError),
        (header_body()[:9], InvalidFieldError),  # ends inside the width varint
        (b"", InvalidFieldError),
    ],
)
def test_impossible_field_values(body: bytes, error: type[FormatError] | None) -> None:
    data = build_stream([thumb_frame(body)])
    if error is None:
        assert unpack_stream(data)[0].header == HEADER
    else:
        assert isinstance(expect_format_error(data), error)


def test_token_count_is_side_squared_and_not_stored() -> None:
    (record,) = unpack_stream(build_stream([thumb_frame(header_body(side=31))]))
    assert (record.header.side, record.header.token_count) == (31, 961)


@pytest.mark.parametrize(
    ("padding", "payload", "error"),
    [(1, b"\x81", PayloadError), (2, b"", PayloadError)],
)
def test_padding_rules(padding: int, payload: bytes, error: type[FormatError]) -> None:
    data = build_stream([thumb_frame(header_body(), padding, payload)])
    assert isinstance(expect_format_error(data), error)
    with pytest.raises(error):
        Record(HEADER, payload, padding, 0)


def test_padding_count_fits_three_bits() -> None:
    for padding in (-1, 8):
        with pytest.raises(InvalidFieldError):
            Record(HEADER, b"\x80", padding, 0)
        with pytest.raises(InvalidFieldError):
            StreamWriter(io.BytesIO()).write_raw_record(
                0x42, RECORD_ANCILLARY, b"", b"\x80", padding
            )


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
        {"side": 0, "token_count": 0},
        {"token_count": MAX_TOKENS + 1, "side": 1025},
        {"token_count": 1025**2, "side": 1025},
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


# --- varints -------------------------------------------------------------------------------

# Every limit a varint field of the format has: H, P, width/height/batch size, batch index,
# side, extension area length, record count.
LIMITS = [0xFFFF, MAX_PAYLOAD, 0xFFFE, MAX_SIDE, 16384, MAX_RECORDS, 0, 1, 127, 128]


@st.composite
def value_and_limit(draw: st.DrawFn) -> tuple[int, int]:
    limit = draw(st.sampled_from(LIMITS) | st.integers(0, 2**40))
    return draw(st.integers(0, limit)), limit


def non_minimal(encoding: bytes) -> bytes:
    """The same value with one more, empty, group."""
    return encoding[:-1] + bytes([encoding[-1] | 0x80, 0x00])


@settings(max_examples=300, deadline=None)
@given(case=value_and_limit(), tail=st.binary(max_size=4))
def test_varint_round_trip(case: tuple[int, int], tail: bytes) -> None:
    value, limit = case
    encoding = encode_varint(value)
    assert encoding == leb128(value)
    assert len(encoding) <= varint_size(limit)
    assert all(b & 0x80 for b in encoding[:-1]) and not encoding[-1] & 0x80
    assert decode_varint(b"\xaa" + encoding + tail, 1, limit, "field") == (value, 1 + len(encoding))
    source = ByteSource(io.BytesIO(encoding + tail))
    assert source.read_varint(limit, "field", too_long=LengthOutOfRangeError) == (value, True)
    assert source.offset == len(encoding)


@settings(max_examples=300, deadline=None)
@given(case=value_and_limit())
def test_varint_non_minimal_rejected(case: tuple[int, int]) -> None:
    value, limit = case
    forged = non_minimal(encode_varint(value))
    with pytest.raises(InvalidFieldError, match=r"minimal|runs past"):
        decode_varint(forged, 0, limit, "field")
    if len(forged) <= varint_size(limit):
        # The stream reader returns the value, flagged, so the CRC can be checked first.
        source = ByteSource(io.BytesIO(forged))
        assert source.read_varint(limit, "f", too_long=LengthOutOfRangeError) == (value, False)


@settings(max_examples=300, deadline=None)
@given(case=value_and_limit(), extra=st.integers(1, 3))
def test_varint_overlong_rejected(case: tuple[int, int], extra: int) -> None:
    """More bytes than the field's limit needs are refused without reading past them."""
    value, limit = case
    forged = encode_varint(value)
    while len(forged) < varint_size(limit) + extra:
        forged = non_minimal(forged)
    with pytest.raises(InvalidFieldError, match="runs past"):
        decode_varint(forged + b"\x00", 0, limit, "field")
    source = ByteSource(io.BytesIO(forged))
    with pytest.raises(LengthOutOfRangeError, match="runs past"):
        source.read_varint(limit, "field", too_long=LengthOutOfRangeError)
    assert source.offset == varint_size(limit)
    # A value over the limit in the allowed bytes is refused too.
    over = limit + 1
    if len(encode_varint(over)) <= varint_size(limit):
        with pytest.raises(InvalidFieldError, match="exceeds"):
            decode_varint(encode_varint(over), 0, limit, "field")


def test_varint_sizes() -> None:
    assert [varint_size(n) for n in (0, 127, 128, 0xFFFF, MAX_SIDE, 16384)] == [1, 1, 2, 3, 2, 3]
    assert (varint_size(MAX_PAYLOAD), varint_size(MAX_RECORDS)) == (4, 5)
    assert encode_varint(0) == b"\x00" and encode_varint(2**14) == b"\x80\x80\x01"
    for bad in (-1, True, 1.0):
        with pytest.raises(ValueError):
            encode_varint(bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidFieldError, match="ends inside"):
        decode_varint(b"\x80", 0, 0xFFFF, "width")
    with pytest.raises(TruncatedError, match="cut off"):
        ByteSource(io.BytesIO(b"\x80")).read_varint(0xFFFF, "H", too_long=LengthOutOfRangeError)


def raw_frame(length_h: bytes, length_p: bytes, body: bytes, payload: bytes = b"") -> bytes:
    """A thumbnail frame with its two length varints given as bytes."""
    return b"\x01\x00" + length_h + body + b"\0\0\0\0" + length_p + payload


def test_frame_lengths_must_be_minimal_and_short() -> None:
    body = HEADER.to_bytes()
    assert len(body) < 128
    good = raw_frame(leb128(len(body)), b"\x01", body, b"\x80")
    assert unpack_stream(build_stream([good]))[0].payload == b"\x80"
    # Non-minimal: the CRC holds (a faulty writer), so the reader says what is wrong.
    for bad in (
        raw_frame(non_minimal(leb128(len(body))), b"\x01", body, b"\x80"),
        raw_frame(leb128(len(body)), b"\x81\x00", body, b"\x80"),
    ):
        error = expect_format_error(build_stream([bad]))
        assert isinstance(error, InvalidFieldError) and "minimal" in str(error)
    # Longer than the limit needs (3 bytes for H, 4 for P): refused before anything else.
    for bad in (
        raw_frame(b"\x80\x80\x80\x00", b"\x01", body, b"\x80"),
        raw_frame(leb128(len(body)), b"\x81\x80\x80\x80\x00", body, b"\x80"),
    ):
        error = expect_format_error(build_stream([bad]))
        assert isinstance(error, LengthOutOfRangeError) and "runs past" in str(error)
    # A value over the limit in the allowed bytes.
    over_h = raw_frame(leb128(0x10000), b"\x00", body)
    assert isinstance(expect_format_error(build_stream([over_h])), LengthOutOfRangeError)


def test_end_marker_count() -> None:
    data = pack_stream([RECORD, RECORD])
    assert data[-2:] == b"\x00\x02"
    for tail, error in (
        (b"\x82\x00", InvalidFieldError),  # 2, not minimal
        (b"\x82\x80\x80\x80\x80\x00", InvalidFieldError),  # past the 5 bytes of 2^32 - 1
        (b"\x03", InvalidFieldError),
        (b"\x82", TruncatedError),
        (b"\x02\x00", TrailingDataError),
    ):
        assert isinstance(expect_format_error(data[:-1] + tail), error)
    # Counts from 128 on take two bytes; every cut and flip of them is caught.
    skip = frame(0x42, RECORD_ANCILLARY, b"")
    many = build_stream([skip] * 200)
    assert many.endswith(b"\x00\xc8\x01") and unpack_stream(many) == []
    for n in (1, 2):
        with pytest.raises(TruncatedError):
            list(iter_records(Pipe(many[:-n])))
    for i in range(len(many) - 3, len(many)):
        for mask in (0x01, 0x80, 0xFF):
            flipped = bytearray(many)
            flipped[i] ^= mask
            expect_format_error(bytes(flipped))


# --- the record CRC chain and the final record --------------------------------------------


def test_record_order_and_set_are_covered() -> None:
    """Each record CRC covers the file header and every frame before it, so whole records
    cannot be moved, dropped or repeated even where the end marker's count still holds."""
    records = [Record(HEADER, bytes([i]), 0, i) for i in (1, 2, 3)]
    data = pack_stream(records)
    size = len(pack_stream(records[:1])) - 12  # one frame with its CRC
    frames = [data[10 + i * size : 10 + (i + 1) * size] for i in range(3)]
    assert data == data[:10] + b"".join(frames) + b"\x00\x03"
    for order in ([1, 0, 2], [0, 0, 2], [0, 2], [2, 1, 0], [0, 1, 1, 2]):
        body = b"".join(frames[i] for i in order)
        forged = data[:10] + body + b"\x00" + leb128(len(order))
        assert isinstance(expect_format_error(forged), ChecksumError)


def test_final_flag() -> None:
    known = thumb_frame(header_body())
    error = expect_format_error(build_stream([known, known], final=False))
    assert isinstance(error, InvalidFieldError) and "not marked final" in str(error)
    # A stream cut at a record boundary, with or without a well-formed end marker after it.
    two = pack_stream([RECORD, RECORD])
    size = len(pack_stream([RECORD])) - 12
    prefix = two[: 10 + size]
    assert isinstance(expect_format_error(prefix + b"\x00\x01"), InvalidFieldError)
    assert isinstance(expect_format_error(prefix), MissingEndMarkerError)
    # A record after the final one.
    marked = known[:1] + bytes([known[1] | FINAL]) + known[2:]
    error = expect_format_error(build_stream([marked, known]))
    assert isinstance(error, InvalidFieldError) and "follows the record marked final" in str(error)
