"""Deterministic integer range coder, fed one symbol at a time.

Why a hand-written coder: losslessness needs the encoder and decoder to cut
intervals identically on every machine, so the state is Python ints only, with
a fixed window and no floats anywhere.

The coded value. The payload is read as a binary fraction V = 0.b1 b2 b3 ...
(bytes most significant first, each byte's bits from high to low), extended by
infinitely many zero bits past its end. The encoder narrows the interval
[low, low + range) of the unit interval symbol by symbol; `finish()` picks the
number inside the final interval with the fewest significant bits, writes it,
and strips every trailing zero byte (the decoder supplies those zeros itself).

Padding bits. `padding_bits` is the number of low-order bits of the final
payload byte that follow the last significant bit of V: they carry no
information and are always zero. With a non-empty payload `finish()` returns
exactly the count of trailing zero bits of the last byte (which is never 0x00),
so 0..7; with an empty payload (V = 0) it is 0. The decoder checks those bits
are zero, which catches some corruption for free.

Window arithmetic. `low` keeps the 56 bits of the interval's start that are
still moving (bytes above it are already in the output buffer), `range` its
width, kept in (2**48, 2**56]; when it falls to 2**48 or below the top byte of
`low` is emitted. A carry out of `low` propagates into the buffer (through any
run of 0xFF bytes). Each step splits `range` into `range // total` sized
units; the last symbol of the table also gets the remainder, so every value
of the decoder's window belongs to some symbol and decoding anything, garbage
included, stays well defined. The loss from that integer split is below
total / 2**48 of a symbol's range, i.e. under 2**-16 relative even at
`MAX_TOTAL`, and about 2**-28 at the codec's 2**20 totals.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable

import numpy as np

from igpt_codec.core.errors import FrequencyError
from igpt_codec.format.errors import PayloadError

PRECISION = 56
"""Bits in the coder's window; a multiple of 8 so the payload is plain bytes."""

MAX_TOTAL = 1 << 32
"""Largest frequency total a table may have; any total in 1..MAX_TOTAL works."""

_TOP = 1 << PRECISION
_BOTTOM = 1 << (PRECISION - 8)
_SHIFT = PRECISION - 8
_LOW_MASK = _BOTTOM - 1
_WINDOW_BYTES = PRECISION // 8


def _check_interval(low: int, freq: int, total: int) -> None:
    if not 0 <= low < low + freq <= total <= MAX_TOTAL:
        raise FrequencyError(
            f"invalid symbol interval: low={low} freq={freq} total={total} "
            f"(need 0 <= low, freq >= 1, low + freq <= total <= {MAX_TOTAL})"
        )


def _check_table(cum: np.ndarray, symbol: int | None = None) -> int:
    """Cheap O(1) checks on a cumulative table; returns its total.

    Monotonicity is the caller's contract (`igpt_codec.core.freq.cumulative` guarantees
    it); checking it here would cost O(V) per symbol.
    """
    if cum.ndim != 1 or cum.shape[0] < 2 or cum.dtype.kind not in "iu":
        raise FrequencyError(
            f"cumulative table must be 1-D integers with >= 2 entries, got {cum.dtype} {cum.shape}"
        )
    total = cum.item(-1)
    if cum.item(0) != 0 or not 1 <= total <= MAX_TOTAL:
        raise FrequencyError(
            f"cumulative table must start at 0 and end in 1..{MAX_TOTAL}, "
            f"got {cum.item(0)}..{total}"
        )
    if symbol is not None and not 0 <= symbol < cum.shape[0] - 1:
        raise FrequencyError(f"symbol {symbol} outside the table of {cum.shape[0] - 1}")
    return total


def _check_rows(cum: np.ndarray) -> list[int]:
    """_check_table for every row of a [R, V + 1] table at once; returns the totals."""
    if cum.ndim != 2 or cum.shape[1] < 2 or cum.dtype.kind not in "iu":
        raise FrequencyError(
            f"cumulative tables must be 2-D integers with >= 2 entries, got {cum.dtype} {cum.shape}"
        )
    totals = cum[:, -1]
    if cum[:, 0].any() or not ((totals >= 1) & (totals <= MAX_TOTAL)).all():
        raise FrequencyError(f"cumulative tables must start at 0 and end in 1..{MAX_TOTAL}")
    return totals.tolist()


