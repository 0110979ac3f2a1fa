"""format.container (version 2): round trips, the SPEC layout, a FormatError per defect.

Long: one test per SPEC.md rule and per defect class of the container.
"""

from __future__ import annotations

import io
import os
import struct
import threading
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest
from conftest import leb128
from hypothesis import given, settings
from hypothesis import strategies as st

from igpt_codec.format import (
    MAGIC,
    BadMagicError,
    ChecksumError,
    CodecError,
    FormatError,
    InvalidFieldError,
    LengthOutOfRangeError,
    MissingEndMarkerError,
    PayloadError,
    Record,
    RecordHeader,
    StreamWriter,
    TruncatedError,
    UnknownRecordKindError,
    UnsupportedVersionError,
    iter_records,
    pack_stream,
    read_file_header,
    token_check,
    unpack_stream,
)
from igpt_codec.format.container import MAX_FRAME, V1_MAGIC
from igpt_codec.format.records import (
    CODING_EXACT,
    CODING_FLOAT32,
    MAX_MODE_LEN,
    MAX_PAYLOAD,
    MAX_SIDE,
    RECORD_ANCILLARY,
    FullImageHeader,
    FullImageRecord,
    Segment,
)

FP = b"\x01\x02\x03\x04\x05\x06\x07\x08"
HEADER = RecordHeader(fingerprint=FP, width=640, height=480, mode="RGB", side=32, token_count=1024)
RECORD = Record(HEADER, b"\x9a\x31\x40", token_check=0xBEEF)
FINAL = 0x80
FULL_HEADER = FullImageHeader(
    fingerprint=FP, width=40, height=40, mode="RGB", grid=32, context_rows=8, segment_windows=1
)
FULL_RECORD = FullImageRecord(
    FULL_HEADER, tuple(Segment(bytes([7, i + 1]), 0x1234 + i) for i in range(4))
)


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


class Endless:
    """A stream that never ends (like /dev/zero after a valid prefix)."""

    def __init__(self, prefix: bytes) -> None:
        self._prefix = prefix

    def read(self, n: int) -> bytes:
        out, self._prefix = self._prefix[:n], self._prefix[n:]
        return out + b"\x07" * (n - len(out))


def file_header(version: int = 2, fingerprint: bytes = FP) -> bytes:
    """Per SPEC: magic, version u8, fingerprint."""
    return MAGIC + bytes([version]) + fingerprint


def build_stream(frames: list[tuple[int, bytes]], fingerprint: bytes = FP) -> bytes:
    """Per SPEC: each (head byte, body) framed with a length, except the last, which is
    FINAL and runs to the end; every frame followed by the chained CRC."""
    out = bytearray(file_header(fingerprint=fingerprint))
    chain = zlib.crc32(out)
    for i, (head, body) in enumerate(frames):
        if i == len(frames) - 1:
            raw = bytes([head | FINAL]) + body
        else:
            raw = bytes([head]) + leb128(len(body)) + body
        chain = zlib.crc32(raw, chain)
        out += raw + struct.pack("<I", chain)
    return bytes(out)


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

printable = st.text(
    st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=MAX_MODE_LEN
)


@st.composite
def records(draw: st.DrawFn) -> Record:
    side = draw(st.integers(1, MAX_SIDE))
    header = RecordHeader(
        fingerprint=FP,
        width=draw(st.integers(1, 0xFFFF)),
        height=draw(st.integers(1, 0xFFFF)),
        mode=draw(st.sampled_from(["RGB", "L", "RGBA"]) | printable),
        side=side,
        token_count=side * side,
        coding=draw(st.sampled_from([CODING_EXACT, CODING_FLOAT32])),
    )
    payload = draw(st.binary(max_size=300))
    if payload and payload[-1] == 0:
        payload += b"\x01"
    return Record(header, payload, draw(st.integers(0, 0xFFFF)))


@settings(max_examples=150, deadline=None)
@given(recs=st.lists(records(), min_size=1, max_size=4), step=st.integers(1, 64))
def test_round_trip(recs: list[Record], step: int) -> None:
    data = pack_stream(recs)
    assert unpack_stream(data) == recs
    assert list(iter_records(Pipe(data, step))) == recs


