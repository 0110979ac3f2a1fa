"""The stream: file header, framed records, end marker (layout in format/SPEC.md).

Written and read strictly front to back, so compress can write to a pipe and
decompress can read from one. A record is handed to the caller only after its
CRC has been checked; checks that need the whole stream (end marker, record
count, stream CRC, trailing bytes) run when the iterator is exhausted, so
callers must consume it to the end before trusting the stream as a whole.
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
    RECORD_ANCILLARY,
    Record,
    RecordHeader,
    check_padding,
)
from format.source import ByteSource

MAGIC = b"\x89IGP\r\n\x1a\n"
"""PNG's trick: a high-bit byte, the name, CR LF, DOS EOF, LF; text-mode copies break it."""
VERSION = 1
KNOWN_FILE_FLAGS = 0
MAX_HEADER_LEN = 0xFFFF

_FILE_HEADER = struct.Struct("<8sHH")
_FRAME_START = struct.Struct("<BBH")  # kind, record flags, header length
_FRAME_MID = struct.Struct("<BII")  # padding bits, token CRC, payload length
_U32 = struct.Struct("<I")
_END_BODY = struct.Struct("<I")  # record count; the stream CRC follows

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
    body = b"".join(
        (
            _FRAME_START.pack(kind, flags, len(header)),
            header,
            _FRAME_MID.pack(padding_bits, tok_crc, len(payload)),
            payload,
        )
    )
    return body + _U32.pack(zlib.crc32(body))


class StreamWriter:
    """Writes a stream record by record; `close()` adds the end marker.

    The file header goes out with the first record, so a writer that never got
    a record leaves nothing behind. A stream needs at least one record. Used as
    a context manager, the end marker is written only if the block succeeded:
    a failed compression leaves a stream that readers reject as truncated.
    The file object is not closed.
    """

    def __init__(self, fileobj: BinaryIO) -> None:
        self._file = fileobj
        self._crc = 0
        self._count = 0
        self._closed = False

    def _write(self, data: bytes) -> None:
        if self._count == 0:
            header = _FILE_HEADER.pack(MAGIC, VERSION, 0)
            self._file.write(header)
            self._crc = zlib.crc32(header)
        self._file.write(data)
        self._crc = zlib.crc32(data, self._crc)
        self._count += 1

    def write_record(self, record: Record) -> None:
        if self._closed:
            raise ValueError("stream writer is closed")
        if not isinstance(record, Record):
            raise TypeError(f"expected a Record, got {type(record).__name__}")
        head = record.header
        self._write(
            _frame(
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
        self._write(_frame(kind, flags, bytes(header), padding_bits, tok_crc, bytes(payload)))

    def close(self) -> None:
        """Write the end marker (once). Refuses a stream without records."""
        if self._closed:
            return
        if self._count == 0:
            raise ValueError("a stream needs at least one record")
        end = bytes([KIND_END]) + _END_BODY.pack(self._count)
        self._crc = zlib.crc32(end, self._crc)
        self._file.write(end + _U32.pack(self._crc))
        self._closed = True
        flush = getattr(self._file, "flush", None)
        if flush is not None:
            flush()

    def __enter__(self) -> StreamWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.close()


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
    _, version, flags = _FILE_HEADER.unpack(magic + src.read(4, "file header"))
    if version != VERSION:
        raise UnsupportedVersionError(
            f"format version {version} is not supported (this reader knows {VERSION})"
        )
    if flags & ~KNOWN_FILE_FLAGS:
        raise UnknownFlagsError(f"unknown file flags {flags:#06x}")
    return FileHeader(version, flags)


def read_file_header(fileobj: BinaryIO) -> FileHeader:
    """Read and validate only the 12-byte file header (e.g. for `info`)."""
    return _read_file_header(ByteSource(fileobj))


def _read_end_marker(src: ByteSource, count: int) -> None:
    (stored_count,) = _END_BODY.unpack(src.read(_END_BODY.size, "end marker"))
    expected_crc = src.crc
    (stored_crc,) = _U32.unpack(src.read(_U32.size, "end marker CRC"))
    if stored_crc != expected_crc:
        raise ChecksumError(
            f"stream CRC mismatch: end marker says {stored_crc:#010x}, "
            f"bytes give {expected_crc:#010x}"
        )
    if stored_count != count:
        raise InvalidFieldError(f"end marker counts {stored_count} records, stream has {count}")
    if count == 0:
        raise EmptyStreamError("stream has no records")
    extra = src.read_upto(1)
    if extra:
        raise TrailingDataError(f"trailing data after the end marker at offset {src.offset - 1}")


def _read_record(src: ByteSource, kind_byte: bytes) -> Record | None:
    """One framed record after its kind byte; None if it is skippable and unknown."""
    start = src.offset - 1
    head = src.read(_FRAME_START.size - 1, "record header")
    kind, flags, header_len = _FRAME_START.unpack(kind_byte + head)
    if flags & ~KNOWN_RECORD_FLAGS:
        raise UnknownFlagsError(f"record at offset {start}: unknown record flags {flags:#04x}")
    known = kind in KNOWN_KINDS
    if not known and not flags & RECORD_ANCILLARY:
        raise UnknownRecordKindError(
            f"record at offset {start}: unknown must-understand record kind {kind}"
        )
    src.check_length(header_len, MAX_HEADER_LEN, "record header")
    header = src.read(header_len, "record header")
    mid = src.read(_FRAME_MID.size, "record frame")
    padding_bits, tok_crc, payload_len = _FRAME_MID.unpack(mid)
    src.check_length(payload_len, MAX_PAYLOAD, "record payload")
    payload = src.read(payload_len, "record payload")
    (stored,) = _U32.unpack(src.read(_U32.size, "record CRC"))
    actual = zlib.crc32(payload, zlib.crc32(mid, zlib.crc32(header, zlib.crc32(kind_byte + head))))
    if stored != actual:
        raise ChecksumError(
            f"record at offset {start}: CRC mismatch (stored {stored:#010x}, "
            f"computed {actual:#010x})"
        )
    if not known:
        return None
    return Record(RecordHeader.from_bytes(kind, flags, header), payload, padding_bits, tok_crc)


def iter_records(fileobj: BinaryIO, *, length: int | None = None) -> Iterator[Record]:
    """Yield the records of a stream, front to back, using only `fileobj.read(n)`.

    `length`, when the caller knows the stream's size, lets length fields be
    checked against the bytes that remain. Unknown ancillary records are
    skipped. Every defect raises a FormatError subclass.
    """
    src = ByteSource(fileobj, length)
    _read_file_header(src)
    count = 0
    while True:
        kind_byte = src.read_upto(1)
        if not kind_byte:
            raise MissingEndMarkerError(
                f"truncated stream: ends after {count} records without an end marker"
            )
        if kind_byte[0] == KIND_END:
            _read_end_marker(src, count)
            return
        record = _read_record(src, kind_byte)
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
