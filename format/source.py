"""Exact, bounded, front-to-back reads from a binary file object.

The reader must work on pipes, so it only ever calls `.read(n)`: no seek, no
tell, no peek. Lengths that come from the stream are checked against their
limit (and against what remains, when the caller knows the stream's length)
before anything is read, and long reads go in chunks, so a forged length on a
short pipe costs at most one chunk of memory, never the forged amount.
"""

from __future__ import annotations

import zlib
from typing import BinaryIO

from format.errors import LengthOutOfRangeError, TruncatedError

CHUNK = 1 << 16


class ByteSource:
    """A read cursor that keeps a CRC-32 of everything it has returned."""

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
        """CRC-32 of every byte consumed so far."""
        return self._crc

    def check_length(self, n: int, limit: int, what: str) -> None:
        """Refuse a length read from the stream before anything is read or allocated."""
        if n > limit:
            raise LengthOutOfRangeError(f"{what} length {n} exceeds the limit {limit}")
        if self._remaining is not None and n > self._remaining:
            raise LengthOutOfRangeError(
                f"{what} length {n} exceeds the {self._remaining} bytes left in the stream "
                f"(at offset {self._offset})"
            )

    def read_upto(self, n: int) -> bytes:
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
        self._crc = zlib.crc32(data, self._crc)
        return data

    def read(self, n: int, what: str) -> bytes:
        """Exactly n bytes, or TruncatedError naming the field that was cut."""
        start = self._offset
        data = self.read_upto(n)
        if len(data) < n:
            raise TruncatedError(
                f"truncated stream: {what} needs {n} bytes at offset {start}, {len(data)} remain"
            )
        return data
