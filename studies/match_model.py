"""Longer-reach levels (codec/core/match.py) after coding 2 on synthetic images (issue 28).

Measures how many bits coding 2 (codec/core/adaptive.py) spends with and without the new
levels, on the project's synthetic set (bench/synthetic.py, 12 images of 256 x 256) and on
12 whole held-out photos (bench/fullres.heldout_paths(limit=12), 481 x 321), replaying
the exact model's tables instead of running the model per variant:

1. `collect`: run the exact model once per image over every window, in the encoder's
   layout (pipelines/fullres.make_header: 4 context rows, chains of window groups), and
   cache its tables of coded cells in coding order under bench_out/match_model/
   (uncommitted; 134 MB per 256 x 256 image, 316 MB per photo; 7-50 s per image).
2. `replay`: step every chain's cells as the coder does (cell-major, every window of a
   cell from the state before the step, the update after), coding 2 once (its tables are
   cached too), then each variant of new levels on coding 2's output; sum -log2 of each
   coded symbol's share of its final table (ideal bits). Stream bytes are estimated as
   ideal bytes plus what coding 2's real stream paid above its ideal (framing, flushes).
3. `merge`: one JSON from replay runs made side by side, with a summary per set.
4. `speed`: seconds per cell step of coding 2's mixer and of the new levels.

    nice -n 19 python -m studies.match_model collect
    nice -n 19 python -m studies.match_model replay --only text_builtin ... --out A.json
    nice -n 19 python -m studies.match_model replay --only 101085.jpg ... --out B.json
    python -m studies.match_model merge A.json B.json --out docs/bench-results/match_model.json

Status: a one-off study, kept to rerun; nothing imports it.
Result: docs/bench-results/match_model.json and docs/synthetic.md, "Longer-reach levels".
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from bench.fullres import heldout_paths, load_photo, palette_tokens
from bench.synthetic import MAKERS, synthetic_images
from bench.synthetic_bench import PNG_KINDS, classical_files
from igpt_codec.core.adaptive import AdaptiveMixer, window_neighbours
from igpt_codec.core.match import DEFAULT_LEVELS, LevelSpec, MatchMixer, window_template
from igpt_codec.format.records import CODING_ADAPTIVE
from igpt_codec.format.tiling import Tiling
from igpt_codec.pipelines.fullres import grid_of, make_header
from igpt_codec.pipelines.types import FullImage
from igpt_codec.runtime.bundle import load_bundle
from igpt_codec.runtime.contract import SOS
from igpt_codec.runtime.exact_runner import ExactTokenModel

CACHE = Path("bench_out/match_model")
SYNTHETIC_JSON = Path("docs/bench-results/synthetic.json")
PHOTOS = 12
"""Held-out photos (evenly spaced over the 105, bench/fullres.heldout_paths), whole: the
model's tables of a 481 x 321 photo take about a minute (0.2 s per window)."""


def image_set(photos: int) -> list[tuple[str, str, np.ndarray]]:
    """(name, set, tokens [H, W]) of the 12 synthetic images and `photos` held-out photos."""
    bundle = load_bundle(None)
    out = [
        (name, "synthetic", palette_tokens(rgb, bundle.palette)) for name, rgb in synthetic_images()
    ]
    for path in heldout_paths(limit=photos) if photos else []:
        rgb = np.asarray(load_photo(path).rgb, dtype=np.uint8)
        out.append((path.name, "photo", palette_tokens(rgb, bundle.palette)))
    return out


def tiling_of(tokens: np.ndarray, grid: int) -> Tiling:
    """The layout the encoder gives this image (pipelines/fullres.make_header)."""
    image = FullImage(tokens.astype(np.uint16), "RGB")
    return make_header(image, b"\0" * 8, grid, CODING_ADAPTIVE).tiling