def test_layout_matches_spec() -> None:
    """A stream assembled by hand, byte by byte, from SPEC.md's tables equals the writer's."""
    header = RecordHeader(
        fingerprint=b"ABCDEFGH",
        width=300,
        height=2,
        mode="I;16",
        side=32,
        token_count=1024,
        coding=CODING_FLOAT32,
    )
    body = (
        bytes([31 | 3 << 6])  # side - 1 = 31, mode code 3: spelled out
        + b"\x04I;16"  # mode length, mode
        + b"\xac\x02"  # width 300 = 0b10_0101100: 0x2C | 0x80, then 0x02
        + b"\x02"  # height
    )
    assert header.to_bytes() == body
    payload = b"\x12\x80" * 100
    record = Record(header, payload, token_check=0x0102)
    head = 0x01 | 1 << 4  # kind 1, coding 1 (float32), not ANCILLARY
    rest = body + b"\x02\x01" + payload  # token check u16 LE
    file_head = b"\x89IG\x02ABCDEFGH"
    final = bytes([head | FINAL]) + rest
    one = file_head + final + struct.pack("<I", zlib.crc32(file_head + final))
    assert pack_stream([record]) == one
    assert unpack_stream(one) == [record]
    assert build_stream([(head, rest)], b"ABCDEFGH") == one
    # Two records: the first has a length (varint) and no FINAL; the chain continues.
    first = bytes([head]) + leb128(len(rest)) + rest
    crc1 = zlib.crc32(file_head + first)
    crc2 = zlib.crc32(final, crc1)
    two = file_head + first + struct.pack("<I", crc1) + final + struct.pack("<I", crc2)
    assert pack_stream([record, record]) == two


def test_overhead_goals() -> None:
    """24 bytes around one thumbnail of a photo with sides >= 128, 14 per further record."""
    header = RecordHeader(FP, width=4000, height=3000, mode="RGB", side=32, token_count=1024)
    record = Record(header, b"\x55" * 500, 7)
    one, three = pack_stream([record]), pack_stream([record] * 3)
    assert len(one) - 500 == 24
    assert (len(three) - len(one) - 1000) / 2 == 14


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
        # The first record is out, framed with a length and without FINAL.
        assert buf.getvalue()[12] == RECORD.header.head_bits
    assert unpack_stream(buf.getvalue()) == [RECORD, RECORD]
    assert read_file_header(io.BytesIO(buf.getvalue())).fingerprint == FP
    writer.close()  # idempotent
    with pytest.raises(ValueError):
        writer.write_record(RECORD)
    with pytest.raises(ValueError, match="at least one record"):
        StreamWriter(io.BytesIO()).close()
    with pytest.raises(TypeError):
        StreamWriter(io.BytesIO()).write_record(HEADER)  # type: ignore[arg-type]


def test_one_model_per_stream() -> None:
    other = Record(RecordHeader(b"\xff" * 8, 1, 1, "L", 1, 1), b"", 0)
    writer = StreamWriter(io.BytesIO())
    writer.write_record(RECORD)
    with pytest.raises(InvalidFieldError, match="one model"):
        writer.write_record(other)


def test_failed_block_leaves_a_truncated_stream() -> None:
    buf = io.BytesIO()
    with pytest.raises(RuntimeError), StreamWriter(buf) as writer:
        writer.write_record(RECORD)
        raise RuntimeError("compression failed")
    with pytest.raises(MissingEndMarkerError):
        unpack_stream(buf.getvalue())
    with pytest.raises(ValueError):
        writer.write_record(RECORD)


# --- corruption --------------------------------------------------------------------------


def sample_streams() -> list[bytes]:
    spelled = Record(RecordHeader(b"\xff" * 8, 1, 65535, "I;16", 1, 1), b"", 0)
    wide = Record(
        RecordHeader(bytes(8), 16384, 128, "RGBA", MAX_SIDE, MAX_SIDE**2, CODING_FLOAT32),
        bytes(range(1, 256)) + b"\x55" * 44 + b"\x08",
        0xFFFF,
    )
    buf = io.BytesIO()
    with StreamWriter(buf) as writer:
        writer.write_raw_record(0x0A | RECORD_ANCILLARY, b"opaque", FP)
        writer.write_record(RECORD)
    return [
        pack_stream([RECORD]),
        pack_stream([spelled, RECORD.__class__(spelled.header, b"\x01", 1), spelled]),
        pack_stream([RECORD, RECORD, RECORD]),
        buf.getvalue(),
        pack_stream([wide, wide]),
        pack_stream([FULL_RECORD, RECORD]),
        pack_stream([RECORD, FULL_RECORD]),
    ]


