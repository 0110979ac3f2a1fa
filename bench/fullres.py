"""The full-resolution section: our --full files against classical lossless codecs on the
same palette images (every pixel of the photo mapped to the 512 colours), with seconds per
megapixel and peak memory.

    python -m bench.fullres --limit 8 --out docs/bench-results/fullres.json --peak
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

import igpt_codec
from igpt_codec.core.images import LoadedImage, load_image
from igpt_codec.core.palette import grid_to_rgb, pixels_to_tokens
from igpt_codec.runtime.bundle import Bundle

HELDOUT = Path(__file__).resolve().parents[1] / "export" / "data" / "heldout.json"
SHARED_TRAIN = Path(__file__).resolve().parents[2] / "shared" / "data" / "train"


def heldout_names(split: str = "standard") -> list[str]:
    """The held-out photos of one split (export/data/heldout.json), under shared/data/train."""
    return json.loads(HELDOUT.read_text())[split]


def heldout_paths(split: str = "standard", limit: int | None = None) -> list[Path]:
    """The held-out photos of one split, evenly spaced when cut."""
    names = heldout_names(split)
    if limit is not None and limit < len(names):
        step = len(names) / limit
        names = [names[int(i * step)] for i in range(limit)]
    return [SHARED_TRAIN / name for name in names]


def palette_tokens(rgb: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """Every pixel of an RGB array mapped to its nearest palette colour [H, W]."""
    return pixels_to_tokens(rgb, palette).reshape(rgb.shape[:2])


def palette_image(path: Path, bundle: Bundle) -> np.ndarray:
    """The photo at its own size, every pixel mapped to its nearest palette colour [H, W]."""
    return palette_tokens(np.asarray(load_image(path).rgb, dtype=np.uint8), bundle.palette)


def independent_palette_image(
    rgb: np.ndarray, palette: np.ndarray, chunk: int = 8192
) -> tuple[np.ndarray, np.ndarray]:
    """Nearest palette colour by direct squared distance in float64 (not the tokenizer's
    expanded form), and a mask of pixels whose two nearest colours are near-tied: the
    reference the round trips are checked against, so a tokenizer bug cannot hide."""
    pixels = rgb.reshape(-1, 3).astype(np.float64) / 127.5 - 1
    centres = palette.astype(np.float64)
    nearest = np.empty(len(pixels), np.int64)
    tied = np.empty(len(pixels), bool)
    for start in range(0, len(pixels), chunk):
        block = pixels[start : start + chunk]
        d = ((block[:, None, :] - centres[None]) ** 2).sum(axis=2)
        order = np.argsort(d, axis=1)[:, :2]
        best, second = np.take_along_axis(d, order, axis=1).T
        nearest[start : start + chunk] = order[:, 0]
        tied[start : start + chunk] = second - best < 1e-6
    return nearest.reshape(rgb.shape[:2]), tied.reshape(rgb.shape[:2])


def heldout_palette_images(
    bundle: Bundle, split: str = "standard", limit: int | None = None
) -> list[tuple[str, np.ndarray]]:
    return [
        (str(path.relative_to(SHARED_TRAIN)), palette_image(path, bundle))
        for path in heldout_paths(split, limit)
    ]


def classical_sizes(tokens: np.ndarray, palette: np.ndarray) -> dict[str, int]:
    """File bytes of every classical codec on one palette image (decoded back and compared)."""
    from bench.classical import PACKINGS, find_competitors

    competitors = find_competitors()
    flat = tokens.reshape(-1).astype(np.int64)
    rgb = grid_to_rgb(tokens, palette)
    sizes: dict[str, int] = {}
    for name, image_codec in competitors.image_codecs.items():
        data, exact = image_codec(flat, rgb)
        if not exact:
            raise RuntimeError(f"{name} did not decode to the same pixels")
        sizes[name] = len(data)
    for name, compress in competitors.compressors.items():
        for packing, pack in PACKINGS.items():
            sizes[f"{name}/{packing}"] = len(compress(pack(flat)))
    return sizes


def load_photo(
    path: Path, crop: tuple[int, int] | None = None, resize: tuple[int, int] | None = None
) -> LoadedImage:
    """The photo as the full-resolution benchmarks code it: its top-left crop, or resized
    (Lanczos) to e.g. a camera's 768 x 512, or whole."""
    from PIL import Image

    loaded = load_image(path)
    if crop is not None:
        loaded = load_image(loaded.rgb.crop((0, 0, *crop)))
    if resize is not None:
        loaded = load_image(loaded.rgb.resize(resize, Image.Resampling.LANCZOS))
    return loaded


