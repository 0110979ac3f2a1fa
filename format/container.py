"""The stream: file header, framed records (layout in format/SPEC.md, version 2).

Written and read strictly front to back, so compress can write to a pipe and
decompress can read from one. Record CRCs are chained: each covers the file
header and every frame before it, so a record is handed to the caller only once
everything up to its end has been checked. The last record carries FINAL and no
length: it runs to the end of the stream, whose last 4 bytes are its CRC, or to
the header of a concatenated stream (SPEC.md, "Concatenated streams").

Longer than 400 lines on purpose: the writer, the frame parser and the stream walk
(image groups, parts, concatenation) share one set of private checks, and splitting
them would make those checks public API of the format package.
"""

from __future__ import annotations

import dataclasses
import io
import struct
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np

from igpt_codec.format.classical import (
    ClassicalImageRecord,
    ClassicalPart,
    ClassicalStart,
    frame_bodies,
    join_parts,
    parse_part,
    parse_start,
)
from igpt_codec.format.errors import (
    BadMagicError,
    ChecksumError,
    InvalidFieldError,
    LengthOutOfRangeError,
    MissingEndMarkerError,
    TruncatedError,
    UnknownRecordKindError,
    UnsupportedVersionError,
)
from igpt_codec.format.records import (
    BAND_CHECK_LEN,
    CODING_MASK,
    CODING_SHIFT,
    FINGERPRINT_LEN,
    KIND_CLASSICAL,
    KIND_CLASSICAL_PART,
    KIND_FULL_IMAGE,
    KIND_MASK,
    KIND_NAME,
    KIND_SEGMENT,
    KNOWN_KINDS,
    MAX_KIND,
    MAX_PAYLOAD,
    RECORD_ANCILLARY,
    RECORD_FINAL,
    TOKEN_CHECK_LEN,
    FullImageHeader,
    FullImageRecord,
    Record,
    RecordHeader,
    Segment,
    check_name,
    check_payload,
    parse_name,
)
from igpt_codec.format.source import ByteSource
from igpt_codec.format.varint import encode_varint

AnyRecord = Record | FullImageRecord | ClassicalImageRecord
"""What a stream holds: thumbnails (kind 1) and full-resolution images (kinds 3 + 4, or
kinds 5 + 6 when stored as a classical image file)."""

MAGIC = b"\x89IG"
"""A high-bit byte (7-bit channels break it) and the name."""
VERSION = 2
FILE_HEADER_LEN = len(MAGIC) + 1 + FINGERPRINT_LEN
MAX_FRAME = MAX_PAYLOAD + 64
"""Largest record frame after its head byte and length: body, token check, payload."""


def segment_payload_limit(band_checks: int) -> int:
    """Most payload bytes a kind-4 record holding `band_checks` band checks may carry:
    MAX_PAYLOAD, and its whole frame (token check, band checks, payload) within MAX_FRAME.
    A tall image's chain segment holds thousands of band checks (one per band but the
    last), so the frame can be the tighter cap; writers plan segments against this."""
    return min(MAX_PAYLOAD, MAX_FRAME - TOKEN_CHECK_LEN - band_checks * BAND_CHECK_LEN)


V1_MAGIC = b"\x89IGP\r\n\x1a\n"
"""Version 1's magic, recognised to say which release can read such a file."""

_U32 = struct.Struct("<I")
_U16 = struct.Struct("<H")


@dataclass(frozen=True)
class FileHeader:
    version: int
    fingerprint: bytes


