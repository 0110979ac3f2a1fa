"""Write export/data/calibration.npz: palette tokens of real photos for the exact export.

The exact profile sets its activation grids from real photo tokens (random tokens
give flat predictions and the wrong ranges), and the exporter must run where
../shared is absent, so the tokens ship with the package (~260 KB). Two disjoint
sets of training-source photos (never the held-out ones): `calibration` sets the
grids, `check` measures what the integer model costs against the float one.

    python -m igpt_codec.export.make_calibration --data ../shared/data/train
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from igpt_codec.core.images import load_image
from igpt_codec.core.palette import image_to_tokens

CALIBRATION_FILE = Path(__file__).parent / "data" / "calibration.npz"
SIDE = 32


def training_sources(data: Path) -> list[Path]:
    """BSDS500 train/ and test/, Wikipedia photos 001-044: the held-out sources excluded."""
    bsds = sorted((data / "bsds500" / "train").glob("*.jpg")) + sorted(
        (data / "bsds500" / "test").glob("*.jpg")
    )
    wiki = [p for p in sorted((data / "wikipedia-photos").glob("*.png")) if int(p.stem) <= 44]
    return bsds + wiki


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/train"))
    parser.add_argument("--calibration", type=int, default=96)
    parser.add_argument("--check", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=CALIBRATION_FILE)
    args = parser.parse_args()
    sources = training_sources(args.data)
    rng = np.random.default_rng(args.seed)
    chosen = rng.choice(len(sources), args.calibration + args.check, replace=False)
    palette = np.load(Path(__file__).parent / "data" / "imagegpt_clusters.npy")
    rows = [image_to_tokens(load_image(sources[i]).rgb, palette, SIDE) for i in chosen]
    tokens = np.asarray(rows, dtype=np.uint16)
    names = np.asarray([str(sources[i].relative_to(args.data)) for i in chosen])
    np.savez_compressed(
        args.out,
        calibration=tokens[: args.calibration],
        check=tokens[args.calibration :],
        calibration_sources=names[: args.calibration],
        check_sources=names[args.calibration :],
    )
    print(f"wrote {args.out}: {args.calibration} + {args.check} images of {SIDE}x{SIDE} tokens")


if __name__ == "__main__":
    main()
