"""The stream: file header, framed records, end marker (layout in format/SPEC.md).

Written and read strictly front to back, so compress can write to a pipe and
decompress can read from one. Record CRCs are chained: each covers the file
header and every frame before it, so a record is handed to the caller only
once everything up to its end has been checked. Checks that need the whole
stream (final-record flag, end marker, record count, trailing bytes) run when
the iterator is exhausted, so callers must consume it to the end before
trusting the stream as a whole.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np

from format.errors import (
    BadMagicError,
    ChecksumError,
    EmptyStreamError,
    InvalidFieldError,
    LengthOutOfRangeError,
    MissingEndMarkerError,
    TrailingDataError,
    TruncatedError,
    UnknownFlagsError,
    UnknownRecordKindError,
    UnsupportedVersionError,
)
from format.records import (
    KIND_END,
    KNOWN_KINDS,
    KNOWN_RECORD_FLAGS,
    MAX_PAYLOAD,
    PADDING_SHIFT,
    RECORD_ANCILLARY,
    RECORD_FINAL,
    RESERVED_RECORD_FLAGS,
    Record,
    RecordHeader,
    check_padding,
)
from format.source import ByteSource
from format.varint import encode_varint

MAGIC = b"\x89IGP\r\n\x1a\n"
"""PNG's trick: a high-bit byte, the name, CR LF, DOS EOF, LF; text-mode copies break it."""
VERSION = 1
KNOWN_FILE_FLAGS = 0
MAX_HEADER_LEN = 0xFFFF
MAX_RECORDS = 0xFFFFFFFF
"""Records in one stream, skipped ones included (the end marker's count)."""

_FILE_HEADER = struct.Struct("<8sBB")  # magic, version, flags
_U32 = struct.Struct("<I")

# What common text-mode manglings do to the magic, for a helpful message.
_MANGLED = {
    b"\x89IGP\n\x1a\n": "CR LF became LF (text-mode transfer)",
    b"\x89IGP\r\r\n\x1a\r\n": "LF became CR LF (text-mode transfer)",
    b"\x09IGP\r\n\x1a\n": "the high bit was stripped (7-bit transfer)",
}


@dataclass(frozen=True)
class FileHeader:
    version: int
    flags: int


def token_crc(tokens: np.ndarray) -> int:
    """CRC-32 of the tokens as uint16 little-endian bytes, in coding order."""
    arr = np.asarray(tokens)
    if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"tokens must be a 1-D integer array, got {arr.dtype} {arr.shape}")
    if arr.size and (int(arr.min()) < 0 or int(arr.max()) > 0xFFFF):
        raise ValueError("tokens must fit in uint16")
    return zlib.crc32(arr.astype("<u2").tobytes())


def _frame(
    kind: int, flags: int, header: bytes, padding_bits: int, tok_crc: int, payload: bytes
) -> bytes:
    """A record frame up to its record CRC, which the writer appends (it is chained).

    `flags` are the frame flags (ANCILLARY, FINAL); the padding count joins them
    in the record-flags byte.
    """
    return b"".join(
        (
            bytes([kind, flags | padding_bits << PADDING_SHIFT]),
            encode_varint(len(header)),
            header,
            _U32.pack(tok_crc),
            encode_varint(len(payload)),
            payload,
        )
    )


_Frame = tuple[int, int, bytes, int, int, bytes]


