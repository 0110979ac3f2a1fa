"""What more chains cost in bits: the parallelism a full-resolution file offers N threads.

Why: a file's decode parallelism is its number of chains (format/SPEC.md, "Tiling"): the
groups at one position of every band share coding 2's adaptive state, so a chain is
decoded in order, and chains are independent. Writers choose the windows per segment
(`segment_windows`, a header field every reader reads), so an encoder could give an
8- or 16-core decoder 8 or 16 chains. Each chain then learns its contexts from fewer
cells. This study measures that price on held-out photos, coding 2 alone (the model's
tables do not depend on the layout, only the adaptive state does).

    python -m studies.chains --photos 6 --out docs/bench-results/chains.json
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.fullres import heldout_paths, load_photo
from igpt_codec.core.palette import pixels_to_tokens
from igpt_codec.format.records import CODING_ADAPTIVE
from igpt_codec.pipelines.fullres import encode_full, grid_of, make_header
from igpt_codec.pipelines.types import FullImage
from igpt_codec.runtime.bundle import DEFAULT_BUNDLE_DIR, load_bundle
from igpt_codec.runtime.exact_runner import ExactTokenModel


def chain_counts(columns: int) -> list[int]:
    """Chain counts 2, 4, 8, ... up to one chain per window column."""
    counts, n = [], 2
    while n < columns:
        counts.append(n)
        n *= 2
    return [*counts, columns]


def measure(photos: int, model_dir: Path) -> dict[str, Any]:
    bundle = load_bundle(model_dir)
    model = ExactTokenModel(bundle, threads=1)
    grid = grid_of(bundle.n_positions)
    rows = []
    for path in heldout_paths(limit=photos):
        rgb = np.asarray(load_photo(path).rgb, dtype=np.uint8)
        image = FullImage(pixels_to_tokens(rgb, bundle.palette).reshape(rgb.shape[:2]), "RGB")
        columns = math.ceil(image.width / grid)
        row: dict[str, Any] = {"photo": path.name, "size": [image.width, image.height]}
        for chains in chain_counts(columns):
            windows = math.ceil(columns / chains)
            header = make_header(
                image, bundle.fingerprint, grid, CODING_ADAPTIVE, segment_windows=windows
            )
            start = time.process_time()
            record, _ = encode_full(model, image, header, workers=1)
            payload = sum(len(s.payload) + len(s.band_checks) + 2 for s in record.segments)
            row[str(len(header.tiling.segments()))] = {
                "segment_windows": windows,
                "payload_bytes": payload,
                "cpu_s": round(time.process_time() - start, 2),
            }
        base = row["2"]["payload_bytes"]
        for value in row.values():
            if isinstance(value, dict):
                value["vs_2_chains"] = round(value["payload_bytes"] / base, 5)
        rows.append(row)
        print(json.dumps(row), flush=True)
    totals: dict[str, Any] = {}
    for key in rows[0]:
        if isinstance(rows[0][key], dict):
            got = [r[key]["payload_bytes"] for r in rows if key in r]
            if len(got) == len(rows):
                totals[key] = round(sum(got) / sum(r["2"]["payload_bytes"] for r in rows), 5)
    return {"model": bundle.fingerprint.hex(), "photos": rows, "total_vs_2_chains": totals}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=6)
    parser.add_argument("--model", type=Path, default=DEFAULT_BUNDLE_DIR)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    result = measure(args.photos, args.model)
    print(json.dumps(result["total_vs_2_chains"]))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