def test_every_single_byte_flip_is_detected() -> None:
    seen: set[str] = set()
    for data in sample_streams():
        for i in range(len(data)):
            for mask in (0x01, 0x08, 0x80, 0xFF):  # 0x08: kind 1 -> 9, unknown
                flipped = bytearray(data)
                flipped[i] ^= mask
                seen.add(type(expect_format_error(bytes(flipped))).__name__)
    # The flips exercise most of the error types, all FormatError subclasses.
    assert {"ChecksumError", "BadMagicError", "UnsupportedVersionError"} <= seen
    assert {"UnknownRecordKindError", "InvalidFieldError", "LengthOutOfRangeError"} <= seen


def test_every_truncation_and_extension_is_detected() -> None:
    for data in sample_streams():
        for n in range(len(data)):
            expect_format_error(data[:n])
        for extra in (b"\x00", b"\x01\x02", data[len(MAGIC) :]):  # not another stream
            error = expect_format_error(data + extra)
            assert isinstance(error, ChecksumError | LengthOutOfRangeError)


# --- concatenated streams (SPEC.md, "Concatenated streams") -------------------------------


def read_both_ways(data: bytes) -> list:
    known = unpack_stream(data)
    assert list(iter_records(Pipe(data))) == known
    return known


def test_concatenated_streams_read_as_their_records_in_order() -> None:
    """Issue 25: `cat a.igpt b.igpt` failed with a CRC error; now each stream is read and
    checked on its own, one after the other."""
    streams = sample_streams()
    for first in streams:
        for second in streams:
            assert read_both_ways(first + second) == unpack_stream(first) + unpack_stream(second)
    everything = b"".join(streams)
    assert read_both_ways(everything) == [r for s in streams for r in unpack_stream(s)]
    offsets: list[int] = []
    list(iter_records(io.BytesIO(everything), on_stream=lambda at, head: offsets.append(at)))
    assert offsets == [sum(len(s) for s in streams[:i]) for i in range(len(streams))]


def test_a_damaged_or_cut_second_stream_fails_on_its_own() -> None:
    first, second = sample_streams()[0], sample_streams()[2]
    for n in range(1, len(second)):
        expect_format_error(first + second[:n])
    for i in range(len(MAGIC) + 1, len(second)):  # past the magic: the second's own checks
        flipped = bytearray(second)
        flipped[i] ^= 0x01
        expect_format_error(first + bytes(flipped))


def test_a_concatenation_after_a_full_size_final_record() -> None:
    """The first stream's FINAL record is as long as a record may be, and the second stream
    is longer than the reader's window: the boundary is still found, memory stays bounded."""
    big = Record(RECORD.header, b"\x01" * (MAX_FRAME - 64 - 16), 7)
    first, second = pack_stream([big]), pack_stream([big, big])
    records = read_both_ways(first + second)
    assert len(records) == 3 and all(r.payload == big.payload for r in records)


def test_golden_concatenation_of_two_models() -> None:
    """tests/golden/concatenated/two_streams.igpt = tiny_one_24.igpt + default_one_32.igpt
    (two streams, two models): the records of each, each under its own fingerprint."""
    golden = Path(__file__).parent / "golden"
    parts = [(golden / name).read_bytes() for name in ("tiny_one_24.igpt", "default_one_32.igpt")]
    data = (golden / "concatenated" / "two_streams.igpt").read_bytes()
    assert data == b"".join(parts)
    records = read_both_ways(data)
    assert records == unpack_stream(parts[0]) + unpack_stream(parts[1])
    assert len({r.header.fingerprint for r in records}) == 2


@settings(max_examples=300, deadline=None)
@given(garbage=st.binary(max_size=200), prefix=st.sampled_from([b"", file_header()]))
def test_random_garbage_raises_format_error(garbage: bytes, prefix: bytes) -> None:
    expect_format_error(prefix + garbage)


def test_length_over_limit_is_refused_before_reading() -> None:
    forged = file_header() + b"\x01" + leb128(MAX_FRAME + 1) + b"x" * 10
    with pytest.raises(LengthOutOfRangeError):
        unpack_stream(forged)
    with pytest.raises(LengthOutOfRangeError):
        list(iter_records(Pipe(forged)))


def test_length_over_remaining_is_refused_without_allocating() -> None:
    forged = file_header() + b"\x01" + leb128(MAX_FRAME) + b"x" * 10
    with pytest.raises(LengthOutOfRangeError, match="left in the stream"):
        unpack_stream(forged)
    tracemalloc.start()
    try:
        with pytest.raises(TruncatedError):
            list(iter_records(Pipe(forged, step=1 << 16)))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20


def test_endless_final_record_is_bounded() -> None:
    """A final record that never ends is refused after MAX_FRAME bytes, memory bounded."""
    tracemalloc.start()
    try:
        with pytest.raises(LengthOutOfRangeError, match="runs past"):
            list(iter_records(Endless(file_header() + b"\x81")))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * MAX_FRAME