def token_check(tokens: np.ndarray, header: RecordHeader | None = None) -> int:
    """Low 16 bits of the CRC-32 of what the record claims: its head bits, model fingerprint
    and header body (geometry, mode, original size), then the tokens as uint16 LE.

    Covering the header means a record whose size or mode was changed (and its frame CRC
    recomputed) fails the check after decoding, like changed tokens do. `header` None
    checks the tokens alone (tools).
    """
    arr = np.asarray(tokens)
    if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"tokens must be a 1-D integer array, got {arr.dtype} {arr.shape}")
    if arr.size and (int(arr.min()) < 0 or int(arr.max()) > 0xFFFF):
        raise ValueError("tokens must fit in uint16")
    crc = 0
    if header is not None:
        claimed = bytes([header.head_bits]) + header.fingerprint + header.to_bytes()
        crc = zlib.crc32(claimed)
    return zlib.crc32(arr.astype("<u2").tobytes(), crc) & 0xFFFF


class SegmentCheck:
    """The token check of segment `index` of a full-resolution image, fed in pieces: low 16
    bits of the CRC-32 of the segment's head bits, the fingerprint, the image header body
    and the segment index (varint), then the segment's tokens in coding order as uint16
    LE. A segment may span every band of a chain, so coders add each band's tokens as
    they go instead of holding the chain's."""

    def __init__(self, header: FullImageHeader, index: int) -> None:
        claimed = (
            bytes([header.segment_head_bits])
            + header.fingerprint
            + header.to_bytes()
            + encode_varint(index)
        )
        self._crc = zlib.crc32(claimed)

    def add(self, tokens: np.ndarray) -> SegmentCheck:
        arr = np.asarray(tokens)
        if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(f"tokens must be a 1-D integer array, got {arr.dtype} {arr.shape}")
        self._crc = zlib.crc32(arr.astype("<u2").tobytes(), self._crc)
        return self

    @property
    def value(self) -> int:
        return self._crc & 0xFFFF

    @property
    def band_value(self) -> int:
        """The band check of the tokens added so far (BAND_CHECKS): the running CRC's low 8
        bits. One byte: it is an early alarm, not the last word: a forgery passes a band's
        check with probability 2^-8, then meets the next band's and the segment's 16 bits."""
        return self._crc & 0xFF


def segment_check(tokens: np.ndarray, header: FullImageHeader, index: int) -> int:
    """The token check of a whole segment's tokens (SegmentCheck in one piece)."""
    return SegmentCheck(header, index).add(tokens).value


def _frame_body(record: Record) -> bytes:
    """Header body, token check and payload: what follows the head byte and length."""
    return record.header.to_bytes() + _U16.pack(record.token_check) + record.payload


