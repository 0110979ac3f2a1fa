"""Unsigned LEB128 varints with exactly one encoding per value (format/SPEC.md, "Varints").

7 value bits per byte, least significant group first; the high bit of a byte
says another byte follows. An encoding must be minimal (a byte other than the
first is never the final 0x00) and no longer than the largest value its field
allows needs, so a changed byte can never yield the same value, and a reader
never reads more than a few bytes to find a length.
"""

from __future__ import annotations

from igpt_codec.format.errors import InvalidFieldError


def varint_size(limit: int) -> int:
    """The most bytes a field holding 0..limit may take: what `limit` itself needs."""
    return max(1, -(-limit.bit_length() // 7))


def encode_varint(value: int) -> bytes:
    """The one encoding of a non-negative integer."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"a varint holds a non-negative integer, got {value!r}")
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def decode_varint(data: bytes, pos: int, limit: int, what: str) -> tuple[int, int]:
    """The value at data[pos:] and the position after it; for fields inside a header body.

    Every defect is an InvalidFieldError: the data ends inside the varint, the
    varint runs past `varint_size(limit)` bytes, is not minimal, or exceeds `limit`.
    """
    size = varint_size(limit)
    value = 0
    for i in range(size):
        if pos + i >= len(data):
            raise InvalidFieldError(f"record header ends inside its {what}")
        byte = data[pos + i]
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            if i and not byte:
                raise InvalidFieldError(f"{what} is not minimally encoded")
            if value > limit:
                raise InvalidFieldError(f"{what} {value} exceeds its limit {limit}")
            return value, pos + i + 1
    raise InvalidFieldError(f"{what} runs past the {size} bytes its limit {limit} needs")