class StreamWriter:
    """Writes a stream record by record; `close()` marks the last record final and ends it.

    The last record must carry the FINAL flag, which the writer cannot know
    until the next record or `close()`, so each record is held back until then:
    a record reaches the file when the next one is written. The file header
    goes out with the first record, so a writer that never wrote a record
    leaves nothing behind. A stream needs at least one record. Used as a
    context manager, the end marker is written only if the block succeeded: on
    failure the held record is written without FINAL, and what was written
    reads as truncated (`MissingEndMarkerError`); the writer is then closed.
    Without the context manager, a writer that is never closed loses its last
    record. The file object is not closed.
    """

    def __init__(self, fileobj: BinaryIO) -> None:
        self._file = fileobj
        self._chain = 0  # CRC-32 of the file header and every frame written, CRC fields excluded
        self._count = 0  # records accepted, the held one included
        self._held: _Frame | None = None
        self._started = False  # the file header is out
        self._closed = False

    def _hold(self, frame: _Frame) -> None:
        if self._closed:
            raise ValueError("stream writer is closed")
        if self._count >= MAX_RECORDS:
            raise LengthOutOfRangeError(f"a stream holds at most {MAX_RECORDS} records")
        self._release(final=False)
        self._held = frame
        self._count += 1

    def _release(self, *, final: bool) -> None:
        """Write the held record, if any, with or without the FINAL flag."""
        if self._held is None:
            return
        kind, flags, header, padding_bits, tok_crc, payload = self._held
        self._held = None
        out = b""
        if not self._started:
            out = _FILE_HEADER.pack(MAGIC, VERSION, 0)
            self._chain = zlib.crc32(out)
            self._started = True
        frame = _frame(
            kind, flags | (RECORD_FINAL if final else 0), header, padding_bits, tok_crc, payload
        )
        self._chain = zlib.crc32(frame, self._chain)
        self._file.write(out + frame + _U32.pack(self._chain))

    def write_record(self, record: Record) -> None:
        if self._closed:
            raise ValueError("stream writer is closed")
        if not isinstance(record, Record):
            raise TypeError(f"expected a Record, got {type(record).__name__}")
        head = record.header
        self._hold(
            (
                head.kind,
                head.flags,
                head.to_bytes(),
                record.padding_bits,
                record.token_crc,
                record.payload,
            )
        )

    def write_raw_record(
        self,
        kind: int,
        flags: int,
        header: bytes,
        payload: bytes = b"",
        padding_bits: int = 0,
        tok_crc: int = 0,
    ) -> None:
        """Frame an opaque record, e.g. a kind this library does not know (tools, tests).

        Only the framing is validated; the header body is written as given.
        """
        if self._closed:
            raise ValueError("stream writer is closed")
        if not 1 <= kind <= 0xFF:
            raise InvalidFieldError(f"record kind must be 1..255, got {kind}")
        if flags & ~KNOWN_RECORD_FLAGS or not 0 <= flags <= 0xFF:
            raise UnknownFlagsError(f"unknown record flags {flags:#x}")
        if len(header) > MAX_HEADER_LEN or len(payload) > MAX_PAYLOAD:
            raise LengthOutOfRangeError("record header or payload exceeds its length limit")
        if not 0 <= tok_crc <= 0xFFFFFFFF:
            raise InvalidFieldError(f"token CRC must be a u32, got {tok_crc}")
        check_padding(payload, padding_bits)
        self._hold((kind, flags, bytes(header), padding_bits, tok_crc, bytes(payload)))

    def close(self) -> None:
        """Write the last record as FINAL and the end marker (once). Refuses an empty stream."""
        if self._closed:
            return
        if self._count == 0:
            raise ValueError("a stream needs at least one record")
        self._release(final=True)
        self._file.write(bytes([KIND_END]) + encode_varint(self._count))
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
    magic = src.read_upto(len(MAGIC))
    if magic != MAGIC:
        if MAGIC.startswith(magic):
            raise TruncatedError(f"truncated stream: {len(magic)} bytes, not even a file header")
        start = magic + src.read_upto(2)
        hint = next((why for bad, why in _MANGLED.items() if start.startswith(bad)), None)
        raise BadMagicError(
            f"not an IGP stream: bad magic {magic!r}" + (f"; {hint}" if hint else "")
        )
    _, version, flags = _FILE_HEADER.unpack(magic + src.read(2, "file header"))
    if version != VERSION:
        raise UnsupportedVersionError(
            f"format version {version} is not supported (this reader knows {VERSION})"
        )
    if flags & ~KNOWN_FILE_FLAGS:
        raise UnknownFlagsError(f"unknown file flags {flags:#04x}")
    return FileHeader(version, flags)


def read_file_header(fileobj: BinaryIO) -> FileHeader:
    """Read and validate only the 10-byte file header (e.g. for `info`)."""
    return _read_file_header(ByteSource(fileobj))


