"""Exact, bounded, front-to-back reads from a binary file object.

The reader must work on pipes, so it only ever calls `.read(n)`: no seek, no
tell, no peek. Lengths that come from the stream are checked against their
limit (and against what remains, when the caller knows the stream's length)
before anything is read, and long reads go in chunks, so a forged length on a
short pipe costs at most one chunk of memory, never the forged amount. Varints
are read a byte at a time and never past the bytes their field's limit needs.
"""

from __future__ import annotations

import zlib
from typing import BinaryIO

from igpt_codec.format.errors import FormatError, LengthOutOfRangeError, TruncatedError
from igpt_codec.format.varint import varint_size

CHUNK = 1 << 16


class ByteSource:
    """A read cursor that keeps a CRC-32 of what it has returned (the record CRC chain)."""

    __slots__ = ("_crc", "_file", "_offset", "_remaining")

    def __init__(self, fileobj: BinaryIO, length: int | None = None) -> None:
        self._file = fileobj
        self._remaining = length
        self._offset = 0
        self._crc = 0

    @property
    def offset(self) -> int:
        """Bytes consumed so far: for error messages."""
        return self._offset

    @property
    def crc(self) -> int:
        """CRC-32 of every byte consumed so far, except those read with `hashed=False`."""
        return self._crc

    def check_length(self, n: int, limit: int, what: str) -> None:
        """Refuse a length read from the stream before anything is read or allocated."""
        if n > limit:
            raise LengthOutOfRangeError(f"{what} length {n} exceeds the limit {limit}")
        if self._remaining is not None and n > self._remaining:
            raise LengthOutOfRangeError(
                f"{what} length {n} exceeds the {self._remaining} bytes left in the stream "
                f"(at offset {self._offset}): the stream is truncated or the length corrupt"
            )

    def read_upto(self, n: int, *, hashed: bool = True) -> bytes:
        """Up to n bytes; fewer only at the end of the stream."""
        parts: list[bytes] = []
        got = 0
        while got < n:
            chunk = self._file.read(min(CHUNK, n - got))
            if not chunk:
                break
            if not isinstance(chunk, bytes | bytearray | memoryview):
                raise TypeError("the stream must be opened in binary mode")
            parts.append(bytes(chunk))
            got += len(chunk)
        data = b"".join(parts)
        self._offset += len(data)
        if self._remaining is not None:
            self._remaining -= len(data)
        if hashed:
            self._crc = zlib.crc32(data, self._crc)
        return data

    def read(self, n: int, what: str, *, hashed: bool = True) -> bytes:
        """Exactly n bytes, or TruncatedError naming the field that was cut."""
        start = self._offset
        data = self.read_upto(n, hashed=hashed)
        if len(data) < n:
            raise TruncatedError(
                f"truncated stream: {what} needs {n} bytes at offset {start}, {len(data)} remain"
            )
        return data

    def read_varint(
        self, limit: int, what: str, *, too_long: type[FormatError]
    ) -> tuple[int, bool]:
        """A varint of a field holding 0..limit: (value, whether it is minimally encoded).

        Reads at most `varint_size(limit)` bytes: one more would be needed only by
        a value over the limit, so that is `too_long`. The value itself is not
        compared with `limit` here; minimality is left to the caller, which may
        check the record CRC first.
        """
        start = self._offset
        size = varint_size(limit)
        value = 0
        for i in range(size):
            byte = self.read_upto(1)
            if not byte:
                raise TruncatedError(f"truncated stream: {what} at offset {start} is cut off")
            value |= (byte[0] & 0x7F) << (7 * i)
            if not byte[0] & 0x80:
                return value, i == 0 or byte[0] != 0
        raise too_long(
            f"{what} at offset {start} runs past the {size} bytes its limit {limit} needs"
        )