class RangeEncoder:
    """Streaming encoder: call `encode`/`encode_symbol` per symbol, then `finish` once."""

    __slots__ = ("_finished", "_low", "_out", "_range")

    def __init__(self) -> None:
        self._low = 0
        self._range = _TOP
        self._out = bytearray()
        self._finished = False

    def encode(self, low: int, freq: int, total: int) -> None:
        """Code the symbol that owns [low, low + freq) of a table summing to `total`."""
        low, freq, total = operator.index(low), operator.index(freq), operator.index(total)
        _check_interval(low, freq, total)
        self._encode(low, low + freq, total)

    def encode_symbol(self, cum: np.ndarray, symbol: int) -> None:
        """Code `symbol` under a cumulative table (`igpt_codec.core.freq.cumulative` output)."""
        symbol = operator.index(symbol)
        total = _check_table(cum, symbol)
        low = cum.item(symbol)
        high = cum.item(symbol + 1)
        if low >= high:
            raise FrequencyError(f"symbol {symbol} has zero frequency")
        self._encode(low, high, total)

    def encode_intervals(self, lows: list[int], highs: list[int], totals: list[int]) -> None:
        """Code one symbol per interval [low, high) of tables summing to total, e.g. what
        RangeDecoder.decode_rows returned (a decoder's shadow encoder)."""
        for low, high, total in zip(lows, highs, totals, strict=True):
            if not 0 <= low < high <= total <= MAX_TOTAL:
                _check_interval(low, high - low, total)
            self._encode(low, high, total)

    def _encode(self, low: int, high: int, total: int) -> None:
        # Hot path: arguments are already validated Python ints.
        if self._finished:
            raise RuntimeError("encoder already finished")
        rng = self._range
        unit = rng // total
        x = self._low + unit * low
        if high < total:
            rng = unit * (high - low)
        else:
            rng -= unit * low
        if x >= _TOP:
            x -= _TOP
            self._carry()
        if rng <= _BOTTOM:
            out = self._out
            while rng <= _BOTTOM:
                out.append(x >> _SHIFT)
                x = (x & _LOW_MASK) << 8
                rng <<= 8
        self._low = x
        self._range = rng

    def _carry(self) -> None:
        out = self._out
        i = len(out) - 1
        while i >= 0 and out[i] == 0xFF:
            out[i] = 0
            i -= 1
        if i < 0:  # the interval never leaves [0, 1), so this is a bug, not bad input
            raise AssertionError("range coder carry ran past the start of the output")
        out[i] += 1

    def finish(self) -> tuple[bytes, int]:
        """Flush and return (payload, padding_bits); see the module docstring for both."""
        if self._finished:
            raise RuntimeError("encoder already finished")
        self._finished = True
        low, end = self._low, self._low + self._range
        # The multiple of the largest power of two inside [low, end): fewest significant bits.
        # range > 2**48 guarantees a hit by shift 48, so at most 9 tries.
        for shift in range(PRECISION, -1, -1):
            value = ((low + (1 << shift) - 1) >> shift) << shift
            if value < end:
                break
        if value >= _TOP:
            value -= _TOP
            self._carry()
        out = self._out
        out += value.to_bytes(_WINDOW_BYTES, "big")
        end_index = len(out)
        while end_index and out[end_index - 1] == 0:
            end_index -= 1
        del out[end_index:]
        if not out:
            return b"", 0
        last = out[-1]
        return bytes(out), (last & -last).bit_length() - 1


