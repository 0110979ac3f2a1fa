"""Model bits per token of a bundle (the exact tables' own -log2 p, no container) on the
held-out splits at 32x32, beside a float bundle of the same weights.

    python -m bench.model_bits --float runs/ship3/float --json docs/bench-results/model_bits_v3.json
"""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

from bench.fullres import heldout_paths
from igpt_codec import api
from igpt_codec.runtime.bundle import load_bundle

SPLITS = ("standard", "unlike", "unlike_never_trained")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.model_bits", description=__doc__)
    parser.add_argument("--exact", type=Path, help="bundle (default: the shipped one)")
    parser.add_argument("--float", dest="float_model", type=Path, help="float bundle beside it")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    bundles = {"exact": load_bundle(args.exact)}
    if args.float_model:
        bundles["float"] = load_bundle(args.float_model)
    out = {"model": bundles["exact"].fingerprint.hex()}
    for split in SPLITS:
        paths = heldout_paths(split)
        for label, bundle in bundles.items():
            summary = api.compress_to(io.BytesIO(), paths, model=bundle, size=32, threads=1)
            out[f"{split}/{label}"] = {
                "images": summary.images,
                "model_bits_per_token": summary.ideal_bits_per_token,
            }
            print(split, label, summary.images, round(summary.ideal_bits_per_token, 4))
    if args.json:
        args.json.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