class StreamWriter:
    """Writes a stream record by record; `close()` marks the last record final.

    The last record carries FINAL and no length, which the writer cannot know until
    the next record or `close()`, so each record is held back until then. The file
    header goes out with the first record, so a writer that never wrote a record
    leaves nothing behind. Every record of a stream comes from one model (the file
    header holds its fingerprint). Used as a context manager, a failed block writes
    the held record without FINAL, so what was written reads as truncated. The file
    object is not closed.
    """

    def __init__(self, fileobj: BinaryIO) -> None:
        self._file = fileobj
        self._chain = 0
        self._fingerprint: bytes | None = None
        self._held: tuple[int, bytes] | None = None
        self._closed = False

    def _hold(self, head: int, body: bytes, fingerprint: bytes) -> None:
        if self._closed:
            raise ValueError("stream writer is closed")
        if self._fingerprint is None:
            self._fingerprint = fingerprint
            self._file_header = MAGIC + bytes([VERSION]) + fingerprint
        elif fingerprint != self._fingerprint:
            raise InvalidFieldError(
                f"a stream holds one model's records: {fingerprint.hex()} after "
                f"{self._fingerprint.hex()}"
            )
        if len(body) > MAX_FRAME:
            raise LengthOutOfRangeError(f"record of {len(body)} bytes exceeds {MAX_FRAME}")
        self._release(final=False)
        self._held = (head, body)

    def _release(self, *, final: bool) -> None:
        """Write the held record, if any: FINAL without a length, else with one."""
        if self._held is None:
            return
        head, body = self._held
        self._held = None
        out = b""
        if not self._chain:
            out = self._file_header
            self._chain = zlib.crc32(out)
        if final:
            frame = bytes([head | RECORD_FINAL]) + body
        else:
            frame = bytes([head]) + encode_varint(len(body)) + body
        self._chain = zlib.crc32(frame, self._chain)
        self._file.write(out + frame + _U32.pack(self._chain))

    def write_record(self, record: AnyRecord) -> None:
        """Write a record; a stored name goes first, as an ancillary name record. A
        full-resolution image is its header record followed by its segment records."""
        if not isinstance(record, Record | FullImageRecord | ClassicalImageRecord):
            raise TypeError(f"expected a Record, got {type(record).__name__}")
        fingerprint = record.header.fingerprint
        if record.name is not None:
            self._hold(KIND_NAME | RECORD_ANCILLARY, check_name(record.name), fingerprint)
        if isinstance(record, Record):
            self._hold(record.header.head_bits, _frame_body(record), fingerprint)
            return
        if isinstance(record, ClassicalImageRecord):
            for head, body in frame_bodies(record):
                self._hold(head, body, fingerprint)
            return
        self._hold(record.header.head_bits, record.header.to_bytes(), fingerprint)
        for segment in record.segments:
            self._hold(record.header.segment_head_bits, segment.to_bytes(), fingerprint)

    def write_raw_record(self, head: int, body: bytes, fingerprint: bytes) -> None:
        """Frame an opaque record, e.g. a kind this library does not know (tools, tests).

        `head` is the head byte without FINAL; only the framing is validated.
        """
        if not 1 <= head & KIND_MASK <= MAX_KIND or head & RECORD_FINAL or not 0 <= head <= 0xFF:
            raise InvalidFieldError(f"bad head byte {head:#04x}")
        if len(fingerprint) != FINGERPRINT_LEN:
            raise InvalidFieldError(f"fingerprint must be {FINGERPRINT_LEN} bytes")
        self._hold(head, bytes(body), bytes(fingerprint))

    def close(self) -> None:
        """Write the last record as FINAL (once). Refuses an empty stream."""
        if self._closed:
            return
        if self._held is None:
            raise ValueError("a stream needs at least one record")
        if self._held[0] & KIND_MASK == KIND_NAME:
            raise ValueError("a name record must be followed by its image record")
        self._release(final=True)
        self._closed = True
        flush = getattr(self._file, "flush", None)
        if flush is not None:
            flush()

    def __enter__(self) -> StreamWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.close()
        elif not self._closed:
            self._closed = True
            self._release(final=False)


def _read_file_header(src: ByteSource) -> FileHeader:
    start = src.read_upto(len(MAGIC) + 1)
    if start[: len(MAGIC)] != MAGIC[: len(start)] or len(start) < len(MAGIC) + 1:
        if MAGIC.startswith(start[: len(MAGIC)]) and len(start) < len(MAGIC) + 1:
            raise TruncatedError(f"truncated stream: {len(start)} bytes, not even a file header")
        raise BadMagicError(f"not an IGP stream: bad magic {start[: len(MAGIC)]!r}")
    version = start[-1]
    if version != VERSION:
        if start + src.read_upto(len(V1_MAGIC) - len(start)) == V1_MAGIC:
            raise UnsupportedVersionError(
                "made by an older version: format 1 (igpt-codec 0.1, float graph) can be read "
                "only by igpt-codec 0.1 on the machine that wrote it; this reader knows format 2"
            )
        raise UnsupportedVersionError(
            f"format version {version} is not supported (this reader knows {VERSION})"
        )
    fingerprint = src.read(FINGERPRINT_LEN, "file header fingerprint")
    return FileHeader(version, fingerprint)


def read_file_header(fileobj: BinaryIO) -> FileHeader:
    """Read and validate only the file header (magic, version, model fingerprint)."""
    return _read_file_header(ByteSource(fileobj))