def chain_layout(tokens: np.ndarray, grid: int) -> list[list[tuple[np.ndarray, np.ndarray]]]:
    """Per chain, per band: (cells [windows, rows * width], coded mask) as the coder has them."""
    tiling = tiling_of(tokens, grid)
    chains = []
    for columns in tiling.segments():
        bands = []
        for band in tiling.bands():
            cells = np.stack([tiling.window_tokens(tokens, band, c).reshape(-1) for c in columns])
            mask = np.stack([tiling.coded_mask(band, c).reshape(-1) for c in columns])
            bands.append((cells.astype(np.int64), mask))
        chains.append(bands)
    return chains


def collect(photos: int) -> None:
    """The model's tables of every coded cell, cached per image (skips cached images)."""
    bundle = load_bundle(None)
    model = ExactTokenModel(bundle, threads=1)
    grid = grid_of(bundle.n_positions)
    CACHE.mkdir(parents=True, exist_ok=True)
    for name, group, tokens in image_set(photos):
        path = CACHE / f"{name}.npz"
        if path.exists():
            continue
        start = time.perf_counter()
        tables = []
        positions = tiling_of(tokens, grid).cell_positions()
        for bands in chain_layout(tokens, grid):
            for cells, mask in bands:
                n = cells.shape[1]
                order_cell, order_window = np.nonzero(mask.T)
                band_tables = np.zeros((len(cells), n, 512), np.int32)
                for w in range(len(cells)):
                    ids = np.concatenate([[SOS], cells[w, :-1]])[None, :]
                    freqs, _ = model.run(ids, positions[None, :n], model.start(1), False)
                    band_tables[w] = freqs[0]
                tables.append(band_tables[order_window, order_cell])
        np.savez(path, tokens=tokens, tables=np.concatenate(tables), set=group)
        print(f"{name}: {time.perf_counter() - start:.0f} s", flush=True)


VARIANTS: dict[str, tuple[LevelSpec, ...]] = {
    "copy": DEFAULT_LEVELS[3:],
    "symbols+copy": DEFAULT_LEVELS,
}
"""Mixer variants replayed, each after coding 2's three levels (its output is their input).
Putting them before coding 2 (their output what it refines) was tried: worse (text with the
built-in font: 0.946 of coding 2 against 0.830 after)."""


def _bits(table: np.ndarray, symbols: np.ndarray) -> float:
    chosen = table[np.arange(len(symbols)), symbols].astype(np.float64)
    return float(-np.log2(chosen / table.sum(axis=1)).sum())


def coding2_tables(path: Path) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
    """Coding 2's tables of one cached image in coding order (int32, cached beside it),
    its tokens, and the bits of the model alone and of coding 2."""
    data = np.load(path)
    tokens, tables = data["tokens"], data["tables"]
    mixed_path = path.with_suffix(".coding2.npz")
    if mixed_path.exists():
        cached = np.load(mixed_path)
        return (
            tokens,
            cached["tables"],
            {"model": float(cached["model"]), "coding2": float(cached["coding2"])},
        )
    width = min(32, tokens.shape[1])
    out = np.empty(tables.shape, np.int32)
    bits = {"model": 0.0, "coding2": 0.0}
    at = 0
    for bands in chain_layout(tokens, 32):
        adaptive = AdaptiveMixer()
        for cells, mask in bands:
            for cell in np.flatnonzero(mask.any(axis=0)).tolist():
                live = np.flatnonzero(mask[:, cell])
                freqs = tables[at : at + len(live)].astype(np.int64)
                symbols = cells[live, cell]
                mixed, step = adaptive.tables(freqs, window_neighbours(cells, cell, width)[live])
                adaptive.update(step, symbols)
                bits["model"] += _bits(freqs, symbols)
                bits["coding2"] += _bits(mixed, symbols)
                out[at : at + len(live)] = mixed
                at += len(live)
    np.savez(mixed_path, tables=out, **bits)
    return tokens, out, bits


