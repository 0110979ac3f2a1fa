"""Training and validation token sets for the default model, made with the codec's own tokenizer.

Why precompute: tokenizing a crop (resize + nearest of 512 clusters) costs
milliseconds, as much as a training step's worth of CPU for a small model, so
crops are tokenized once into a uint16 pool on disk and training only indexes it.

Validation holds out whole source images (BSDS500 val/ and the last five
Wikipedia photos, about 19% of the sources), never crops of training images.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from codec.palette import image_to_tokens

PALETTE_PATH = Path(__file__).parent / "data" / "imagegpt_clusters.npy"
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}
SIDE = 32


def default_data_root() -> Path:
    env = os.environ.get("IGPT_SHARED_DATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "shared" / "data" / "train"


def is_validation(relative: str) -> bool:
    """Whole source images held out: BSDS500 val/ and Wikipedia photos 045-049."""
    parts = Path(relative).parts
    if parts[0] == "bsds500" and len(parts) > 1 and parts[1] == "val":
        return True
    return parts[0] == "wikipedia-photos" and Path(relative).stem >= "045"


def list_sources(root: Path) -> tuple[list[Path], list[Path]]:
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    train, val = [], []
    for path in files:
        (val if is_validation(str(path.relative_to(root))) else train).append(path)
    return train, val


def random_crop(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Whole image (squashed, as the codec sees photos) a quarter of the time, else a crop.

    Crop area is log-uniform between 1% and 100% of the image, aspect ratio
    log-uniform in [1/2, 2]: thumbnails of whole photos and of details both occur
    in real use, and squashing non-square regions is what the codec does.
    """
    width, height = image.size
    if rng.random() < 0.25:
        box = (0, 0, width, height)
    else:
        area = width * height * math.exp(rng.uniform(math.log(0.01), 0.0))
        aspect = math.exp(rng.uniform(math.log(0.5), math.log(2.0)))
        crop_w = round(min(width, max(SIDE, math.sqrt(area * aspect))))
        crop_h = round(min(height, max(SIDE, math.sqrt(area / aspect))))
        left = int(rng.integers(0, width - crop_w + 1))
        top = int(rng.integers(0, height - crop_h + 1))
        box = (left, top, left + crop_w, top + crop_h)
    crop = image.crop(box)
    if rng.random() < 0.5:
        crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return crop


def _seed_for(path: Path, seed: int) -> int:
    digest = hashlib.sha256(f"{seed}:{path.name}:{path.parent.name}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


def crops_of(args: tuple[Path, int, int, np.ndarray]) -> np.ndarray:
    path, count, seed, palette = args
    rng = np.random.default_rng(_seed_for(path, seed))
    with Image.open(path) as im:
        image = im.convert("RGB")
    out = np.empty((count, SIDE * SIDE), dtype=np.uint16)
    for i in range(count):
        out[i] = image_to_tokens(random_crop(image, rng), palette, SIDE)
    return out


def whole_thumbnail(args: tuple[Path, np.ndarray]) -> np.ndarray:
    path, palette = args
    with Image.open(path) as im:
        return image_to_tokens(im.convert("RGB"), palette, SIDE)


def build(root: Path, out: Path, crops_per_image: int, val_crops: int, seed: int, workers: int):
    palette = np.load(PALETTE_PATH)
    train, val = list_sources(root)
    print(f"sources: {len(train)} train, {len(val)} validation", flush=True)
    with ProcessPoolExecutor(workers) as pool:
        train_tokens = np.concatenate(
            list(pool.map(crops_of, [(p, crops_per_image, seed, palette) for p in train]))
        )
        val_whole = np.stack(list(pool.map(whole_thumbnail, [(p, palette) for p in val])))
        val_crop = np.concatenate(
            list(pool.map(crops_of, [(p, val_crops, seed + 1, palette) for p in val]))
        )
    order = np.random.default_rng(seed).permutation(len(train_tokens))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp.npz")
    np.savez(
        tmp,
        train=train_tokens[order],
        val_whole=val_whole,
        val_crops=val_crop,
        train_sources=np.array([str(p.relative_to(root)) for p in train]),
        val_sources=np.array([str(p.relative_to(root)) for p in val]),
    )
    os.replace(tmp, out)
    print(
        f"wrote {out}: train {train_tokens.shape}, val whole {val_whole.shape}, "
        f"val crops {val_crop.shape}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=default_data_root())
    parser.add_argument("--out", type=Path, default=Path("runs/token_pool.npz"))
    parser.add_argument("--crops-per-image", type=int, default=100)
    parser.add_argument("--val-crops", type=int, default=4)
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    build(args.data, args.out, args.crops_per_image, args.val_crops, args.seed, args.workers)


if __name__ == "__main__":
    main()
