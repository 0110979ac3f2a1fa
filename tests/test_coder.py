"""core.coder: exact round trips under any table, size near the ideal, robust decoding."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from igpt_codec.core.coder import MAX_TOTAL, RangeDecoder, RangeEncoder
from igpt_codec.core.errors import FrequencyError
from igpt_codec.core.freq import cumulative, quantize_probs
from igpt_codec.format.errors import CodecError, PayloadError

TABLE_KINDS = (
    "random",
    "peaked",  # total 2**24, one symbol at 2**24 - 511, 511 symbols at 1
    "uniform",
    "many ones",  # 512 symbols, most at frequency 1
    "total one",
    "max total",
    "two symbols max total",
    "prime total",
    "softmax",
)


def make_table(kind: str, rng: np.random.Generator) -> np.ndarray:
    """A cumulative table of the given family; every symbol has frequency >= 1."""
    if kind == "random":
        freqs = rng.integers(1, rng.integers(2, 2**20), size=rng.integers(1, 513))
    elif kind == "peaked":
        freqs = np.ones(512, dtype=np.int64)
        freqs[rng.integers(512)] = 2**24 - 511
    elif kind == "uniform":
        freqs = np.full(rng.integers(1, 513), rng.integers(1, 2**16))
    elif kind == "many ones":
        freqs = np.ones(512, dtype=np.int64)
        heavy = rng.choice(512, size=rng.integers(1, 8), replace=False)
        freqs[heavy] = rng.integers(1, 2**20, size=heavy.size)
    elif kind == "total one":
        freqs = np.ones(1, dtype=np.int64)
    elif kind == "max total":
        freqs = np.ones(512, dtype=np.int64)
        freqs[rng.integers(512)] = MAX_TOTAL - 511
    elif kind == "two symbols max total":
        freqs = np.array([MAX_TOTAL - 1, 1])[:: rng.choice([1, -1])]
    elif kind == "prime total":
        freqs = np.ones(3, dtype=np.int64)
        freqs[0] = 1_000_003 - 2
    else:
        logits = rng.normal(scale=rng.uniform(0.5, 10), size=512)
        p = np.exp(logits - logits.max())
        freqs = quantize_probs((p / p.sum()).astype(np.float32))
    return cumulative(np.asarray(freqs, dtype=np.int64))


def draw_symbol(cum: np.ndarray, rng: np.random.Generator, by_weight: bool) -> int:
    """Either a symbol in proportion to its frequency or any symbol (rare ones included)."""
    if by_weight:
        return int(np.searchsorted(cum, rng.integers(cum[-1]), side="right")) - 1
    return int(rng.integers(len(cum) - 1))


def round_trip(tables: list[np.ndarray], symbols: list[int]) -> tuple[bytes, int]:
    enc = RangeEncoder()
    for cum, sym in zip(tables, symbols, strict=True):
        enc.encode_symbol(cum, sym)
    payload, padding = enc.finish()
    assert 0 <= padding <= 7
    if payload:
        last = payload[-1]
        assert last != 0 and padding == (last & -last).bit_length() - 1
    else:
        assert padding == 0
    dec = RangeDecoder(payload, padding)
    assert [dec.decode_symbol(cum) for cum in tables] == symbols
    return payload, padding


@settings(max_examples=1200, deadline=None)
@given(
    kind=st.sampled_from(TABLE_KINDS),
    seed=st.integers(0, 2**32 - 1),
    count=st.integers(0, 60),
    by_weight=st.booleans(),
)
def test_round_trip_under_one_table(kind: str, seed: int, count: int, by_weight: bool) -> None:
    rng = np.random.default_rng(seed)
    cum = make_table(kind, rng)
    symbols = [draw_symbol(cum, rng, by_weight) for _ in range(count)]
    round_trip([cum] * count, symbols)


@settings(max_examples=500, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), count=st.integers(1, 40), by_weight=st.booleans())
def test_streaming_round_trip_with_a_table_per_symbol(
    seed: int, count: int, by_weight: bool
) -> None:
    rng = np.random.default_rng(seed)
    tables = [make_table(str(rng.choice(TABLE_KINDS)), rng) for _ in range(count)]
    symbols = [draw_symbol(cum, rng, by_weight) for cum in tables]
    round_trip(tables, symbols)


@settings(max_examples=300, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    steps=st.integers(1, 12),
    rows=st.integers(1, 12),
    by_weight=st.booleans(),
)
def test_row_batches_code_as_symbol_by_symbol(
    seed: int, steps: int, rows: int, by_weight: bool
) -> None:
    """decode_rows / encode_intervals (a decoder step of many windows and its shadow
    encoder) give the same symbols and bytes as decode_symbol / encode_symbol per row."""
    rng = np.random.default_rng(seed)
    size = int(rng.integers(2, 513))
    batches = []
    for _ in range(steps):
        freqs = rng.integers(1, rng.integers(2, 2**22), size=(rows, size))
        batches.append(cumulative(freqs))
    symbols = [[draw_symbol(row, rng, by_weight) for row in cum] for cum in batches]
    enc = RangeEncoder()
    for cum, row_symbols in zip(batches, symbols, strict=True):
        for row, symbol in zip(cum, row_symbols, strict=True):
            enc.encode_symbol(row, symbol)
    payload, padding = enc.finish()
    dec, shadow = RangeDecoder(payload, padding), RangeEncoder()
    for cum, row_symbols in zip(batches, symbols, strict=True):
        got, lows, highs, totals = dec.decode_rows(cum)
        assert got == row_symbols
        assert totals == cum[:, -1].tolist()
        assert lows == [int(row[x]) for row, x in zip(cum, got, strict=True)]
        assert highs == [int(row[x + 1]) for row, x in zip(cum, got, strict=True)]
        shadow.encode_intervals(lows, highs, totals)
    assert shadow.finish() == (payload, padding)


@settings(max_examples=200, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    steps=st.integers(1, 12),
    rows=st.integers(1, 12),
    by_weight=st.booleans(),
    garbage=st.binary(max_size=40),
)
def test_decoding_into_a_shadow_matches_the_two_calls(
    seed: int, steps: int, rows: int, by_weight: bool, garbage: bytes
) -> None:
    """decode_rows_into (the two coders inline, one loop) leaves both coders as
    decode_rows then encode_intervals do: the same symbols, decoder state and shadow bytes,
    on a real payload (with or without bytes appended) and on garbage."""
    rng = np.random.default_rng(seed)
    size = int(rng.integers(2, 513))
    batches = [
        cumulative(rng.integers(1, rng.integers(2, 2**22), size=(rows, size))) for _ in range(steps)
    ]
    enc = RangeEncoder()
    for cum in batches:
        for row in cum:
            enc.encode_symbol(row, draw_symbol(row, rng, by_weight))
    payload = enc.finish()[0]
    for data in (payload, payload + garbage, garbage):
        two, fused = (RangeDecoder(data), RangeEncoder()), (RangeDecoder(data), RangeEncoder())
        single = RangeDecoder(data), RangeEncoder()  # decode_symbol_into, row by row
        for cum in batches:
            symbols, lows, highs, totals = two[0].decode_rows(cum)
            two[1].encode_intervals(lows, highs, totals)
            assert fused[0].decode_rows_into(cum, fused[1]) == symbols
            assert [single[0].decode_symbol_into(row, single[1]) for row in cum] == symbols
            states = [
                (d._code, d._range, d._pos, e._low, e._range, bytes(e._out))
                for d, e in (two, fused, single)
            ]
            assert states[0] == states[1] == states[2]
        assert two[1].finish() == fused[1].finish() == single[1].finish()


def test_decoding_into_a_shadow_refuses_bad_tables() -> None:
    good = cumulative(np.ones((2, 4), np.int64))
    for bad in (good[0], good.astype(np.float64), good + 1, good * (MAX_TOTAL // 2)):
        with pytest.raises(FrequencyError):
            RangeDecoder(b"\x12\x34").decode_rows_into(bad, RangeEncoder())
    row = good[0]  # one table: the checks of decode_symbol
    for bad in (good, row.astype(np.float64), row + 1, row * (MAX_TOTAL // 2)):
        with pytest.raises(FrequencyError):
            RangeDecoder(b"\x12\x34").decode_symbol_into(bad, RangeEncoder())
    # Not a cumulative table: the target 0 falls in symbol 1's interval [-1, 4), which
    # encode_intervals would refuse.
    negative = np.array([[0, -1, 4]], np.int64)
    with pytest.raises(FrequencyError):
        RangeDecoder(b"").decode_rows_into(negative, RangeEncoder())
    finished = RangeEncoder()
    finished.finish()
    with pytest.raises(RuntimeError):
        RangeDecoder(b"").decode_rows_into(good, finished)


def test_row_batches_refuse_bad_tables_and_intervals() -> None:
    dec = RangeDecoder(b"\x12\x34")
    good = cumulative(np.ones((2, 4), np.int64))
    for bad in (good[0], good.astype(np.float64), good + 1, good * (MAX_TOTAL // 2)):
        with pytest.raises(FrequencyError):
            dec.decode_rows(bad)
    enc = RangeEncoder()
    for lows, highs, totals in (([1], [1], [4]), ([0], [5], [4]), ([0], [1], [MAX_TOTAL + 1])):
        with pytest.raises(FrequencyError):
            enc.encode_intervals(lows, highs, totals)
    with pytest.raises(ValueError):
        enc.encode_intervals([0, 1], [1], [4])


@settings(max_examples=500, deadline=None)
@given(
    data=st.data(),
    freqs=st.lists(st.integers(1, 2**28), min_size=1, max_size=12)
    | st.integers(1, 2**20).map(lambda k: [MAX_TOTAL - k, k]),
)
def test_interval_api_round_trip(data: st.DataObject, freqs: list[int]) -> None:
    """encode/decode_target/decode agree with each other and with the table API."""
    symbols = data.draw(st.lists(st.integers(0, len(freqs) - 1), max_size=30))
    cum = cumulative(np.array(freqs, dtype=np.int64))
    lows, total = cum.tolist(), int(cum[-1])
    enc = RangeEncoder()
    for s in symbols:
        enc.encode(lows[s], freqs[s], total)
    payload, padding = enc.finish()
    assert (payload, padding) == round_trip([cum] * len(symbols), symbols)
    dec = RangeDecoder(payload, padding)
    for s in symbols:
        target = dec.decode_target(total)
        assert lows[s] <= target < lows[s + 1]
        dec.decode(lows[s], freqs[s], total)


def test_zero_symbols_and_total_one_cost_nothing() -> None:
    assert RangeEncoder().finish() == (b"", 0)
    cum = cumulative(np.ones(1, dtype=np.int64))
    payload, _ = round_trip([cum] * 100, [0] * 100)
    assert payload == b""


def test_flush_is_minimal() -> None:
    """One byte less decodes to other symbols: no shorter payload exists."""
    rng = np.random.default_rng(7)
    for _ in range(200):
        tables = [make_table("softmax", rng) for _ in range(int(rng.integers(1, 30)))]
        symbols = [draw_symbol(cum, rng, True) for cum in tables]
        payload, _ = round_trip(tables, symbols)
        if payload:
            dec = RangeDecoder(payload[:-1])
            assert [dec.decode_symbol(cum) for cum in tables] != symbols


def ideal_bits(tables: list[np.ndarray], symbols: list[int]) -> float:
    return sum(
        -math.log2((int(cum[s + 1]) - int(cum[s])) / int(cum[-1]))
        for cum, s in zip(tables, symbols, strict=True)
    )


@pytest.mark.parametrize("sigma", [2.0, 5.0, 12.0])
def test_size_is_within_a_tenth_of_a_percent_of_ideal(sigma: float) -> None:
    rng = np.random.default_rng(11)
    logits = rng.normal(scale=sigma, size=(12_000, 512))
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    tables = list(cumulative(quantize_probs((p / p.sum(axis=1, keepdims=True)).astype(np.float32))))
    symbols = [draw_symbol(cum, rng, True) for cum in tables]
    payload, _ = round_trip(tables, symbols)
    ideal = ideal_bits(tables, symbols) / 8
    excess = len(payload) - ideal
    print(
        f"\ncoder, {len(symbols)} symbols, sigma={sigma}: ideal {ideal:.1f} B, actual "
        f"{len(payload)} B, excess {excess:.2f} B = {excess / ideal:.5%}"
    )
    assert ideal - 1 <= len(payload) <= ideal * 1.001 + 4


def test_size_stays_near_ideal_at_max_total() -> None:
    """The worst precision case: totals at MAX_TOTAL, rare symbols coded often."""
    rng = np.random.default_rng(5)
    tables = [make_table("max total", rng) for _ in range(200)] * 50
    symbols = [draw_symbol(cum, rng, False) for cum in tables]
    payload, _ = round_trip(tables, symbols)
    ideal = ideal_bits(tables, symbols) / 8
    assert len(payload) <= ideal * 1.001 + 4


@settings(max_examples=200, deadline=None)
@given(
    garbage=st.binary(max_size=64),
    padding=st.integers(0, 7),
    seed=st.integers(0, 2**32 - 1),
)
def test_decoding_garbage_yields_symbols_or_codec_errors(
    garbage: bytes, padding: int, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    try:
        dec = RangeDecoder(garbage, padding)
    except CodecError:
        return
    for _ in range(200):  # also far past the payload's end
        cum = make_table(str(rng.choice(TABLE_KINDS)), rng)
        s = dec.decode_symbol(cum)
        assert 0 <= s < len(cum) - 1 and cum[s + 1] > cum[s]


def test_decoding_past_the_end_returns_symbols() -> None:
    rng = np.random.default_rng(3)
    cum = make_table("softmax", rng)
    symbols = [draw_symbol(cum, rng, True) for _ in range(50)]
    payload, padding = round_trip([cum] * 50, symbols)
    dec = RangeDecoder(payload, padding)
    decoded = [dec.decode_symbol(cum) for _ in range(5000)]
    assert decoded[:50] == symbols
    assert all(0 <= s < 512 for s in decoded)


def test_padding_rules_are_enforced() -> None:
    with pytest.raises(PayloadError):
        RangeDecoder(b"\x01", 1)  # padding bit set
    with pytest.raises(PayloadError):
        RangeDecoder(b"", 3)
    with pytest.raises(PayloadError):
        RangeDecoder(b"\x80", 8)
    RangeDecoder(b"\x80", 7)


def test_misuse_is_refused() -> None:
    cum = cumulative(np.array([3, 0, 5], dtype=np.int64))
    enc = RangeEncoder()
    for args in [(0, 0, 8), (5, 4, 8), (-1, 2, 8), (0, 1, 0), (0, 1, MAX_TOTAL + 1)]:
        with pytest.raises(FrequencyError):
            enc.encode(*args)
    with pytest.raises(TypeError):
        enc.encode(0.0, 1, 2)  # type: ignore[arg-type]
    for symbol in (1, 3, -1):  # zero frequency, past the end, negative
        with pytest.raises(FrequencyError):
            enc.encode_symbol(cum, symbol)
    for bad_table in (np.array([1, 4]), np.array([0.0, 4.0]), np.array([[0, 4]]), np.array([0])):
        with pytest.raises(FrequencyError):
            enc.encode_symbol(bad_table, 0)
    enc.encode(np.int64(3), np.int64(5), np.int64(8))  # numpy integers are fine
    enc.finish()
    with pytest.raises(RuntimeError):
        enc.encode(0, 1, 2)
    with pytest.raises(RuntimeError):
        enc.finish()
    dec = RangeDecoder(b"\x55")
    with pytest.raises(FrequencyError):
        dec.decode_target(0)
    target = dec.decode_target(8)
    with pytest.raises(ValueError, match="does not hold"):
        dec.decode(0 if target >= 4 else 4, 4, 8)
