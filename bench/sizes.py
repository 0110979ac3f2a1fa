"""Issue 10's size table: file bytes and bits per token per photo at every `--size`.

Each photo is coded as a one-image file (file header, one record, end marker) at
`--size` 8, 16, 24, 28 and 32 with the bundle under test, through the pipeline's
encoder and the container writer (the bytes `cli.py compress --size N` writes; the
first file is checked against `igpt_codec.api.compress_to`). Reported per size: total
bytes, bits per token (8 x file bytes / N²), mean bytes per image; per photo, whether
bytes grow with the size (a smaller size must never cost more bytes: every adjacent
pair that does is a violation); and the ratios of bits/token at 24 and at 16 to 32
(issue 10's goals: <= 1.25 and <= 1.6). brotli -q 11 of the same tokens (best byte
layout per size) gives the reference ratios.

    python -m bench.sizes --limit 20 --json sizes.json
"""

from __future__ import annotations

import argparse
import io
import itertools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.classical import PACKINGS
from igpt_codec import api
from igpt_codec.core.images import LoadedImage
from igpt_codec.format.container import pack_stream
from igpt_codec.pipelines import stream as pipeline
from igpt_codec.runtime.bundle import Bundle, load_bundle

SIZES = (8, 16, 24, 28, 32)
RATIO_GOALS = {"24": 1.25, "16": 1.6}
Log = Callable[[str], None]


def _brotli() -> Callable[[bytes], bytes] | None:
    try:
        import brotli
    except ImportError:
        return None
    return lambda data: brotli.compress(data, quality=11)


def measure_sizes(
    names: list[str],
    images: list[LoadedImage],
    bundle: Bundle,
    sizes: tuple[int, ...] = SIZES,
    threads: int = 1,
    log: Log | None = None,
) -> dict[str, Any]:
    """The table for `images` (already loaded) at every size in `sizes`."""
    brotli = _brotli()
    reference = max(sizes)
    per_size: dict[str, Any] = {}
    files: dict[int, list[int]] = {}
    brotli_bytes: dict[int, dict[str, list[int]]] = {}
    notes: list[str] = []
    for size in sizes:
        tokens = api.tokenize(images, bundle, size)
        encoded = list(pipeline.encode(tokens, bundle, threads=threads))
        files[size] = [len(pack_stream([e.record])) for e in encoded]
        if size == sizes[0]:
            check = io.BytesIO()
            api.compress_to(check, [images[0]], model=bundle, size=size, threads=threads)
            if len(check.getvalue()) != files[size][0]:
                notes.append("the container writer and api.compress_to disagree on file size")
        if brotli is not None:
            brotli_bytes[size] = {
                name: [len(brotli(pack(t.tokens.astype("int64")))) for t in tokens]
                for name, pack in PACKINGS.items()
            }
        n_tokens = size * size * len(images)
        total = sum(files[size])
        per_size[str(size)] = {
            "tokens_per_image": size * size,
            "total_bytes": total,
            "mean_bytes_per_image": total / len(images),
            "bits_per_token": 8 * total / n_tokens,
            "ideal_bits_per_token": sum(e.ideal_bits for e in encoded) / n_tokens,
        }
        if brotli is not None:
            totals = {name: sum(v) for name, v in brotli_bytes[size].items()}
            best = min(totals, key=totals.__getitem__)
            per_size[str(size)]["brotli_bits_per_token"] = 8 * totals[best] / n_tokens
            per_size[str(size)]["brotli_packing"] = best
        if log is not None:
            log(f"  size {size:2d}: {per_size[str(size)]['bits_per_token']:.3f} bits/token")
    rows, violations, photos_violating = [], 0, 0
    ordered = sorted(sizes)
    for i, name in enumerate(names):
        row_bytes = {str(s): files[s][i] for s in ordered}
        bad = [f"{a}>{b}" for a, b in itertools.pairwise(ordered) if files[a][i] > files[b][i]]
        violations += len(bad)
        photos_violating += bool(bad)
        rows.append(
            {
                "name": name,
                "bytes": row_bytes,
                "bits_per_token": {str(s): 8 * files[s][i] / (s * s) for s in ordered},
                "violations": bad,
            }
        )
    ratios: dict[str, Any] = {}
    ref_bpt = per_size[str(reference)]["bits_per_token"]
    for size in ordered:
        if size == reference:
            continue
        entry = {"ours": per_size[str(size)]["bits_per_token"] / ref_bpt}
        if "brotli_bits_per_token" in per_size[str(size)]:
            entry["brotli"] = (
                per_size[str(size)]["brotli_bits_per_token"]
                / per_size[str(reference)]["brotli_bits_per_token"]
            )
        goal = RATIO_GOALS.get(str(size))
        if goal is not None and reference == 32:
            entry["goal"] = goal
            entry["goal_met"] = entry["ours"] <= goal
        ratios[str(size)] = entry
    if brotli is None:
        notes.append("brotli reference skipped: the brotli package is not installed")
    return {
        "images": len(images),
        "sizes": list(ordered),
        "reference_size": reference,
        "model": {"path": str(bundle.path), "fingerprint": bundle.fingerprint.hex()},
        "position_layout": bundle.position_layout,
        "per_size": per_size,
        "ratios_to_reference": ratios,
        "monotone": {
            "adjacent_pairs_checked": len(images) * (len(ordered) - 1),
            "violations": violations,
            "photos_with_a_violation": photos_violating,
        },
        "per_image": rows,
        "notes": notes,
    }


def main(argv: list[str] | None = None) -> int:
    from bench.data import label, select_images
    from igpt_codec.core.images import load_image

    parser = argparse.ArgumentParser(prog="python -m bench.sizes", description=__doc__)
    parser.add_argument("--images", type=Path, default=None)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    paths = select_images(args.images, args.limit)
    bundle = load_bundle(args.model)
    result = measure_sizes(
        [label(p) for p in paths],
        [load_image(p) for p in paths],
        bundle,
        log=lambda m: print(m, file=sys.stderr),
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "per_image"}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