def code_photo(
    path: Path,
    bundle: Bundle,
    threads: tuple[int, ...],
    crop: tuple[int, int] | None = None,
    resize: tuple[int, int] | None = None,
) -> dict[str, Any]:
    """Our file bytes, round trip and seconds per megapixel (each thread count) for one photo
    (its top-left crop when given: the quick benchmark; or resized, e.g. to a camera's
    768 x 512, for the speed goal)."""

    loaded = load_photo(path, crop, resize)
    name = str(path.relative_to(SHARED_TRAIN)) if path.is_relative_to(SHARED_TRAIN) else path.name
    row: dict[str, Any] = {"photo": name, "crop": crop, "resize": resize}
    rgb = np.asarray(loaded.rgb, dtype=np.uint8)
    tokens = palette_tokens(rgb, bundle.palette)
    row["width"], row["height"] = int(tokens.shape[1]), int(tokens.shape[0])
    reference, tied = independent_palette_image(rgb, bundle.palette)
    row["near_ties"] = int(tied.sum())
    row["independent_mismatches"] = int((reference != tokens)[~tied].sum())
    if row["independent_mismatches"]:
        raise RuntimeError(f"{path}: the tokenizer disagrees with the independent mapping")
    megapixels = tokens.size / 1e6
    for count in threads:
        start = time.perf_counter()
        data = igpt_codec.compress(loaded, model=bundle, full=True, threads=count)
        encode_s = time.perf_counter() - start
        start = time.perf_counter()
        (decoded,) = igpt_codec.decompress(data, model=bundle, threads=count)
        decode_s = time.perf_counter() - start
        if not np.array_equal(decoded.tokens, tokens):
            raise RuntimeError(f"{path}: the round trip changed the palette image")
        row["round_trip"] = "tokens equal, checked against the independent mapping"
        row["ours_bytes"] = len(data)
        row[f"encode_s_per_mp_{count}t"] = encode_s / megapixels
        row[f"decode_s_per_mp_{count}t"] = decode_s / megapixels
    row["classical"] = classical_sizes(tokens, bundle.palette)
    best = min(row["classical"], key=row["classical"].get)
    row["best_classical"] = best
    row["best_classical_bytes"] = row["classical"][best]
    row["pixels"] = int(tokens.size)
    row["ours_bits_per_pixel"] = 8 * row["ours_bytes"] / tokens.size
    row["best_classical_bits_per_pixel"] = 8 * row["best_classical_bytes"] / tokens.size
    row["saving_vs_best"] = 1 - row["ours_bytes"] / row["best_classical_bytes"]
    return row


def peak_rss_decoding(path: Path, bundle_dir: Path, workdir: Path) -> dict[str, Any]:
    """Peak resident memory of the CLI compressing and decompressing one photo (child rusage)."""
    import subprocess
    import sys

    cli = Path(__file__).resolve().parents[1] / "cli.py"
    stream = workdir / "peak.igpt"
    out: dict[str, Any] = {"photo": str(path.relative_to(SHARED_TRAIN))}
    for step, args in (
        ("compress", ["compress", "--full", "-q", "-f", "-o", str(stream), str(path)]),
        ("decompress", ["decompress", "-q", "-f", "-o", str(workdir / "peak.png"), str(stream)]),
    ):
        command = [sys.executable, "-c", _PEAK_CHILD, str(cli), *args, "--model", str(bundle_dir)]
        result = subprocess.run(command, capture_output=True, text=True, check=True)
        out[f"{step}_peak_rss_mb"] = int(result.stdout.strip()) / 1024
    return out