def test_magic_and_versions() -> None:
    data = pack_stream([RECORD])
    with pytest.raises(BadMagicError):
        unpack_stream(b"GIF89a" + data)
    with pytest.raises(BadMagicError):
        unpack_stream(bytes([data[0] & 0x7F]) + data[1:])  # 7-bit channel
    with pytest.raises(UnsupportedVersionError, match="version 3"):
        unpack_stream(data[:3] + b"\x03" + data[4:])
    with pytest.raises(UnsupportedVersionError, match="older version"):
        unpack_stream(V1_MAGIC + b"\x01\x00" + b"\x01" * 40)
    with pytest.raises(TruncatedError):
        unpack_stream(data[:2])
    with pytest.raises(TruncatedError, match="no record"):
        unpack_stream(data[:12])


def test_unknown_ancillary_kind_is_skipped_and_must_understand_refused() -> None:
    rest = RECORD.header.to_bytes() + b"\xef\xbe" + RECORD.payload
    skipped = build_stream([(0x0C | RECORD_ANCILLARY, b"future"), (0x01, rest)])
    assert unpack_stream(skipped) == [RECORD]
    only_skipped = build_stream([(0x0C | RECORD_ANCILLARY, b"future")])
    assert unpack_stream(only_skipped) == []
    with pytest.raises(UnknownRecordKindError, match="kind 12"):
        unpack_stream(build_stream([(0x0C, b"future"), (0x01, rest)]))
    with pytest.raises(InvalidFieldError, match="kind 0"):
        unpack_stream(build_stream([(0x00 | RECORD_ANCILLARY, b"x")]))


def test_record_order_and_set_are_covered() -> None:
    """Records swapped, dropped or duplicated break the chained CRC."""
    a = Record(RECORD.header, b"\x01", 1)
    b = Record(RECORD.header, b"\x02", 2)
    data = pack_stream([a, b, a])
    frames = []
    pos = 12
    for _ in range(2):
        length = data[pos + 1]
        frames.append(data[pos : pos + 2 + length + 4])
        pos += 2 + length + 4
    swapped = data[:12] + frames[1] + frames[0] + data[pos:]
    dropped = data[:12] + frames[1] + data[pos:]
    for forged in (swapped, dropped):
        expect_format_error(forged)


def test_non_final_stream_and_final_in_the_middle() -> None:
    rest = RECORD.header.to_bytes() + b"\xef\xbe" + RECORD.payload
    no_final = bytearray(file_header())
    chain = zlib.crc32(no_final)
    raw = b"\x01" + leb128(len(rest)) + rest
    chain = zlib.crc32(raw, chain)
    no_final += raw + struct.pack("<I", chain)
    with pytest.raises(MissingEndMarkerError):
        unpack_stream(bytes(no_final))
    # Bytes after a FINAL record belong to it: the CRC fails.
    with pytest.raises(ChecksumError):
        unpack_stream(pack_stream([RECORD]) + pack_stream([RECORD])[12:])


def test_non_minimal_length_is_refused() -> None:
    rest = RECORD.header.to_bytes() + b"\xef\xbe" + RECORD.payload
    out = bytearray(file_header())
    chain = zlib.crc32(out)
    raw = b"\x01" + bytes([len(rest) | 0x80, 0x00]) + rest
    chain = zlib.crc32(raw, chain)
    out += raw + struct.pack("<I", chain)
    final = b"\x81" + rest
    out += final + struct.pack("<I", zlib.crc32(final, chain))
    with pytest.raises(InvalidFieldError, match="minimal"):
        unpack_stream(bytes(out))


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b"", "ends inside its header"),
        (b"\x1f", "width"),
        (b"\x1f\x00\x01", "zero side"),
        (b"\xdf", "mode length"),
        (b"\xdf\x00\x01\x01", "mode of 0 bytes"),
        (b"\xdf\x05RG", "mode of 5 bytes"),
        (b"\xdf\x02R\x01\x01\x01", "printable"),
        (b"\xdf\x03RGB\x01\x01", "short code"),
        (b"\x1f\x80\x80\x04\x01", "exceeds"),
        (b"\x1f\x01\x01", "token check"),
    ],
)
def test_impossible_field_values(body: bytes, error: str) -> None:
    with pytest.raises(InvalidFieldError, match=error):
        unpack_stream(build_stream([(0x01, body)]))


