"""igpt_codec.format.varint: one encoding per value, bounded reads (format/SPEC.md, "Varints")."""

from __future__ import annotations

import io

import pytest
from conftest import leb128
from hypothesis import given, settings
from hypothesis import strategies as st

from igpt_codec.format import InvalidFieldError, LengthOutOfRangeError, TruncatedError
from igpt_codec.format.container import MAX_FRAME
from igpt_codec.format.records import MAX_PAYLOAD
from igpt_codec.format.source import ByteSource
from igpt_codec.format.varint import decode_varint, encode_varint, varint_size

LIMITS = [0xFFFF, MAX_FRAME, MAX_PAYLOAD, 0xFFFE, 16384, 2**32 - 1, 0, 1, 127, 128]


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
    assert [varint_size(n) for n in (0, 127, 128, 0xFFFF, 16384)] == [1, 1, 2, 3, 3]
    assert (varint_size(MAX_FRAME), varint_size(2**32 - 1)) == (3, 5)
    assert encode_varint(0) == b"\x00" and encode_varint(2**14) == b"\x80\x80\x01"
    for bad in (-1, True, 1.0):
        with pytest.raises(ValueError):
            encode_varint(bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidFieldError, match="ends inside"):
        decode_varint(b"\x80", 0, 0xFFFF, "width")
    with pytest.raises(TruncatedError, match="cut off"):
        ByteSource(io.BytesIO(b"\x80")).read_varint(0xFFFF, "H", too_long=LengthOutOfRangeError)
