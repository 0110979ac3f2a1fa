"""Bits per token for every format on every image, and the set's totals.

All figures are whole files (headers included) divided by the token count, so
8 * bytes / tokens; for 32 x 32 thumbnails a token is a pixel. Set figures are
total bits over total tokens, which equals the mean of the per-image figures
when every image has the same size.

General-purpose compressors are scored with one byte layout for the whole set
(the one with the smallest total), as a real file format would fix it; the
totals of every layout are kept too.
"""

from __future__ import annotations

from typing import Any

from bench.classical import PACKINGS, Competitors
from bench.ours import OursResult

RAW_BITS = 9
"""A token is one of 512 colours: 9 bits, no header."""

LABELS = {
    "ours_alone": "ours, one image per stream",
    "ours_record": "ours, one more record in a shared stream",
    "ours_payload": "ours, range-coder payload only",
    "model_ideal": "model ideal (float: sum of -log2 p; exact: the table ideal)",
    "table_ideal": "ideal under the coder's integer frequency tables",
    "png_rgb": "PNG (RGB, optimize)",
    "png_indexed": "PNG (indexed when <= 256 colours, optimize)",
    "png_tokens16": "PNG (token values as 16-bit grey, optimize)",
    "webp_ll": "WebP lossless (method 6, quality 100)",
    "jxl_ll": "JPEG XL lossless (effort 9)",
    "brotli": "brotli -q 11 of the tokens",
    "zstd": "zstd -19 of the tokens",
    "lzma": "lzma -9e (.lzma) of the tokens",
    "raw9": "raw, 9 bits per token",
}


def _ours_bytes(row: dict[str, Any]) -> dict[str, float]:
    return {
        "ours_alone": row["alone_stream_bytes"],
        "ours_record": row["record_bytes"],
        "ours_payload": row["payload_bytes"],
        "model_ideal": row["ideal_bits"] / 8,
        "table_ideal": row["table_ideal_bits"] / 8,
    }


def best_packings(sizes: list[dict[str, int]], competitors: Competitors) -> dict[str, Any]:
    """For each compressor: every layout's total bytes and the layout with the smallest."""
    result = {}
    for name in competitors.compressors:
        totals = {p: sum(s[f"{name}/{p}"] for s in sizes) for p in PACKINGS}
        result[name] = {"packing": min(totals, key=totals.__getitem__), "total_bytes": totals}
    return result


def summarize(
    ours: OursResult, sizes: list[dict[str, int]], competitors: Competitors
) -> dict[str, Any]:
    """The compression section of results.json."""
    packings = best_packings(sizes, competitors)
    rows = []
    for ours_row, classical in zip(ours.per_image, sizes, strict=True):
        tokens = ours_row["tokens"]
        chosen: dict[str, float] = _ours_bytes(ours_row)
        chosen.update({k: v for k, v in classical.items() if "/" not in k})
        for name, info in packings.items():
            chosen[name] = classical[f"{name}/{info['packing']}"]
        chosen["raw9"] = RAW_BITS * tokens / 8
        rows.append(
            {
                "name": ours_row["name"],
                "tokens": tokens,
                "bits_per_token": {k: 8 * v / tokens for k, v in chosen.items()},
                "bytes": {**chosen, **{k: v for k, v in classical.items() if "/" in k}},
                "ours": ours_row,
            }
        )
    total_tokens = sum(r["tokens"] for r in rows)
    keys = list(rows[0]["bits_per_token"]) if rows else []
    formats = {}
    for key in keys:
        total = sum(r["bytes"][key] for r in rows)
        formats[key] = {
            "label": LABELS.get(key, key),
            "total_bytes": total,
            "bits_per_token": 8 * total / total_tokens,
        }
        if key in packings:
            formats[key]["packing"] = packings[key]["packing"]
    return {
        "profile": ours.shared_stream.get("profile"),
        "images": len(rows),
        "tokens": total_tokens,
        "formats": formats,
        "packings": packings,
        "ours": ours_overheads(formats, len(rows), total_tokens),
        "shared_stream": ours.shared_stream,
        "per_image": rows,
        "notes": [*ours.notes, *competitors.notes],
    }


def _pct(part: float, whole: float) -> float:
    return 100 * part / whole if whole else 0.0


def ours_overheads(formats: dict[str, Any], images: int, tokens: int) -> dict[str, float]:
    """Where our bits go: model ideal, table quantization, range coder, container framing."""
    bpt = {k: f["bits_per_token"] for k, f in formats.items()}
    ideal, table, payload = bpt["model_ideal"], bpt["table_ideal"], bpt["ours_payload"]
    alone, record = bpt["ours_alone"], bpt["ours_record"]
    return {
        "ideal_bits_per_token": ideal,
        "table_ideal_bits_per_token": table,
        "payload_bits_per_token": payload,
        "alone_bits_per_token": alone,
        "record_bits_per_token": record,
        "quantization_bits_per_token": table - ideal,
        "quantization_pct": _pct(table - ideal, ideal),
        "coder_overhead_bits_per_token": payload - table,
        "coder_overhead_pct": _pct(payload - table, table),
        "coder_and_quantization_pct": _pct(payload - ideal, ideal),
        "container_bytes_per_image_alone": (alone - payload) * tokens / 8 / images,
        "container_bytes_per_image_in_stream": (record - payload) * tokens / 8 / images,
        "total_overhead_alone_pct": _pct(alone - ideal, ideal),
        "total_overhead_in_stream_pct": _pct(record - ideal, ideal),
    }