_Parsed = Record | FullImageHeader | Segment | ClassicalStart | ClassicalPart | str | None


def _read_record(
    src: ByteSource, head: int, fingerprint: bytes, band_checks: int = 0
) -> tuple[_Parsed, bool]:
    """One framed record after its head byte: (the record, or None if it is skippable and
    unknown; whether it is the final one). `band_checks`: how many a segment record holds
    (its image header says)."""
    start = src.offset - 1
    kind = head & KIND_MASK
    final = bool(head & RECORD_FINAL)
    if kind == 0:
        raise InvalidFieldError(f"record at offset {start}: kind 0 is not a record")
    known = kind in KNOWN_KINDS
    if not known and not head & RECORD_ANCILLARY:
        raise UnknownRecordKindError(
            f"record at offset {start}: unknown must-understand record kind {kind}"
        )
    minimal = True
    if final:
        # The final record runs to the end of the stream, or to a concatenated stream's
        # header: read at most a few bytes past the largest frame, so a forged or endless
        # stream costs bounded memory.
        want = MAX_FRAME + _U32.size + len(MAGIC) + 1
        rest = src.read_upto(want, hashed=False)
        end = _final_end(rest, src.crc, ended=len(rest) < want)
        if end is None and len(rest) > MAX_FRAME + _U32.size:
            raise LengthOutOfRangeError(
                f"final record at offset {start} runs past the limit of {MAX_FRAME} bytes"
            )
        if len(rest) < _U32.size:
            raise TruncatedError(f"truncated stream: the final record at offset {start} is cut")
        if end is not None and isinstance(src, _StreamSource):
            src.leftover, rest = rest[end:], rest[:end]
        body, crc_bytes = rest[: -_U32.size], rest[-_U32.size :]
        actual = zlib.crc32(body, src.crc)
    else:
        length, minimal = src.read_varint(
            MAX_FRAME, "record length", too_long=LengthOutOfRangeError
        )
        src.check_length(length, MAX_FRAME, "record")
        body = src.read(length, "record")
        actual = src.crc
        crc_bytes = src.read(_U32.size, "record CRC", hashed=False)
    (stored,) = _U32.unpack(crc_bytes)
    if stored != actual:
        raise ChecksumError(
            f"record at offset {start}: CRC mismatch (stored {stored:#010x}, computed "
            f"{actual:#010x})"
            + ("; the stream is truncated or has bytes appended" if final else "")
        )
    if not minimal:
        raise InvalidFieldError(f"record at offset {start}: its length is not minimally encoded")
    if not known:
        return None, final
    if kind == KIND_NAME:
        if final:
            raise InvalidFieldError(f"name record at offset {start} ends the stream")
        return parse_name(body), final
    if kind == KIND_FULL_IMAGE:
        return FullImageHeader.from_bytes(head, fingerprint, body), final
    if kind == KIND_CLASSICAL:
        return parse_start(head, fingerprint, body), final
    if kind == KIND_CLASSICAL_PART:
        return parse_part(head, body), final
    if kind == KIND_SEGMENT:
        if head & RECORD_ANCILLARY:
            raise InvalidFieldError(f"record at offset {start}: a segment cannot be ancillary")
        try:
            return Segment.from_bytes(body, band_checks), final
        except InvalidFieldError as exc:
            raise InvalidFieldError(f"record at offset {start}: {exc}") from None
    header, pos = RecordHeader.from_bytes(head, fingerprint, body)
    if len(body) < pos + TOKEN_CHECK_LEN:
        raise InvalidFieldError(f"record at offset {start} ends inside its token check")
    (check,) = _U16.unpack_from(body, pos)
    payload = body[pos + TOKEN_CHECK_LEN :]
    check_payload(payload)
    return Record(header, payload, check), final


