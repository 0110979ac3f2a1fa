"""Range coder throughput and size on realistic 512-symbol tables.

Usage: python -m bench.coder_bench [--symbols 100000] [--runs 5] [--json PATH]

The tables are quantized (igpt_codec.core.freq) softmaxes of Gaussian logits whose
scale varies per table, so entropies range from about 1 to 8 bits, roughly what
an image model produces. A pool of distinct tables is cycled to keep memory
small; the coder does the same work either way. Timings exclude table
construction, which the codec pays in the model step anyway.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from igpt_codec.core.coder import RangeDecoder, RangeEncoder
from igpt_codec.core.freq import FREQ_BITS, cumulative, quantize_probs

POOL = 2048
VOCAB = 512


def make_tables(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(float32 probabilities, cumulative tables) for POOL peaked distributions."""
    rng = np.random.default_rng(seed)
    sigma = rng.uniform(1.5, 9.0, size=(POOL, 1))
    logits = (rng.standard_normal((POOL, VOCAB)) * sigma).astype(np.float32)
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs = (e / e.sum(axis=1, keepdims=True)).astype(np.float32)
    return probs, cumulative(quantize_probs(probs, FREQ_BITS))


def draw_symbols(probs: np.ndarray, count: int, seed: int) -> list[int]:
    """Symbols sampled from the float distributions (not the quantized ones, which would
    flatter the quantizer), as real data would be."""
    rng = np.random.default_rng(seed + 1)
    cdf = np.cumsum(probs.astype(np.float64), axis=1)
    cdf /= cdf[:, -1:]
    rows = np.arange(count) % POOL
    u = rng.random(count)
    return [
        min(int(np.searchsorted(cdf[r], x, side="right")), VOCAB - 1)
        for r, x in zip(rows, u, strict=True)
    ]


def run(count: int, runs: int, seed: int) -> dict[str, object]:
    probs, cum = make_tables(seed)
    rows = list(cum)
    tables = [rows[i % POOL] for i in range(count)]
    symbols = draw_symbols(probs, count, seed)

    encode_times, decode_times = [], []
    payload, padding = b"", 0
    for _ in range(runs):
        start = time.perf_counter()
        enc = RangeEncoder()
        for table, symbol in zip(tables, symbols, strict=True):
            enc.encode_symbol(table, symbol)
        payload, padding = enc.finish()
        encode_times.append(time.perf_counter() - start)

        start = time.perf_counter()
        dec = RangeDecoder(payload, padding)
        decoded = [dec.decode_symbol(table) for table in tables]
        decode_times.append(time.perf_counter() - start)
        if decoded != symbols:
            raise SystemExit("round trip failed")

    ideal_bits = 0.0
    float_bits = 0.0
    for i, symbol in enumerate(symbols):
        row = cum[i % POOL]
        ideal_bits -= math.log2((int(row[symbol + 1]) - int(row[symbol])) / int(row[-1]))
        p = probs[i % POOL].astype(np.float64)
        float_bits -= math.log2(p[symbol] / p.sum())
    ideal = ideal_bits / 8
    return {
        "symbols": count,
        "runs": runs,
        "vocab": VOCAB,
        "freq_bits": FREQ_BITS,
        "encode_symbols_per_s": count / statistics.median(encode_times),
        "decode_symbols_per_s": count / statistics.median(decode_times),
        "payload_bytes": len(payload),
        "padding_bits": padding,
        "ideal_bytes": ideal,
        "coder_overhead_pct": 100 * (len(payload) - ideal) / ideal,
        "float_ideal_bytes": float_bits / 8,
        "quantization_overhead_pct": 100 * (ideal_bits - float_bits) / float_bits,
        "bits_per_symbol": 8 * len(payload) / count,
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "machine": platform.machine(),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="write the result here as JSON")
    args = parser.parse_args(argv)
    result = run(args.symbols, args.runs, args.seed)
    print(
        f"{result['symbols']} symbols, median of {result['runs']} runs: "
        f"encode {result['encode_symbols_per_s']:,.0f} sym/s, "
        f"decode {result['decode_symbols_per_s']:,.0f} sym/s"
    )
    print(
        f"payload {result['payload_bytes']} B vs ideal {result['ideal_bytes']:.1f} B "
        f"(+{result['coder_overhead_pct']:.4f}%), {result['bits_per_symbol']:.3f} bits/symbol; "
        f"quantization cost over float -log2 p: {result['quantization_overhead_pct']:.4f}%"
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