_PEAK_CHILD = """
import resource, runpy, sys
cli = sys.argv[1]
sys.argv = [cli, *sys.argv[2:]]
try:
    runpy.run_path(cli, run_name="__main__")
except SystemExit as exit:
    if exit.code:
        raise
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    ours = sum(r["ours_bytes"] for r in rows)
    pixels = sum(r["pixels"] for r in rows)
    names = rows[0]["classical"].keys()
    totals = {name: sum(r["classical"][name] for r in rows) for name in names}
    best_total = min(totals, key=totals.get)
    summary: dict[str, Any] = {
        "photos": len(rows),
        "pixels": pixels,
        "ours_bits_per_pixel": 8 * ours / pixels,
        "classical_bits_per_pixel": {n: 8 * b / pixels for n, b in sorted(totals.items())},
        "best_classical_in_total": best_total,
        "saving_vs_best_in_total": 1 - ours / totals[best_total],
        "saving_vs_best_per_photo_min": min(r["saving_vs_best"] for r in rows),
        "photos_at_least_15pct_below_best": sum(r["saving_vs_best"] >= 0.15 for r in rows),
    }
    for key in rows[0]:
        if key.startswith(("encode_s_per_mp", "decode_s_per_mp")):
            summary[f"median_{key}"] = float(np.median([r[key] for r in rows]))
    return summary


def measure_fullres(
    bundle: Bundle,
    paths: list[Path],
    threads: tuple[int, ...] = (1, 2),
    log: Callable[[str], None] = print,
    crop: tuple[int, int] | None = None,
    resize: tuple[int, int] | None = None,
    on_row: Callable[[list[dict[str, Any]]], None] | None = None,
) -> dict[str, Any]:
    rows: list[dict[str, Any]] = []
    for path in paths:
        row = code_photo(path, bundle, threads, crop, resize)
        log(
            f"full-res {row['photo']}: {row['width']}x{row['height']} ours "
            f"{row['ours_bits_per_pixel']:.3f} bpp, best classical {row['best_classical']} "
            f"{row['best_classical_bits_per_pixel']:.3f} ({100 * row['saving_vs_best']:.1f}% less)"
        )
        rows.append(row)
        if on_row is not None:
            on_row(rows)
    return {
        "model": bundle.fingerprint.hex(),
        "threads": list(threads),
        "rows": rows,
        "summary": summarize(rows),
    }


def main() -> None:
    import argparse
    import tempfile

    from igpt_codec.runtime.bundle import load_bundle

    parser = argparse.ArgumentParser(
        prog="python -m bench.fullres",
        description="Full-resolution mode against classical lossless codecs on the held-out "
        "photos' palette images: bits/pixel, seconds per megapixel, peak memory.",
    )
    parser.add_argument("--split", default="standard")
    parser.add_argument("--limit", type=int, help="evenly spaced subset of the split")
    parser.add_argument("--threads", default="1,2", help="thread counts to time (e.g. 1,2)")
    parser.add_argument("--model", type=Path, help="bundle (default: the shipped one)")
    parser.add_argument("--out", type=Path, default=Path("bench_out/fullres.json"))
    parser.add_argument("--peak", action="store_true", help="also the CLI's peak memory")
    parser.add_argument("--resize", help="code each photo resized to WxH (e.g. 768x512)")
    parser.add_argument(
        "--photos", nargs="+", help="photos under shared/data/train instead of the split"
    )
    args = parser.parse_args()
    resize = tuple(int(v) for v in args.resize.split("x")) if args.resize else None
    bundle = load_bundle(args.model)
    threads = tuple(int(t) for t in args.threads.split(","))
    paths = (
        [SHARED_TRAIN / name for name in args.photos]
        if args.photos
        else heldout_paths(args.split, args.limit)
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)

    def save_partial(rows: list[dict[str, Any]]) -> None:
        """A long run (every held-out photo: about an hour) keeps what it has done."""
        partial = {"model": bundle.fingerprint.hex(), "threads": list(threads), "rows": rows}
        partial["summary"] = summarize(rows)
        partial["complete"] = len(rows) == len(paths)
        args.out.write_text(json.dumps(partial, indent=2) + "\n")

    result = measure_fullres(bundle, paths, threads, resize=resize, on_row=save_partial)
    if args.peak:
        largest = max(paths, key=lambda p: p.stat().st_size)
        with tempfile.TemporaryDirectory() as work:
            result["peak_memory"] = peak_rss_decoding(largest, bundle.path, Path(work))
    result["complete"] = True
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["summary"], indent=2))


if __name__ == "__main__":
    main()
