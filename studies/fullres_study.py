"""Which window layout codes full-resolution palette images best per unit of compute.

Model bits only (the sum of -log2 of each coded token's table share; the coder adds a
few bytes per record), from the exact encoder's whole-window calls. Layouts: context
rows T above each band (igpt_codec.format.tiling, no left context, a batch as wide as the image)
and, for comparison, windows that also overlap L columns to the left (a wavefront
decoder would be needed). Cost = cells fed to the model per coded pixel.

    python -m studies.fullres_study --photos 4 --out docs/bench-results/fullres_study.json

Status: a one-off study, kept to rerun; nothing imports it.
Result: docs/bench-results/fullres_study.json; the layout it chose (4 context rows,
no left context) is in docs/full-resolution.md.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from bench.fullres import heldout_palette_images
from igpt_codec.runtime.bundle import DEFAULT_BUNDLE_DIR, load_bundle
from igpt_codec.runtime.contract import SOS
from igpt_codec.runtime.exact_runner import ExactTokenModel


def window_bits(model: ExactTokenModel, windows: list[np.ndarray], masks: list[np.ndarray]):
    """Ideal bits of the coded cells of equally shaped windows (grid 32)."""
    rows, cols = windows[0].shape
    r, c = np.divmod(np.arange(rows * cols), cols)
    pos = (r * 32 + c)[None, :]
    total = 0.0
    for start in range(0, len(windows), 8):
        chunk = windows[start : start + 8]
        flat = np.stack([w.reshape(-1).astype(np.int64) for w in chunk])
        ids = np.concatenate([np.full((len(chunk), 1), SOS), flat[:, :-1]], axis=1)
        freqs, _ = model.run(ids, np.repeat(pos, len(chunk), 0), model.start(len(chunk)), False)
        chosen = np.take_along_axis(freqs, flat[:, :, None], axis=2)[:, :, 0]
        bits = -np.log2(chosen / freqs.sum(axis=2))
        for k, mask in enumerate(masks[start : start + 8]):
            total += float(bits[k][mask.reshape(-1)].sum())
    return total


def layout_bits(model, image: np.ndarray, top_ctx: int, left_ctx: int) -> tuple[float, int]:
    """(bits, cells fed) for windows of 32 with top_ctx rows and left_ctx columns of context."""
    height, width = image.shape
    g = 32
    row_starts, r = [], 0
    while r < height:
        row_starts.append(r)
        r += g if r == 0 else g - top_ctx
    col_starts, c = [], 0
    while c < width:
        col_starts.append(c)
        c += g if c == 0 else g - left_ctx
    groups: dict[tuple, tuple[list, list]] = {}
    fed = 0
    for y in row_starts:
        top = max(0, y - (top_ctx if y else 0))
        top = min(top, max(0, height - g)) if y else 0
        for x in col_starts:
            left = max(0, x - (left_ctx if x else 0))
            left = min(left, max(0, width - g)) if x else 0
            win = image[top : top + g, left : left + g]
            mask = np.zeros(win.shape, bool)
            mask[y - top :, x - left :] = True
            groups.setdefault(win.shape, ([], []))
            groups[win.shape][0].append(win)
            groups[win.shape][1].append(mask)
            fed += win.size
    bits = sum(window_bits(model, w, m) for w, m in groups.values())
    return bits, fed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--photos", type=int, default=4)
    parser.add_argument("--out", type=Path, default=Path("docs/bench-results/fullres_study.json"))
    args = parser.parse_args()
    bundle = load_bundle(DEFAULT_BUNDLE_DIR)
    model = ExactTokenModel(bundle, threads=1)
    images = heldout_palette_images(bundle, limit=args.photos)
    layouts = [(0, 0), (4, 0), (8, 0), (12, 0), (8, 8), (4, 4)]
    rows = []
    for top, left in layouts:
        start = time.perf_counter()
        bits = fed = pixels = 0
        for _, tokens in images:
            b, f = layout_bits(model, tokens, top, left)
            bits, fed, pixels = bits + b, fed + f, pixels + tokens.size
        row = {
            "context_rows": top,
            "context_cols": left,
            "bits_per_pixel": bits / pixels,
            "cells_fed_per_pixel": fed / pixels,
            "seconds": time.perf_counter() - start,
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    names = [name for name, _ in images]
    result = {"photos": names, "model": bundle.fingerprint.hex(), "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