def replay_image(path: Path, variants: dict[str, tuple[LevelSpec, ...]]) -> dict:
    """Ideal bits of one cached image under the model alone, coding 2 and every variant
    (the new levels refine coding 2's tables: they come after its three levels)."""
    tokens, mixed_tables, bits = coding2_tables(path)
    width = min(32, tokens.shape[1])
    bits.update(dict.fromkeys(variants, 0.0))
    at = 0
    start = time.perf_counter()
    for bands in chain_layout(tokens, 32):
        mixers = {name: MatchMixer(levels) for name, levels in variants.items()}
        size = max(mixer.size for mixer in mixers.values())
        for cells, mask in bands:
            for cell in np.flatnonzero(mask.any(axis=0)).tolist():
                live = np.flatnonzero(mask[:, cell])
                mixed = mixed_tables[at : at + len(live)].astype(np.int64)
                at += len(live)
                symbols = cells[live, cell]
                template = window_template(cells, cell, width, size)[live]
                for name, mixer in mixers.items():
                    out, step = mixer.tables(mixed, template[:, : mixer.size])
                    mixer.update(step, symbols)
                    bits[name] += _bits(out, symbols)
    if at != len(mixed_tables):
        raise RuntimeError(f"{path.name}: {at} cells replayed, {len(mixed_tables)} cached")
    return {
        "name": path.stem,
        "set": "photo" if path.stem.endswith(".jpg") else "synthetic",
        "width": int(tokens.shape[1]),
        "height": int(tokens.shape[0]),
        "colours": int(np.unique(tokens).size),
        "bits": bits,
        "replay_s": time.perf_counter() - start,
    }


def names_of(photos: int) -> list[str]:
    """The cached images' names: the synthetic set's, then the photos'."""
    return [name for name, _ in MAKERS] + [path.name for path in heldout_paths(limit=photos)]


def classical_of(name: str, tokens: np.ndarray, compute: bool) -> dict[str, Any]:
    """PNG / WebP LL / JXL LL bytes and coding 2's stream bytes: from the synthetic bench's
    JSON (the same palette images), else computed here (bench/synthetic_bench.py) when asked."""
    known = {row["name"]: row for row in json.loads(SYNTHETIC_JSON.read_text())["rows"]}
    if name in known and known[name]["set"] == "synthetic":
        row = known[name]
        keys = ("png", "webp_ll", "jxl_ll", "model_bytes", "ours_bytes", "kept")
        return {key: row[key] for key in keys}
    if not compute:
        return {}
    sizes = classical_files(tokens, load_bundle(None).palette)
    png = min(sizes[k] for k in PNG_KINDS)
    return {"png": png, "webp_ll": sizes.get("webp_ll"), "jxl_ll": sizes.get("jxl_ll")}


def replay(photos: int, names: list[str] | None, out: Path | None, classical: bool) -> None:
    rows = []
    for name in names or names_of(photos):
        row = replay_image(CACHE / f"{name}.npz", VARIANTS)
        tokens = np.load(CACHE / f"{name}.npz")["tokens"]
        row.update(classical_of(name, tokens, classical))
        base = row["bits"]["coding2"]
        row["ratio_to_coding2"] = {k: v / base for k, v in row["bits"].items()}
        if "model_bytes" in row:  # the stream's framing and coder flushes, as coding 2 paid
            overhead = row["model_bytes"] - base / 8
            row["stream_bytes"] = {k: round(v / 8 + overhead) for k, v in row["bits"].items()}
        best = min((row[k] for k in ("png", "webp_ll", "jxl_ll") if row.get(k)), default=None)
        if best is not None:
            sized = row.get("stream_bytes") or {k: v / 8 for k, v in row["bits"].items()}
            row["over_best_classical"] = {k: v / best for k, v in sized.items()}
        pixels = row["width"] * row["height"]
        print(
            f"{row['set']:9} {name:16} coding2 {base / pixels:.4f} bpp  "
            + "  ".join(f"{k} {v:.3f}" for k, v in row["ratio_to_coding2"].items()),
            flush=True,
        )
        rows.append(row)
        if out is not None:
            result = {
                "study": "studies/match_model.py",
                "model": load_bundle(None).fingerprint.hex(),
                "variants": {k: [asdict(spec) for spec in v] for k, v in VARIANTS.items()},
                "rows": rows,
            }
            out.write_text(json.dumps(result, indent=1) + "\n")