def test_unknown_coding_and_canonical_payload() -> None:
    rest = RECORD.header.to_bytes() + b"\xef\xbe"
    with pytest.raises(InvalidFieldError, match="coding 2"):
        unpack_stream(build_stream([(0x21, rest + b"\x01")]))
    with pytest.raises(PayloadError, match="zero byte"):
        unpack_stream(build_stream([(0x01, rest + b"\x01\x00")]))
    with pytest.raises(PayloadError):
        Record(HEADER, b"\x01\x00", 0)


@pytest.mark.parametrize(
    "changes",
    [
        {"fingerprint": b"short"},
        {"width": 0},
        {"height": 65536},
        {"mode": ""},
        {"mode": "x" * 17},
        {"mode": "RGB A"},
        {"side": 0},
        {"side": MAX_SIDE + 1, "token_count": (MAX_SIDE + 1) ** 2},
        {"token_count": 1023},
        {"coding": 3},
        {"flags": 0x80},
        {"kind": 2},
    ],
)
def test_header_validation(changes: dict[str, object]) -> None:
    fields = {**HEADER.__dict__, **changes}
    with pytest.raises(InvalidFieldError):
        RecordHeader(**fields)


def test_record_validation() -> None:
    with pytest.raises(InvalidFieldError):
        Record(HEADER, b"x", 0x10000)
    with pytest.raises(LengthOutOfRangeError):
        Record(HEADER, b"\x01" * (MAX_PAYLOAD + 1), 0)
    with pytest.raises(InvalidFieldError):
        Record(HEADER, "text", 0)  # type: ignore[arg-type]


def test_errors_share_one_base() -> None:
    assert issubclass(FormatError, CodecError)
    assert issubclass(MissingEndMarkerError, TruncatedError)


def test_token_check() -> None:
    tokens = np.array([0, 1, 511, 300], dtype=np.uint16)
    expected = zlib.crc32(struct.pack("<4H", 0, 1, 511, 300)) & 0xFFFF
    assert token_check(tokens) == token_check(tokens.astype(np.int64)) == expected
    claimed = bytes([HEADER.head_bits]) + HEADER.fingerprint + HEADER.to_bytes()
    covered = zlib.crc32(struct.pack("<4H", 0, 1, 511, 300), zlib.crc32(claimed)) & 0xFFFF
    assert token_check(tokens, HEADER) == covered
    wider = RecordHeader(FP, width=641, height=480, mode="RGB", side=32, token_count=1024)
    assert token_check(tokens, wider) != covered
    with pytest.raises(ValueError):
        token_check(np.zeros((2, 2), np.uint16))
    with pytest.raises(ValueError):
        token_check(np.array([70000]))


# --- stored names ------------------------------------------------------------------------


def test_names_round_trip_as_ancillary_records() -> None:
    named = Record(HEADER, RECORD.payload, RECORD.token_check, name="holiday photo é.jpg")
    data = pack_stream([named, RECORD, named])
    assert unpack_stream(data) == [named, RECORD, named]
    assert list(iter_records(Pipe(data))) == [named, RECORD, named]
    plain = pack_stream([RECORD])
    alone = pack_stream([named])
    name_bytes = len("holiday photo é.jpg".encode())
    assert len(alone) - len(plain) == 1 + 1 + name_bytes + 4  # head, R, name, CRC
    assert alone[12] == 0x02 | RECORD_ANCILLARY


@pytest.mark.parametrize("name", ["", "a/b.jpg", "..", ".", "x\0y", "\\evil", "n" * 256])
def test_names_are_plain_file_names(name: str) -> None:
    with pytest.raises(InvalidFieldError):
        Record(HEADER, b"", 0, name=name)


def test_name_record_must_name_the_next_image() -> None:
    rest = RECORD.header.to_bytes() + b"\xef\xbe" + RECORD.payload
    name = 0x02 | RECORD_ANCILLARY
    with pytest.raises(InvalidFieldError, match="ends the stream"):
        unpack_stream(build_stream([(0x01, rest), (name, b"last.jpg")]))
    with pytest.raises(InvalidFieldError, match="two name records"):
        unpack_stream(build_stream([(name, b"a.jpg"), (name, b"b.jpg"), (0x01, rest)]))
    with pytest.raises(InvalidFieldError, match="skipped record"):
        unpack_stream(build_stream([(name, b"a.jpg"), (0x0C | RECORD_ANCILLARY, b"?"), (1, rest)]))
    with pytest.raises(InvalidFieldError, match="not a plain file name"):
        unpack_stream(build_stream([(name, b"dir/a.jpg"), (0x01, rest)]))
    with pytest.raises(InvalidFieldError, match="UTF-8"):
        unpack_stream(build_stream([(name, b"\xff\xfe"), (0x01, rest)]))
