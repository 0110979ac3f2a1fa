"""Full-resolution palette images of the held-out photos (shared by the study and the bench)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from codec.bundle import Bundle
from codec.images import load_image
from codec.palette import pixels_to_tokens

HELDOUT = Path(__file__).resolve().parents[1] / "export" / "data" / "heldout.json"
SHARED_TRAIN = Path(__file__).resolve().parents[2] / "shared" / "data" / "train"


def heldout_paths(split: str = "standard", limit: int | None = None) -> list[Path]:
    """The held-out photos of one split (export/data/heldout.json), evenly spaced when cut."""
    names = json.loads(HELDOUT.read_text())[split]
    if limit is not None and limit < len(names):
        step = len(names) / limit
        names = [names[int(i * step)] for i in range(limit)]
    return [SHARED_TRAIN / name for name in names]


def palette_image(path: Path, bundle: Bundle) -> np.ndarray:
    """The photo at its own size, every pixel mapped to its nearest palette colour [H, W]."""
    loaded = load_image(path)
    rgb = np.asarray(loaded.rgb, dtype=np.uint8)
    height, width = rgb.shape[:2]
    return pixels_to_tokens(rgb, bundle.palette).reshape(height, width)


def heldout_palette_images(
    bundle: Bundle, split: str = "standard", limit: int | None = None
) -> list[tuple[str, np.ndarray]]:
    return [
        (str(path.relative_to(SHARED_TRAIN)), palette_image(path, bundle))
        for path in heldout_paths(split, limit)
    ]