def speed(name: str, batches: list[int], cells: int = 400) -> dict[str, Any]:
    """Seconds per cell step of coding 2's mixer and of the new levels, side by side, on the
    first band of one cached image (its windows repeated to make each batch)."""
    tokens = np.load(CACHE / f"{name}.npz")["tokens"]
    windows, _ = chain_layout(tokens, 32)[0][0]
    width = min(32, tokens.shape[1])
    rng = np.random.default_rng(0)
    out = {}
    for batch in batches:
        group = windows[np.arange(batch) % len(windows)]
        tables = rng.integers(1, 1 << 16, (batch, 512))
        adaptive, match = AdaptiveMixer(), MatchMixer()
        spent = {"coding2": 0.0, "new levels": 0.0}
        for cell in range(width, width + cells):
            symbols = group[:, cell]
            start = time.perf_counter()
            mixed, step = adaptive.tables(tables, window_neighbours(group, cell, width))
            adaptive.update(step, symbols)
            middle = time.perf_counter()
            template = window_template(group, cell, width, match.size)
            _, mstep = match.tables(mixed, template)
            match.update(mstep, symbols)
            spent["coding2"] += middle - start
            spent["new levels"] += time.perf_counter() - middle
        out[str(batch)] = {k: v / cells for k, v in spent.items()}
        print(batch, {k: f"{v * 1e3:.2f} ms" for k, v in out[str(batch)].items()}, flush=True)
    return out


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per set and variant: total bits against coding 2's, and the range of per-image ratios."""
    out: dict[str, Any] = {}
    for group in sorted({row["set"] for row in rows}):
        chosen = [row for row in rows if row["set"] == group]
        base = sum(row["bits"]["coding2"] for row in chosen)
        out[group] = {
            variant: {
                "total_ratio": sum(row["bits"][variant] for row in chosen) / base,
                "min_ratio": min(row["ratio_to_coding2"][variant] for row in chosen),
                "max_ratio": max(row["ratio_to_coding2"][variant] for row in chosen),
            }
            for variant in VARIANTS
        }
    return out


def merge(parts: list[Path], out: Path, classical: bool, timed: bool) -> None:
    """One JSON from several replay runs (e.g. the synthetic set and the photos run side by
    side), the photos' classical files computed here when asked, and the summary."""
    runs = [json.loads(part.read_text()) for part in parts]
    rows = [row for run in runs for row in run["rows"]]
    for row in rows:
        if classical and "png" not in row:
            tokens = np.load(CACHE / f"{row['name']}.npz")["tokens"]
            row.update(classical_of(row["name"], tokens, True))
            best = min(row[k] for k in ("png", "webp_ll", "jxl_ll") if row.get(k))
            row["over_best_classical"] = {k: v / 8 / best for k, v in row["bits"].items()}
    result = {**runs[0], "rows": rows, "summary": summary(rows)}
    if timed:
        result["seconds_per_step"] = {"image": "text_builtin", **speed("text_builtin", [4, 8, 32])}
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result["summary"], indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("phase", choices=["collect", "replay", "merge", "speed"])
    parser.add_argument("parts", nargs="*", type=Path, help="merge: the replay JSONs")
    parser.add_argument("--photos", type=int, default=PHOTOS)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--only", nargs="*", help="image names to replay (default: all)")
    parser.add_argument("--speed", action="store_true", help="merge: time the mixers too")
    parser.add_argument(
        "--classical", action="store_true", help="compute PNG/WebP/JXL bytes of the photos"
    )
    args = parser.parse_args()
    if args.phase == "collect":
        collect(args.photos)
    elif args.phase == "replay":
        replay(args.photos, args.only, args.out, args.classical)
    elif args.phase == "merge":
        merge(args.parts, args.out, args.classical, args.speed)
    else:
        result = {"image": "text_builtin", "seconds_per_step": speed("text_builtin", [4, 8, 32])}
        if args.out is not None:
            args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