def iter_records(
    fileobj: BinaryIO,
    *,
    length: int | None = None,
    on_stream: Callable[[int, FileHeader], None] | None = None,
    on_image: Callable[[FullImageHeader], None] | None = None,
) -> Iterator[AnyRecord]:
    """Yield the records of a stream, front to back, using only `fileobj.read(n)`.

    `length`, when the caller knows the stream's size, lets length fields be checked
    against the bytes that remain. Unknown ancillary records are skipped. A
    full-resolution image is yielded once all its segment records are read, as one
    FullImageRecord. Every defect raises a FormatError subclass; the last record is
    checked before it is yielded. Concatenated streams (SPEC.md, "Concatenated
    streams") are read one after the other, each checked on its own; `on_stream(offset,
    header)` is called as each one's file header is read. `on_image(header)` is called
    as each full-resolution image header is read, before its segment records: a
    decoder's limits refuse a header there (SPEC.md: the charge happens at the header).
    """
    reader: BinaryIO | _Prepended = fileobj
    offset = 0
    while True:
        src = _StreamSource(reader, length)  # type: ignore[arg-type]
        header = _read_file_header(src)
        if on_stream is not None:
            on_stream(offset, header)
        yield from _stream_records(src, header, on_image)
        if not src.leftover:
            return
        consumed = src.offset - len(src.leftover)
        offset += consumed
        length = None if length is None else length - consumed
        reader = _Prepended.before(src.leftover, reader)


def _stream_records(
    src: _StreamSource,
    header: FileHeader,
    on_image: Callable[[FullImageHeader], None] | None = None,
) -> Iterator[AnyRecord]:
    """The records of one stream, after its file header, through its FINAL record."""
    count = 0
    name: str | None = None
    while True:
        head = src.read_upto(1)
        if not head:
            if count == 0:
                raise TruncatedError("truncated stream: a file header and no record")
            raise MissingEndMarkerError(
                f"truncated stream: ends after {count} records, none marked final"
            )
        record, final = _read_record(src, head[0], header.fingerprint)
        count += 1
        if isinstance(record, Segment | ClassicalPart):
            raise InvalidFieldError(
                f"record {count - 1}: a segment or part record without its image's header"
            )
        if isinstance(record, ClassicalStart):
            record, final, count = _read_parts(src, record, header.fingerprint, final, count)
        if isinstance(record, FullImageHeader):
            if final:
                raise InvalidFieldError(f"record {count - 1}: a full-image header ends the stream")
            if on_image is not None:
                on_image(record)
            record, final, count = _read_segments(src, record, header.fingerprint, count)
        if isinstance(record, str):
            if name is not None:
                raise InvalidFieldError(f"record {count - 1}: two name records in a row")
            name = record
            continue
        if record is not None:
            yield record if name is None else dataclasses.replace(record, name=name)
        elif name is not None:
            raise InvalidFieldError(f"record {count - 1}: a name record names a skipped record")
        name = None
        if final:
            return


def _read_segments(
    src: ByteSource, image: FullImageHeader, fingerprint: bytes, count: int
) -> tuple[FullImageRecord, bool, int]:
    """The segment records of a full-resolution image: exactly as many as its tiling has."""
    expected = image.tiling.record_count
    checks = image.band_check_count
    segments: list[Segment] = []
    final = False
    while len(segments) < expected:
        if final:
            raise InvalidFieldError(
                f"record {count - 1}: the stream ends inside a full-resolution image "
                f"({len(segments)} of its {expected} segments)"
            )
        head = src.read_upto(1)
        if not head:
            raise MissingEndMarkerError(
                f"truncated stream: ends inside a full-resolution image after {count} records"
            )
        if head[0] & KIND_MASK != KIND_SEGMENT:
            raise InvalidFieldError(
                f"record {count}: kind {head[0] & KIND_MASK} where segment {len(segments)} of "
                f"{expected} of a full-resolution image belongs"
            )
        segment, final = _read_record(src, head[0], fingerprint, checks)
        count += 1
        if (head[0] & CODING_MASK) >> CODING_SHIFT != image.coding:
            raise InvalidFieldError(
                f"record {count - 1}: a segment's coding differs from its image's"
            )
        assert isinstance(segment, Segment)
        segments.append(segment)
    return FullImageRecord(image, tuple(segments)), final, count