class RangeDecoder:
    """Mirror of `RangeEncoder`; needs only the payload and its padding bit count.

    It never runs out of input: past the payload it reads zero bits, as the
    encoder's flush assumes. Asking for more symbols than were coded therefore
    returns symbols (meaningless ones); the container's token CRC is what
    notices.
    """

    __slots__ = ("_code", "_data", "_pos", "_range")

    def __init__(self, payload: bytes, padding_bits: int = 0) -> None:
        data = bytes(payload)
        padding_bits = operator.index(padding_bits)
        if not 0 <= padding_bits <= 7:
            raise PayloadError(f"padding bits must be 0..7, got {padding_bits}")
        if not data and padding_bits:
            raise PayloadError(f"empty payload cannot have {padding_bits} padding bits")
        if data and data[-1] & ((1 << padding_bits) - 1):
            raise PayloadError(f"the {padding_bits} padding bits of the last byte are not zero")
        self._data = data
        self._pos = _WINDOW_BYTES
        self._code = int.from_bytes(data[:_WINDOW_BYTES].ljust(_WINDOW_BYTES, b"\0"), "big")
        self._range = _TOP

    def decode_target(self, total: int) -> int:
        """The cumulative count the next symbol's interval must contain, in 0..total-1."""
        total = operator.index(total)
        if not 1 <= total <= MAX_TOTAL:
            raise FrequencyError(f"total must be 1..{MAX_TOTAL}, got {total}")
        target = self._code // (self._range // total)
        return target if target < total else total - 1

    def decode(self, low: int, freq: int, total: int) -> None:
        """Consume the symbol owning [low, low + freq), which must contain `decode_target`."""
        low, freq, total = operator.index(low), operator.index(freq), operator.index(total)
        _check_interval(low, freq, total)
        target = self.decode_target(total)
        if not low <= target < low + freq:
            raise ValueError(f"interval [{low}, {low + freq}) does not hold the target {target}")
        self._consume(low, low + freq, total)

    def decode_symbol(self, cum: np.ndarray) -> int:
        """Decode one symbol under a cumulative table (`igpt_codec.core.freq.cumulative` output)."""
        return self._decode_in(cum, _check_table(cum))[0]

    def decode_rows(self, cum: np.ndarray) -> tuple[list[int], list[int], list[int], list[int]]:
        """One symbol under each row of cum [R, V + 1] in turn (decode_symbol per row, the
        table checked once); returns (symbols, lows, highs, totals)."""
        totals = _check_rows(cum)
        symbols, lows, highs = [], [], []
        for row, total in zip(cum, totals, strict=True):
            symbol, low, high = self._decode_in(row, total)
            symbols.append(symbol)
            lows.append(low)
            highs.append(high)
        return symbols, lows, highs, totals

    def decode_rows_into(self, cum: np.ndarray, shadow: RangeEncoder) -> list[int]:
        """decode_rows, each symbol's interval coded into `shadow` as it is decoded (what
        `shadow.encode_intervals(*decode_rows(cum)[1:])` does); returns the symbols.

        Why: the full-resolution decoder re-encodes every symbol it decodes (its payload
        must be the encoder's canonical output) a few windows at a time, a million times
        for a photo; one loop with both coders' arithmetic inline, their state in locals,
        costs about half of the two calls and their lists. Same steps as _consume and
        RangeEncoder._encode."""
        return self._decode_into(cum, _check_rows(cum), shadow)

    def decode_symbol_into(self, cum: np.ndarray, shadow: RangeEncoder) -> int:
        """decode_symbol, its interval coded into `shadow` (decode_rows_into for one table,
        checked as decode_symbol checks it: a thumbnail's batch-1 steps, where the checks
        of a [1, V + 1] table would cost more than the coding)."""
        return self._decode_into((cum,), (_check_table(cum),), shadow)[0]

    def _decode_into(
        self, cum: Iterable[np.ndarray], totals: Iterable[int], shadow: RangeEncoder
    ) -> list[int]:
        """decode_rows_into's loop over checked tables and their totals."""
        if shadow._finished:
            raise RuntimeError("encoder already finished")
        code, rng, data, pos = self._code, self._range, self._data, self._pos
        size = len(data)
        low_e, rng_e, out = shadow._low, shadow._range, shadow._out
        symbols = []
        for row, total in zip(cum, totals, strict=True):
            unit = rng // total
            target = code // unit
            if target >= total:
                target = total - 1
            symbol = int(row.searchsorted(target, "right")) - 1
            low, high = row.item(symbol), row.item(symbol + 1)
            if not 0 <= low < high <= total:  # what encode_intervals checks
                _check_interval(low, high - low, total)
            symbols.append(symbol)
            # The decoder (_consume).
            code -= unit * low
            rng = unit * (high - low) if high < total else rng - unit * low
            # The shadow encoder (RangeEncoder._encode).
            unit_e = rng_e // total
            x = low_e + unit_e * low
            rng_e = unit_e * (high - low) if high < total else rng_e - unit_e * low
            if x >= _TOP:
                x -= _TOP
                shadow._carry()
            while rng_e <= _BOTTOM:
                out.append(x >> _SHIFT)
                x = (x & _LOW_MASK) << 8
                rng_e <<= 8
            low_e = x
            while rng <= _BOTTOM:
                code = (code << 8) | (data[pos] if pos < size else 0)
                pos += 1
                rng <<= 8
        self._code, self._range, self._pos = code, rng, pos
        shadow._low, shadow._range = low_e, rng_e
        return symbols

    def _decode_in(self, cum: np.ndarray, total: int) -> tuple[int, int, int]:
        """(symbol, low, high) under a checked table of the given total, consumed."""
        target = self._code // (self._range // total)
        if target >= total:
            target = total - 1
        symbol = int(cum.searchsorted(target, "right")) - 1
        low, high = cum.item(symbol), cum.item(symbol + 1)
        self._consume(low, high, total)
        return symbol, low, high

    def _consume(self, low: int, high: int, total: int) -> None:
        rng = self._range
        unit = rng // total
        code = self._code - unit * low
        if high < total:
            rng = unit * (high - low)
        else:
            rng -= unit * low
        if rng <= _BOTTOM:
            data, pos = self._data, self._pos
            size = len(data)
            while rng <= _BOTTOM:
                code = (code << 8) | (data[pos] if pos < size else 0)
                pos += 1
                rng <<= 8
            self._pos = pos
        self._code = code
        self._range = rng
