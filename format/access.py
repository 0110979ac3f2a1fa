"""Random access: one record frame, checked on its own, given what an index stores about it.

A stream is written and read front to back, and each record CRC is chained
(`crc_i = crc32(frame_i, crc_{i-1})`, format/SPEC.md), so a record alone cannot be
checked: its CRC depends on every byte before it. An index that stores `crc_{i-1}`
beside the record's offset and length restores that: the record's bytes and the
previous CRC are enough to verify it exactly as a front-to-back reader would. The
chain still binds the record to its place: moved to another offset, another shard or
another stream, the stored `prev_crc` no longer matches what the CRC covers.

This module reuses the container's own frame parser (`igpt_codec.format.container._read_record`)
so the random-access reader refuses exactly what the sequential reader refuses. It
adds no format rule; the rule it follows is the section "Random access (index)" at the
end of format/SPEC.md.
"""

from __future__ import annotations

import io
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

from igpt_codec.format.container import (
    MAGIC,
    MAX_FRAME,
    VERSION,
    _read_file_header,
    _read_record,
)
from igpt_codec.format.errors import InvalidFieldError, LengthOutOfRangeError, TruncatedError
from igpt_codec.format.records import FINGERPRINT_LEN, KIND_MASK, KIND_NAME, Record
from igpt_codec.format.source import ByteSource
from igpt_codec.format.varint import varint_size

CRC_LEN = 4
"""Bytes of the record CRC that ends every frame."""
MAX_RECORD_SPAN = 1 + varint_size(MAX_FRAME) + MAX_FRAME + CRC_LEN
"""The most bytes one record frame can take (head, length field, body, CRC): an index
entry's `length` beyond it names no record, and is refused before anything is read."""
MIN_RECORD_SPAN = 1 + CRC_LEN


def header_crc(fingerprint: bytes) -> int:
    """crc_0 of a stream: the CRC-32 of its 12-byte file header (magic, version, model).

    The first record's `prev_crc` must equal it, which an index can check without
    reading the shard.
    """
    if not isinstance(fingerprint, bytes) or len(fingerprint) != FINGERPRINT_LEN:
        raise InvalidFieldError(f"fingerprint must be {FINGERPRINT_LEN} bytes, got {fingerprint!r}")
    return zlib.crc32(MAGIC + bytes([VERSION]) + fingerprint)


class _ChainedSource(ByteSource):
    """A ByteSource over one frame whose running CRC starts at the previous record's CRC,
    so the container's frame parser checks the record CRC as if it had read the stream."""

    __slots__ = ()

    def __init__(self, data: bytes, prev_crc: int, offset: int) -> None:
        super().__init__(io.BytesIO(data), len(data))
        self._crc = prev_crc
        self._offset = offset


def parse_record_frame(
    data: bytes, *, fingerprint: bytes, prev_crc: int, offset: int = 0
) -> tuple[Record, bool]:
    """One image record from exactly its frame bytes (head byte through record CRC).

    `fingerprint` is the stream's model (from its file header, or the index), `prev_crc`
    the CRC of the record before it (`header_crc(fingerprint)` for the first record),
    `offset` where the frame starts in its stream (error messages only). Returns the
    record and whether it is the stream's FINAL record.

    The frame must be whole and nothing more: a non-final frame's length field must
    account for every byte given; a final frame has no length field and is the whole of
    `data`. Raises what the sequential reader raises (ChecksumError for a CRC mismatch,
    which is also what a wrong `prev_crc`, offset or shard gives; TruncatedError,
    LengthOutOfRangeError, InvalidFieldError, PayloadError), and InvalidFieldError for a
    frame that is not a kind-1 thumbnail record (a name record, any other kind).
    """
    data = bytes(data)
    if not isinstance(prev_crc, int) or not 0 <= prev_crc <= 0xFFFFFFFF:
        raise InvalidFieldError(f"prev_crc must be a u32, got {prev_crc!r}")
    if len(data) > MAX_RECORD_SPAN:
        raise LengthOutOfRangeError(
            f"record at offset {offset}: {len(data)} bytes exceed the largest frame "
            f"({MAX_RECORD_SPAN})"
        )
    if len(data) < MIN_RECORD_SPAN:
        raise TruncatedError(
            f"record at offset {offset}: {len(data)} bytes cannot hold a frame and its CRC"
        )
    header_crc(fingerprint)  # validates the fingerprint's type and length
    src = _ChainedSource(data, prev_crc, offset)
    head = src.read(1, "record head")[0]
    if head & KIND_MASK == KIND_NAME:
        raise InvalidFieldError(f"record at offset {offset} is a name record, not an image")
    record, final = _read_record(src, head, fingerprint)
    if src.offset - offset != len(data):
        raise LengthOutOfRangeError(
            f"record at offset {offset}: its frame is {src.offset - offset} bytes, "
            f"the index gives {len(data)}"
        )
    if not isinstance(record, Record):
        raise InvalidFieldError(
            f"record at offset {offset} is of kind {head & KIND_MASK}, not a thumbnail "
            "(random access reads kind-1 records)"
        )
    return record, final


@dataclass(frozen=True)
class RecordSpan:
    """Where one record of a stream lies, and the chain value needed to check it alone."""

    index: int
    """Position among the stream's records (every kind counts)."""
    offset: int
    """Byte offset of the record's head byte in the stream."""
    length: int
    """Bytes from the head byte through the record CRC."""
    prev_crc: int
    """crc_{i-1}: the CRC of the previous record, or of the file header for the first."""
    final: bool
    record: Record | None
    """The parsed thumbnail record; None for any other kind (name, skipped, ...)."""


def iter_record_spans(data: bytes) -> Iterator[RecordSpan]:
    """Every record of a complete in-memory stream with its offset, length and prev_crc.

    Walks the stream with the container's own reader, so every check of `iter_records`
    applies (a damaged stream raises its FormatError); used to index a shard just
    written, which also proves the shard reads back.
    """
    data = bytes(data)
    src = ByteSource(io.BytesIO(data), len(data))
    header = _read_file_header(src)
    index = 0
    while True:
        start, prev_crc = src.offset, src.crc
        head = src.read_upto(1)
        if not head:
            raise TruncatedError(
                f"truncated stream: ends after {index} records, none marked final"
                if index
                else "truncated stream: a file header and no record"
            )
        record, final = _read_record(src, head[0], header.fingerprint)
        yield RecordSpan(
            index=index,
            offset=start,
            length=src.offset - start,
            prev_crc=prev_crc,
            final=final,
            record=record if isinstance(record, Record) else None,
        )
        index += 1
        if final:  # the final record runs to the end of `data`
            return
