"""Full-resolution file bytes of the same photos under several bundles, side by side.

The question it answers: does a model trained with native-scale views (or any other
candidate) code full-resolution palette images in fewer bytes than the shipped one, and
on which photos? Encode only (a round trip is `bench.fullres`'s job); one photo at a time
(one encoder thread unless --threads), every bundle on a photo before the next photo.

    python -m studies.fullres_models --models codec/models/default runs/native/bundle \\
        --limit 12 --extra bsds500/val/3096.jpg bsds500/val/143090.jpg \\
        --out docs/bench-results/fullres_models.json

Status: a one-off study, kept to rerun; nothing imports it.
Result: docs/bench-results/fullres_models.json and fullres_models_control.json;
the choice of model it informed is in docs/training.md and codec/models/README.md.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

import igpt_codec
from bench.fullres import SHARED_TRAIN, classical_sizes, heldout_paths, palette_tokens
from igpt_codec.core.images import load_image
from igpt_codec.runtime.bundle import load_bundle


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, nargs="+", required=True)
    parser.add_argument(
        "--limit", type=int, default=12, help="evenly spaced held-out photos (0: none)"
    )
    parser.add_argument("--extra", nargs="*", default=[], help="more photos under shared/")
    parser.add_argument("--out", type=Path, default=Path("bench_out/fullres_models.json"))
    parser.add_argument("--threads", type=int, default=1, help="encoder threads per photo")
    parser.add_argument(
        "--classical-from",
        type=Path,
        help="an earlier result (this script's or bench.fullres's) whose best classical sizes "
        "to reuse: the palette images depend only on the palette, so they are the same",
    )
    args = parser.parse_args()
    bundles = [load_bundle(path) for path in args.models]
    held = heldout_paths("standard", args.limit) if args.limit else []
    paths = held + [SHARED_TRAIN / name for name in args.extra]
    known = {}
    if args.classical_from:
        earlier = json.loads(args.classical_from.read_text())["rows"]
        whole = [row for row in earlier if not row.get("crop") and not row.get("resize")]
        known = {row["photo"]: row["best_classical_bytes"] for row in whole}
    rows = []
    for path in dict.fromkeys(paths):
        loaded = load_image(path)
        tokens = palette_tokens(np.asarray(loaded.rgb, dtype=np.uint8), bundles[0].palette)
        photo = str(path.relative_to(SHARED_TRAIN))
        if photo not in known:
            known[photo] = min(classical_sizes(tokens, bundles[0].palette).values())
        row = {
            "photo": photo,
            "pixels": int(tokens.size),
            "best_classical_bytes": known[photo],
            "bytes": {},
            "encode_s": {},
        }
        for bundle in bundles:
            start = time.perf_counter()
            data = igpt_codec.compress(loaded, model=bundle, full=True, threads=args.threads)
            row["encode_s"][bundle.fingerprint.hex()] = round(time.perf_counter() - start, 2)
            row["bytes"][bundle.fingerprint.hex()] = len(data)
        rows.append(row)
        print(json.dumps(row), flush=True)
    summary = {}
    best = sum(r["best_classical_bytes"] for r in rows)
    first = sum(r["bytes"][bundles[0].fingerprint.hex()] for r in rows)
    for bundle in bundles:
        key = bundle.fingerprint.hex()
        total = sum(r["bytes"][key] for r in rows)
        savings = [1 - r["bytes"][key] / r["best_classical_bytes"] for r in rows]
        summary[key] = {
            "bundle": str(bundle.path),
            "bits_per_pixel": 8 * total / sum(r["pixels"] for r in rows),
            "saving_vs_best_classical_in_total": 1 - total / best,
            "saving_vs_best_classical_min": min(savings),
            "photos_at_least_15pct_below_best": int(np.sum(np.array(savings) >= 0.15)),
            "bytes_vs_first_model": total / first,
        }
    result = {"photos": len(rows), "rows": rows, "summary": summary}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