def _read_end_marker(src: ByteSource, count: int, final: bool) -> None:
    start = src.offset - 1
    stored, minimal = src.read_varint(
        MAX_RECORDS, "end marker record count", too_long=InvalidFieldError
    )
    if not minimal:
        raise InvalidFieldError(f"end marker at offset {start}: count is not minimally encoded")
    if count and not final:
        raise InvalidFieldError(
            f"end marker at offset {start} follows record {count}, which is not marked final"
        )
    if stored != count:
        raise InvalidFieldError(f"end marker counts {stored} records, stream has {count}")
    if count == 0:
        raise EmptyStreamError("stream has no records")
    extra = src.read_upto(1)
    if extra:
        raise TrailingDataError(f"trailing data after the end marker at offset {src.offset - 1}")


def _read_record(src: ByteSource, kind: int) -> tuple[Record | None, bool]:
    """One framed record after its kind byte: (the record, or None if it is skippable and
    unknown; whether it is marked final)."""
    start = src.offset - 1
    flag_byte = src.read(1, "record flags")[0]
    if flag_byte & RESERVED_RECORD_FLAGS:
        raise UnknownFlagsError(f"record at offset {start}: unknown record flags {flag_byte:#04x}")
    flags = flag_byte & RECORD_ANCILLARY
    known = kind in KNOWN_KINDS
    if not known and not flags:
        raise UnknownRecordKindError(
            f"record at offset {start}: unknown must-understand record kind {kind}"
        )
    header_len, minimal_h = src.read_varint(
        MAX_HEADER_LEN, "record header length", too_long=LengthOutOfRangeError
    )
    src.check_length(header_len, MAX_HEADER_LEN, "record header")
    header = src.read(header_len, "record header")
    (tok_crc,) = _U32.unpack(src.read(_U32.size, "token CRC"))
    payload_len, minimal_p = src.read_varint(
        MAX_PAYLOAD, "record payload length", too_long=LengthOutOfRangeError
    )
    src.check_length(payload_len, MAX_PAYLOAD, "record payload")
    payload = src.read(payload_len, "record payload")
    actual = src.crc
    (stored,) = _U32.unpack(src.read(_U32.size, "record CRC", hashed=False))
    if stored != actual:
        raise ChecksumError(
            f"record at offset {start}: CRC mismatch (stored {stored:#010x}, "
            f"computed {actual:#010x})"
        )
    if not (minimal_h and minimal_p):
        raise InvalidFieldError(f"record at offset {start}: a length is not minimally encoded")
    final = bool(flag_byte & RECORD_FINAL)
    if not known:
        return None, final
    padding_bits = flag_byte >> PADDING_SHIFT
    header_fields = RecordHeader.from_bytes(kind, flags, header)
    return Record(header_fields, payload, padding_bits, tok_crc), final


def iter_records(fileobj: BinaryIO, *, length: int | None = None) -> Iterator[Record]:
    """Yield the records of a stream, front to back, using only `fileobj.read(n)`.

    `length`, when the caller knows the stream's size, lets length fields be
    checked against the bytes that remain. Unknown ancillary records are
    skipped. Every defect raises a FormatError subclass.
    """
    src = ByteSource(fileobj, length)
    _read_file_header(src)
    count = 0
    final = False
    while True:
        kind_byte = src.read_upto(1)
        if not kind_byte:
            raise MissingEndMarkerError(
                f"truncated stream: ends after {count} records without an end marker"
            )
        if kind_byte[0] == KIND_END:
            _read_end_marker(src, count, final)
            return
        if final:
            raise InvalidFieldError(
                f"record at offset {src.offset - 1} follows the record marked final"
            )
        record, final = _read_record(src, kind_byte[0])
        count += 1
        if record is not None:
            yield record


def pack_stream(records: list[Record]) -> bytes:
    """A complete stream holding `records` (at least one)."""
    buf = io.BytesIO()
    writer = StreamWriter(buf)
    for record in records:
        writer.write_record(record)
    writer.close()
    return buf.getvalue()


def unpack_stream(data: bytes) -> list[Record]:
    """Every record of a complete in-memory stream, after all stream-level checks."""
    data = bytes(data)
    return list(iter_records(io.BytesIO(data), length=len(data)))