def _read_parts(
    src: ByteSource, start: ClassicalStart, fingerprint: bytes, final: bool, count: int
) -> tuple[ClassicalImageRecord, bool, int]:
    """The kind-6 records that complete a classical image file (format/classical.py)."""
    parts: list[bytes] = []
    while len(parts) < start.header.part_count - 1:
        head = src.read_upto(1)
        if final or not head:
            raise InvalidFieldError(
                f"record {count - 1}: the stream ends inside a classical image file "
                f"({len(parts) + 1} of its {start.header.part_count} parts)"
            )
        if head[0] & KIND_MASK != KIND_CLASSICAL_PART:
            raise InvalidFieldError(
                f"record {count}: kind {head[0] & KIND_MASK} where part {len(parts) + 1} of a "
                "classical image file belongs"
            )
        part, final = _read_record(src, head[0], fingerprint)
        count += 1
        assert isinstance(part, ClassicalPart)
        parts.append(part.data)
    return join_parts(start, parts), final, count


class _StreamSource(ByteSource):
    """A ByteSource that keeps what was read past the end of a FINAL record: the start of
    a concatenated stream, handed to the next stream's source."""

    __slots__ = ("leftover",)

    def __init__(self, fileobj: BinaryIO, length: int | None = None) -> None:
        super().__init__(fileobj, length)
        self.leftover = b""


class _Prepended:
    """Bytes already read, served before the rest of a file object (`read(n)` only)."""

    def __init__(self, head: bytes, fileobj: BinaryIO) -> None:
        self._head = head
        self._file = fileobj

    @classmethod
    def before(cls, head: bytes, reader: BinaryIO | _Prepended) -> _Prepended:
        if isinstance(reader, _Prepended):  # flat, however many streams follow
            return cls(head + reader._head, reader._file)
        return cls(head, reader)

    def read(self, n: int = -1) -> bytes:
        if not self._head:
            return self._file.read(n)
        if n < 0:
            data, self._head = self._head + self._file.read(), b""
            return data
        data, self._head = self._head[:n], self._head[n:]
        return data


def _final_end(rest: bytes, crc: int, *, ended: bool) -> int | None:
    """Where a FINAL record read as `rest` ends (after its CRC), or None if nowhere.

    At the end of the input when the input ended and the CRC holds there (one stream, as
    always); otherwise at the first point, within the frame limit, where the CRC holds
    and the magic of another stream's header follows (SPEC.md, "Concatenated streams").
    """
    whole = ended and _U32.size <= len(rest) <= MAX_FRAME + _U32.size
    if whole and zlib.crc32(rest[:-4], crc) == _U32.unpack_from(rest, len(rest) - 4)[0]:
        return len(rest)
    at = rest.find(MAGIC, _U32.size)
    while 0 <= at <= MAX_FRAME + _U32.size:
        if zlib.crc32(rest[: at - _U32.size], crc) == _U32.unpack_from(rest, at - 4)[0]:
            return at
        at = rest.find(MAGIC, at + 1)
    return None


def pack_stream(records: list[AnyRecord]) -> bytes:
    """A complete stream holding `records` (at least one)."""
    buf = io.BytesIO()
    writer = StreamWriter(buf)
    for record in records:
        writer.write_record(record)
    writer.close()
    return buf.getvalue()


def unpack_stream(data: bytes) -> list[AnyRecord]:
    """Every record of a complete in-memory stream, after all stream-level checks."""
    data = bytes(data)
    return list(iter_records(io.BytesIO(data), length=len(data)))
