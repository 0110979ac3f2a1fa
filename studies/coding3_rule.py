"""Whether the encoder's rule for coding 3 keeps it where it pays: each image coded with
codings 2 and 3 side by side, with the early judgment (what `compress --full` does) and
without it (both coded to the end), default model.

Why: pipelines/fullres keeps coding 3 only when it saves 1/64 (EXTRA_KEEP) and lets each
chain drop it after its first band of EXTRA_DECIDE_BITS; this checks that the early
judgment never drops coding 3 where the rule at the end would keep it (docs/synthetic.md,
"Coding 3 in the format") and what it saves in encode CPU.

    python -m studies.coding3_rule --photos 4 --out docs/bench-results/coding3_rule.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.fullres import heldout_paths, load_photo
from bench.synthetic import synthetic_images
from igpt_codec.core.palette import pixels_to_tokens
from igpt_codec.format.records import CODING_ADAPTIVE
from igpt_codec.pipelines.fullres import encode_full, grid_of, make_header
from igpt_codec.pipelines.stream import FULL_WRITER_CODINGS
from igpt_codec.pipelines.types import FullImage
from igpt_codec.runtime.bundle import load_bundle
from igpt_codec.runtime.exact_runner import ExactTokenModel


def measure(photos: int) -> list[dict[str, Any]]:
    bundle = load_bundle(None)
    model = ExactTokenModel(bundle, threads=1)
    items = [(name, rgb) for name, rgb in synthetic_images()]
    paths = heldout_paths(limit=12)[:: max(1, 12 // photos)][:photos] if photos else []
    items += [(p.name, np.asarray(load_photo(p).rgb, dtype=np.uint8)) for p in paths]
    rows = []
    for name, rgb in items:
        rgb = np.asarray(rgb, dtype=np.uint8)[..., :3]
        tokens = pixels_to_tokens(rgb, bundle.palette).reshape(rgb.shape[:2])
        image = FullImage(tokens, "RGB")
        header = make_header(
            image, bundle.fingerprint, grid_of(bundle.n_positions), CODING_ADAPTIVE
        )
        row: dict[str, Any] = {"name": name, "size": [image.width, image.height]}
        for early in (True, False):
            sizes: dict[int, int | None] = {}
            start = time.process_time()
            record, _ = encode_full(
                model,
                image,
                header,
                codings=FULL_WRITER_CODINGS,
                sizes=sizes,
                early_judgment=early,
            )
            row["early" if early else "end"] = {
                "coding": record.header.coding,
                "payloads": {str(k): v for k, v in sizes.items()},
                "cpu_s": round(time.process_time() - start, 2),
            }
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=4, help="held-out photos (of 12)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    rows = measure(args.photos)
    if args.out:
        args.out.write_text(json.dumps({"model": "default", "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
