"""Coding 3 on whole held-out photos (issue 28: photos must not lose): file bytes of the
record the encoder keeps (the smaller of codings 2 and 3, coded side by side in one pass)
against coding 2 alone, and what coding 3's side costs the encoder.

For each photo (bench/fullres.heldout_paths(limit=N), whole, as studies/match_model.py):
one encode_full with codings (2, 3), which reports both codings' payload bytes; the CPU
seconds of the whole encode and of coding 3's levels alone (timed inside the match stage,
per thread); and each chain's ideal bits of both codings after every band (whether a
chain could tell early that coding 3 will lose: it cannot, docs/synthetic.md). The kept
record is decoded back and compared token for token unless --no-decode.

    nice -n 10 python -m bench.synthetic_photos --out docs/bench-results/coding3_photos.json
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.fullres import heldout_paths, load_photo, palette_tokens
from igpt_codec import api
from igpt_codec.core import mixers
from igpt_codec.format.container import pack_stream
from igpt_codec.format.records import CODING_ADAPTIVE, CODING_MATCH
from igpt_codec.pipelines import fullres
from igpt_codec.pipelines.stream import FULL_WRITER_CODINGS
from igpt_codec.pipelines.types import FullImage
from igpt_codec.runtime.bundle import load_bundle
from igpt_codec.runtime.exact_runner import ExactTokenModel


class _Timed:
    """CPU seconds (per thread) spent in the match stage's tables() and update()."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.lock = threading.Lock()
        self.real_tables = mixers.MatchStage.tables
        self.real_update = mixers.MatchStage.update

    def install(self) -> None:
        timed = self

        def tables(stage, *args, **kwargs):
            start = time.thread_time()
            try:
                return timed.real_tables(stage, *args, **kwargs)
            finally:
                timed.add(time.thread_time() - start)

        def update(stage, *args, **kwargs):
            start = time.thread_time()
            try:
                return timed.real_update(stage, *args, **kwargs)
            finally:
                timed.add(time.thread_time() - start)

        mixers.MatchStage.tables = tables  # type: ignore[method-assign]
        mixers.MatchStage.update = update  # type: ignore[method-assign]

    def add(self, seconds: float) -> None:
        with self.lock:
            self.seconds += seconds

    def remove(self) -> None:
        mixers.MatchStage.tables = self.real_tables  # type: ignore[method-assign]
        mixers.MatchStage.update = self.real_update  # type: ignore[method-assign]


def code_photo(path: Path, bundle, model, workers: int, decode: bool) -> dict[str, Any]:
    rgb = np.asarray(load_photo(path).rgb, dtype=np.uint8)
    tokens = palette_tokens(rgb, bundle.palette).astype(np.uint16)
    image = FullImage(tokens, "RGB")
    header = fullres.make_header(image, bundle.fingerprint, 32, CODING_ADAPTIVE)
    # Each chain's bits of both codings so far after every band (threads code whole chains
    # one after another; a chain starts at the band whose top is row 0).
    chains: list[list[tuple[float, float]]] = []
    current: dict[int, list[tuple[float, float]]] = {}
    real_band = fullres._band_intervals

    def band_intervals(*args, **kwargs):
        symbols, intervals = real_band(*args, **kwargs)
        band = args[3]
        if band.top == 0:
            current[threading.get_ident()] = []
            chains.append(current[threading.get_ident()])
        chain = current[threading.get_ident()]
        bits = {c: float(-np.log2(w / t).sum()) for c, (_, w, t) in intervals.items()}
        two, three = chain[-1] if chain else (0.0, 0.0)
        chain.append((two + bits[CODING_ADAPTIVE], three + bits.get(CODING_MATCH, 0.0)))
        return symbols, intervals

    timed = _Timed()
    timed.install()
    fullres._band_intervals = band_intervals
    sizes: dict[int, int | None] = {}
    try:
        start, cpu = time.perf_counter(), time.process_time()
        record, _ = fullres.encode_full(
            model,
            image,
            header,
            workers=workers,
            codings=FULL_WRITER_CODINGS,
            sizes=sizes,
            early_judgment=False,  # both codings' sizes and bits to the end
        )
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    finally:
        fullres._band_intervals = real_band
        timed.remove()
    stream = pack_stream([record])
    if decode and not np.array_equal(api.decompress(stream, bundle)[0].tokens, tokens):
        raise RuntimeError(f"{path.name}: the round trip changed tokens")
    two, three = sizes.get(CODING_ADAPTIVE), sizes.get(CODING_MATCH)
    kept = len(stream)
    coding2_file = kept - sizes[record.header.coding] + two  # same framing, other payload
    return {
        "name": path.name,
        "width": int(tokens.shape[1]),
        "height": int(tokens.shape[0]),
        "coding": record.header.coding,
        "payload_coding2": two,
        "payload_coding3": three,
        "file_bytes": kept,
        "file_bytes_coding2_only": coding2_file,
        "ratio_to_coding2": kept / coding2_file,
        "coding3_over_coding2": None if three is None else three / two,
        "encode_wall_s": wall,
        "encode_cpu_s": cpu,
        "match_cpu_s": timed.seconds,
        "match_share_of_cpu": timed.seconds / cpu,
        "chain_bits_by_band": chains,
    }


def run(photos: int, workers: int, decode: bool) -> dict[str, Any]:
    bundle = load_bundle(None)
    model = ExactTokenModel(bundle, threads=1)
    rows = []
    for path in heldout_paths(limit=photos):
        row = code_photo(path, bundle, model, workers, decode)
        rows.append(row)
        print(
            f"{row['name']:12} coding {row['coding']} file {row['file_bytes']} "
            f"coding2-only {row['file_bytes_coding2_only']} "
            f"ratio {row['ratio_to_coding2']:.4f} c3/c2 {row['coding3_over_coding2']} "
            f"cpu {row['encode_cpu_s']:.1f}s match {row['match_cpu_s']:.1f}s",
            flush=True,
        )
    total = sum(r["file_bytes"] for r in rows)
    total2 = sum(r["file_bytes_coding2_only"] for r in rows)
    return {
        "model": bundle.fingerprint.hex(),
        "workers": workers,
        "rows": rows,
        "total_ratio_to_coding2": total / total2,
        "worst_ratio_to_coding2": max(r["ratio_to_coding2"] for r in rows),
        "match_share_of_cpu": sum(r["match_cpu_s"] for r in rows)
        / sum(r["encode_cpu_s"] for r in rows),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--photos", type=int, default=12, help="held-out photos (default 12)")
    parser.add_argument("--threads", type=int, default=2, help="worker threads (default 2)")
    parser.add_argument("--no-decode", action="store_true", help="skip the round-trip check")
    parser.add_argument("--out", type=Path, help="JSON result file")
    args = parser.parse_args(argv)
    result = run(args.photos, args.threads, not args.no_decode)
    print(
        f"total {result['total_ratio_to_coding2']:.5f} of coding 2 alone, worst "
        f"{result['worst_ratio_to_coding2']:.5f}; coding 3's levels "
        f"{result['match_share_of_cpu']:.1%} of the encoder's CPU seconds"
    )
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
