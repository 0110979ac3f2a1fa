"""Full resolution on images that are not photos (issue 28): the synthetic set
(bench/synthetic.py) beside a few held-out photos, ours against PNG, WebP lossless and
JPEG XL lossless on the very same palette image, and decode seconds.

For each image: the model's record (kinds 3 + 4) and what the encoder keeps (the
smaller of that and the classical record, kinds 5 + 6), every size a complete
one-image stream or file; `ours / best` against the best of PNG, WebP lossless and
JPEG XL lossless, and `guarantee` = ours / (1.01 x min(PNG, WebP lossless) + 64), which
must stay at most 1. Every stream is decoded back and compared token for token.

    python -m bench.synthetic_bench --photos 3 --out docs/bench-results/synthetic.json
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.classical import find_competitors
from bench.fullres import heldout_paths, load_photo, palette_tokens
from bench.synthetic import font_notes, synthetic_images
from igpt_codec import api
from igpt_codec.core.palette import grid_to_rgb
from igpt_codec.format.classical import ClassicalImageRecord
from igpt_codec.format.container import pack_stream
from igpt_codec.format.records import CODING_ADAPTIVE, CODING_MATCH
from igpt_codec.pipelines.classical import framed_size, keep_smaller
from igpt_codec.pipelines.fullres import encode_full, grid_of, make_header
from igpt_codec.pipelines.stream import FULL_WRITER_CODINGS
from igpt_codec.pipelines.types import EncodedImage, FullImage
from igpt_codec.runtime.bundle import Bundle, load_bundle
from igpt_codec.runtime.exact_runner import ExactTokenModel

PNG_KINDS = ("png_rgb", "png_indexed")


def code_one(
    name: str, group: str, tokens: np.ndarray, bundle: Bundle, model: ExactTokenModel, workers: int
) -> dict[str, Any]:
    """One palette image: model record, kept record, classical files, decode time."""
    image = FullImage(tokens.astype(np.uint16), "RGB")
    header = make_header(image, bundle.fingerprint, grid_of(bundle.n_positions), CODING_ADAPTIVE)
    start, cpu = time.perf_counter(), time.process_time()
    payloads: dict[int, int | None] = {}
    record, ideal = encode_full(
        model, image, header, workers=workers, codings=FULL_WRITER_CODINGS, sizes=payloads
    )
    model_seconds, model_cpu = time.perf_counter() - start, time.process_time() - cpu
    start = time.perf_counter()
    kept = keep_smaller(EncodedImage(record, ideal), image, bundle.fingerprint, bundle.palette)
    choose_seconds = time.perf_counter() - start
    stream = pack_stream([kept.record])
    start, cpu = time.perf_counter(), time.process_time()
    decoded = api.decompress(stream, bundle, threads=workers)[0]
    decode_seconds, decode_cpu = time.perf_counter() - start, time.process_time() - cpu
    # The model record coded with coding 2 alone: the same framing, coding 2's payload.
    framing = framed_size(record) - payloads[record.header.coding]
    coding2_bytes = framing + payloads[CODING_ADAPTIVE]
    coding3 = payloads.get(CODING_MATCH)
    if not np.array_equal(decoded.tokens, tokens):
        raise RuntimeError(f"{name}: the round trip changed tokens")
    sizes = classical_files(tokens, bundle.palette)
    png = min(sizes[k] for k in PNG_KINDS)
    webp = sizes.get("webp_ll")
    best = min(v for k, v in sizes.items() if k in (*PNG_KINDS, "webp_ll", "jxl_ll"))
    floor = min(png, webp) if webp is not None else png
    pixels = tokens.size
    kind = kept.record.header.codec_name if isinstance(kept.record, ClassicalImageRecord) else None
    return {
        "name": name,
        "set": group,
        "width": int(tokens.shape[1]),
        "height": int(tokens.shape[0]),
        "colours": int(np.unique(tokens).size),
        "model_bytes": framed_size(record),
        "model_coding": record.header.coding,
        "coding2_bytes": coding2_bytes,
        "coding3_bytes": None if coding3 is None else framing + coding3,
        "ours_bytes": len(stream),
        "kept": kind or "model",
        "png": png,
        "png_tokens16": sizes["png_tokens16"],
        "webp_ll": webp,
        "jxl_ll": sizes.get("jxl_ll"),
        "ours_bpp": 8 * len(stream) / pixels,
        "ours_over_best": len(stream) / best,
        "model_over_best": framed_size(record) / best,
        "guarantee": len(stream) / (1.01 * floor + 64),
        "encode_seconds": model_seconds + choose_seconds,
        "encode_model_cpu_seconds": model_cpu,
        "classical_seconds": choose_seconds,
        "decode_seconds": decode_seconds,
        "decode_cpu_seconds": decode_cpu,
    }


def classical_files(tokens: np.ndarray, palette: np.ndarray) -> dict[str, int]:
    """Bytes of each classical codec's file (bench/classical.py, decoded back exactly)."""
    flat = tokens.reshape(-1).astype(np.int64)
    rgb = grid_to_rgb(tokens, palette)
    sizes = {}
    for codec, make in find_competitors().image_codecs.items():
        data, exact = make(flat, rgb)
        if not exact:
            raise RuntimeError(f"{codec} did not decode to the same pixels")
        sizes[codec] = len(data)
    return sizes


