"""Full-resolution codings side by side: plain exact tables (coding 0) against adaptive
context mixing (coding 2) on the same palette images, bytes and seconds, runs interleaved
so both meet the same machine.

    python -m bench.fullres_codings --photos bsds500/val/3096.jpg --threads 2 --repeat 2 \\
        --out docs/bench-results/fullres_codings.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.fullres import SHARED_TRAIN, load_photo, palette_tokens
from igpt_codec.format.container import pack_stream, unpack_stream
from igpt_codec.format.records import CODING_ADAPTIVE, CODING_EXACT
from igpt_codec.pipelines.fullres import FullImage, decode_full, encode_full, grid_of, make_header
from igpt_codec.runtime.bundle import Bundle, load_bundle
from igpt_codec.runtime.exact_runner import ExactTokenModel

CODINGS = {"exact": CODING_EXACT, "adaptive": CODING_ADAPTIVE}


def photo_tokens(path: Path, bundle: Bundle, resize: tuple[int, int] | None) -> np.ndarray:
    rgb = load_photo(path, resize=resize).rgb
    return palette_tokens(np.asarray(rgb, dtype=np.uint8), bundle.palette)


def code_once(
    model: ExactTokenModel, bundle: Bundle, tokens: np.ndarray, coding: int, workers: int
) -> dict[str, Any]:
    """One encode and one decode; the stream bytes include every header."""
    image = FullImage(tokens, "RGB")
    header = make_header(image, bundle.fingerprint, grid_of(bundle.n_positions), coding)
    start = time.perf_counter()
    record, ideal = encode_full(model, image, header, workers=workers)
    stream = pack_stream([record])
    encode_s = time.perf_counter() - start
    start = time.perf_counter()
    (stored,) = unpack_stream(stream)
    decoded = decode_full(model, stored, 0, workers=workers)
    decode_s = time.perf_counter() - start
    if not np.array_equal(decoded.tokens, tokens):
        raise RuntimeError("the round trip changed the palette image")
    return {"bytes": len(stream), "ideal_bits": ideal, "encode_s": encode_s, "decode_s": decode_s}


def compare(
    bundle: Bundle, paths: list[Path], workers: int, repeat: int, resize: tuple[int, int] | None
) -> dict[str, Any]:
    model = ExactTokenModel(bundle, threads=1)
    rows = []
    for path in paths:
        tokens = photo_tokens(path, bundle, resize)
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in CODINGS}
        for _ in range(repeat):
            for name, coding in CODINGS.items():
                runs[name].append(code_once(model, bundle, tokens, coding, workers))
        row: dict[str, Any] = {"photo": str(path.relative_to(SHARED_TRAIN))}
        row["width"], row["height"] = int(tokens.shape[1]), int(tokens.shape[0])
        for name, done in runs.items():
            row[name] = {
                "bytes": done[0]["bytes"],
                "bits_per_pixel": 8 * done[0]["bytes"] / tokens.size,
                "median_encode_s": statistics.median(r["encode_s"] for r in done),
                "median_decode_s": statistics.median(r["decode_s"] for r in done),
            }
        row["bytes_ratio"] = row["adaptive"]["bytes"] / row["exact"]["bytes"]
        row["decode_time_ratio"] = (
            row["adaptive"]["median_decode_s"] / row["exact"]["median_decode_s"]
        )
        row["encode_time_ratio"] = (
            row["adaptive"]["median_encode_s"] / row["exact"]["median_encode_s"]
        )
        print(
            f"{row['photo']}: {row['width']}x{row['height']} bytes x{row['bytes_ratio']:.3f}, "
            f"decode time x{row['decode_time_ratio']:.3f}, encode x{row['encode_time_ratio']:.3f}",
            flush=True,
        )
        rows.append(row)
    total = {name: sum(row[name]["bytes"] for row in rows) for name in CODINGS}
    return {
        "model": bundle.fingerprint.hex(),
        "workers": workers,
        "repeat": repeat,
        "resize": resize,
        "rows": rows,
        "bytes_ratio_in_total": total["adaptive"] / total["exact"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.fullres_codings", description=__doc__)
    parser.add_argument("--photos", nargs="+", required=True, help="under shared/data/train")
    parser.add_argument("--model", type=Path, help="bundle (default: the shipped one)")
    parser.add_argument("--threads", type=int, default=2, help="worker threads")
    parser.add_argument("--repeat", type=int, default=1, help="interleaved runs per coding")
    parser.add_argument("--resize", help="code each photo resized to WxH (e.g. 768x512)")
    parser.add_argument("--out", type=Path, default=Path("bench_out/fullres_codings.json"))
    args = parser.parse_args()
    resize = tuple(int(v) for v in args.resize.split("x")) if args.resize else None
    bundle = load_bundle(args.model)
    paths = [SHARED_TRAIN / name for name in args.photos]
    result = compare(bundle, paths, args.threads, args.repeat, resize)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({"bytes_ratio_in_total": result["bytes_ratio_in_total"]}))


if __name__ == "__main__":
    main()
