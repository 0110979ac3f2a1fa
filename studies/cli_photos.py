"""What a user of the command line sees on real photos: seconds and bits per photo.

Each photo is compressed and decompressed by a fresh `python cli.py` process
(default model, default settings), several rounds; the output is the median
seconds per photo for each command, and the bits per token of each file as
`cli.py info --json` reports it (file bytes x 8 / tokens; also the payload alone).
Decoded tokens are compared with a direct tokenization, so a lossy round trip
would show.

    python -m studies.cli_photos --limit 20 --rounds 3 --json cli_photos.json

Status: a one-off study, kept to rerun; nothing imports it.
Result: docs/bench-results/cli_photos.json; discussed in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from bench.data import select_images
from igpt_codec.api import tokenize
from igpt_codec.core.palette import pixels_to_tokens
from igpt_codec.runtime.bundle import load_bundle

CLI = Path(__file__).resolve().parents[1] / "cli.py"


def _timed(args: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, str(CLI), *args], check=True, capture_output=True)
    return time.perf_counter() - start


def measure(photos: list[Path], rounds: int) -> dict:
    bundle = load_bundle()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, photo in enumerate(photos):
            coded, decoded = Path(tmp) / f"{i}.igpt", Path(tmp) / f"{i}.png"
            comp = [_timed(["compress", str(photo), "-o", str(coded), "-f", "-q"])]
            dec = [_timed(["decompress", str(coded), "-o", str(decoded), "-f", "-q"])]
            for _ in range(rounds - 1):
                comp.append(_timed(["compress", str(photo), "-o", str(coded), "-f", "-q"]))
                dec.append(_timed(["decompress", str(coded), "-o", str(decoded), "-f", "-q"]))
            info = json.loads(
                subprocess.run(
                    [sys.executable, str(CLI), "info", str(coded), "--json"],
                    check=True,
                    capture_output=True,
                    text=True,
                ).stdout
            )
            expected = tokenize([photo], bundle, 32)[0].tokens
            with Image.open(decoded) as im:
                got = pixels_to_tokens(np.asarray(im.convert("RGB")), bundle.palette)
            rows.append(
                {
                    "photo": photo.name,
                    "file_bytes": coded.stat().st_size,
                    "bits_per_token": info["bits_per_token"],
                    "payload_bits_per_token": info["records"][0]["payload_bits_per_token"],
                    "coding": info["records"][0]["coding"],
                    "compress_s": statistics.median(comp),
                    "decompress_s": statistics.median(dec),
                    "lossless": bool(np.array_equal(expected, got)),
                }
            )
    return {
        "rounds": rounds,
        "photos": rows,
        "median_compress_s": statistics.median(r["compress_s"] for r in rows),
        "median_decompress_s": statistics.median(r["decompress_s"] for r in rows),
        "mean_bits_per_token": statistics.fmean(r["bits_per_token"] for r in rows),
        "all_lossless": all(r["lossless"] for r in rows),
        "fingerprint": bundle.fingerprint.hex(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=Path, default=None)
    parser.add_argument("--limit", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    result = measure(select_images(args.images, args.limit), args.rounds)
    text = json.dumps(result, indent=1)
    print(
        json.dumps({k: v for k, v in result.items() if k != "photos"}, indent=1),
    )
    if args.json:
        args.json.write_text(text)


if __name__ == "__main__":
    main()