def run(photos: int, crop: int | None, workers: int) -> dict[str, Any]:
    bundle = load_bundle(None)
    model = ExactTokenModel(bundle, threads=1)
    rows = []
    for name, rgb in synthetic_images():
        tokens = palette_tokens(rgb, bundle.palette)
        rows.append(code_one(name, "synthetic", tokens, bundle, model, workers))
        print(_line(rows[-1]), flush=True)
    for path in heldout_paths(limit=photos):
        box = (crop, crop) if crop else None
        rgb = np.asarray(load_photo(path, crop=box).rgb, dtype=np.uint8)
        tokens = palette_tokens(rgb, bundle.palette)
        rows.append(code_one(path.name, "photo", tokens, bundle, model, workers))
        print(_line(rows[-1]), flush=True)
    return {
        "model": bundle.fingerprint.hex(),
        "workers": workers,
        "cpus": os.cpu_count(),
        "fonts": font_notes(),
        "photo_crop": crop,
        "rows": rows,
        "worst_guarantee": max(row["guarantee"] for row in rows),
    }


def _line(row: dict[str, Any]) -> str:
    return (
        f"{row['set']:9} {row['name']:16} {row['width']}x{row['height']} "
        f"ours {row['ours_bytes']} ({row['kept']}) model {row['model_bytes']} "
        f"png {row['png']} webp {row['webp_ll']} jxl {row['jxl_ll']} "
        f"coding {row['model_coding']} (coding 2 alone {row['coding2_bytes']}) "
        f"ours/best {row['ours_over_best']:.3f} guarantee {row['guarantee']:.3f} "
        f"decode {row['decode_seconds']:.2f}s"
    )


def _n(value: int | None) -> str:
    return "—" if value is None else f"{value:,}"


def table(result: dict[str, Any]) -> str:
    """The per-image table in Markdown (docs/synthetic.md)."""
    lines = [
        "| image | set | size | kept | ours bytes | model bytes (coding) | coding 2 alone "
        "| PNG | WebP LL | JXL LL | ours ÷ JXL | ours ÷ best | model ÷ best | decode s |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        jxl = r["jxl_ll"]
        over_jxl = "—" if not jxl else f"{r['ours_bytes'] / jxl:.2f}"
        lines.append(
            f"| {r['name']} | {r['set']} | {r['width']} x {r['height']} | {r['kept']} "
            f"| {r['ours_bytes']:,} | {r['model_bytes']:,} ({r.get('model_coding', 2)}) "
            f"| {_n(r.get('coding2_bytes'))} | {r['png']:,} | {_n(r['webp_ll'])} "
            f"| {_n(jxl)} | {over_jxl} | {r['ours_over_best']:.2f} "
            f"| {r['model_over_best']:.2f} | {r['decode_seconds']:.2f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--photos", type=int, default=3, help="held-out photos (default 3)")
    parser.add_argument("--crop", type=int, help="code each photo's top-left N x N only")
    parser.add_argument("--threads", type=int, default=2, help="worker threads (default 2)")
    parser.add_argument("--out", type=Path, help="JSON result file")
    args = parser.parse_args(argv)
    result = run(args.photos, args.crop, args.threads)
    print(table(result))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        temporary = args.out.with_suffix(".tmp")
        temporary.write_text(json.dumps(result, indent=1) + "\n")
        temporary.replace(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
