"""Our range coder beside constriction's, on the same tables and the same symbols.

Ours comes from `bench.coder_bench`: one `encode_symbol` / `decode_symbol` call
per symbol on a precomputed cumulative table (table construction is not timed;
the codec pays it in the model step). constriction gets those very integer
tables as probabilities (frequency / total, float64) and re-quantizes them to its
own fixed point (`Categorical(perfect=False)`), so the size difference mixes both
coders and both quantizations; the integer-table ideal is the common yardstick.

constriction is timed three ways:
- `prebuilt`: one call per symbol with models built beforehand (one per table of
  the cycled pool), the like-for-like match of ours: coder work only;
- `per_symbol`: one call per symbol building its model from the probabilities,
  which is what a codec that learns each table only after the previous symbol
  pays with constriction;
- `vectorized`: one call per block of symbols with a table per symbol, the best
  case, open to the encoder and to batch rows only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from bench.coder_bench import POOL, draw_symbols, make_tables
from bench.coder_bench import run as run_ours
from bench.timing import median, timed

MODES = ("prebuilt", "per_symbol", "vectorized")


def _blocks(count: int) -> list[tuple[int, int]]:
    """Symbol ranges aligned with the table pool: symbol i uses table i % POOL."""
    return [(start, min(start + POOL, count)) for start in range(0, count, POOL)]


def _coders(count: int, seed: int) -> tuple[np.ndarray, dict[str, tuple[Callable, Callable]]]:
    """The symbols, and for each mode (encode(), decode(words)) closures."""
    import constriction

    probs, cum = make_tables(seed)
    tables = np.diff(cum, axis=1) / cum[:, -1:]
    symbols = np.array(draw_symbols(probs, count, seed), dtype=np.int32)
    symbol_list = symbols.tolist()
    categorical = constriction.stream.model.Categorical
    queue = constriction.stream.queue
    family = categorical(perfect=False)
    prebuilt = [categorical(row, perfect=False) for row in tables]
    blocks = _blocks(count)

    def loop(models: Callable[[int], Any]) -> tuple[Callable, Callable]:
        def encode() -> np.ndarray:
            encoder = queue.RangeEncoder()
            for i, symbol in enumerate(symbol_list):
                encoder.encode(symbol, models(i))
            return encoder.get_compressed()

        def decode(words: np.ndarray) -> list[int]:
            decoder = queue.RangeDecoder(words)
            return [decoder.decode(models(i)) for i in range(count)]

        return encode, decode

    def block_encode() -> np.ndarray:
        encoder = queue.RangeEncoder()
        for start, stop in blocks:
            encoder.encode(symbols[start:stop], family, tables[: stop - start])
        return encoder.get_compressed()

    def block_decode(words: np.ndarray) -> np.ndarray:
        decoder = queue.RangeDecoder(words)
        parts = [decoder.decode(family, tables[: stop - start]) for start, stop in blocks]
        return np.concatenate(parts)

    modes = {
        "prebuilt": loop(lambda i: prebuilt[i % POOL]),
        "per_symbol": loop(lambda i: categorical(tables[i % POOL], perfect=False)),
        "vectorized": (block_encode, block_decode),
    }
    return symbols, modes


def run_constriction(count: int, runs: int, seed: int) -> dict[str, Any]:
    symbols, modes = _coders(count, seed)
    result: dict[str, Any] = {"symbols": count, "runs": runs}
    for name, (encode, decode) in modes.items():
        enc_times, dec_times = [], []
        words = np.zeros(0, dtype=np.uint32)
        for _ in range(max(1, runs)):
            words, seconds = timed(encode)
            enc_times.append(seconds)
            decoded, seconds = timed(lambda d=decode, w=words: d(w))
            dec_times.append(seconds)
            if not np.array_equal(np.asarray(decoded), symbols):
                raise RuntimeError(f"constriction {name} round trip failed")
        result[name] = {
            "encode_symbols_per_s": count / median(enc_times),
            "decode_symbols_per_s": count / median(dec_times),
            "payload_bytes": int(words.nbytes),
        }
    return result


def compare_coders(count: int, runs: int, seed: int = 0) -> dict[str, Any]:
    """Both coders on `count` symbols; sizes against the integer-table ideal."""
    ours = run_ours(count, runs, seed)
    result: dict[str, Any] = {"ours": ours, "ideal_bytes": ours["ideal_bytes"], "notes": []}
    try:
        theirs = run_constriction(count, runs, seed)
    except ImportError:
        result["notes"].append("constriction is not installed: comparison skipped")
        return result
    ideal = ours["ideal_bytes"]
    theirs_bytes = theirs["prebuilt"]["payload_bytes"]
    theirs["overhead_pct"] = 100 * (theirs_bytes - ideal) / ideal
    result["constriction"] = theirs
    result["size_difference_bytes"] = ours["payload_bytes"] - theirs_bytes
    result["size_difference_pct"] = 100 * result["size_difference_bytes"] / theirs_bytes
    return result
