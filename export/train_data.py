"""Training and validation token sets for the default model, made with the codec's own tokenizer.

Why precompute: tokenizing a view (resize + nearest of 512 clusters) costs
milliseconds, as much as a training step's worth of CPU for a small model, so
views are tokenized once into uint16 arrays on disk and training only indexes them.

Images of every side the CLI offers (8..32) are in the pool, one array per side
(`train_<side>`, shape (n, side²)); the trainer batches one side at a time. Each
view is made the way the codec makes a thumbnail (`igpt_codec.core.images.load_image`,
then `igpt_codec.core.palette.image_to_tokens`: a bilinear squash of the whole picture to
side x side), from the whole photo, a near-whole crop or a smaller crop.

Held out, whole source images, never a crop of a training image
(`export/data/heldout.json`, written by `python export/train_data.py heldout`):
- "standard": BSDS500 val/ and Wikipedia photos 045-049 (105 photos), as for
  the first shipped model;
- "unlike": photos unlike the training photos, chosen before training: the most
  colourful 10% of the remaining sources by Hasler and Süsstrunk's M3
  colourfulness of their 32x32 squash (54 photos, 42 of them from CQ100, which
  keeps 54 of CQ100's 96 colourful close-ups for training).

Native-scale views (`python export/train_data.py native`): 32x32 crops of the photo's
palette image at its own size, the windows full-resolution mode codes (`compress --full`),
made with the same per-pixel tokenizer (`igpt_codec.core.palette.pixels_to_tokens`). A squashed view
averages pixels, so it is smoother and busier than the native pixels of the same photo;
the pool of thumbnails alone never shows the model sensor noise or JPEG blocks.

Commands:
    python export/train_data.py heldout            # (re)write export/data/heldout.json
    python export/train_data.py pool --out runs/pool_v2.npz
    python export/train_data.py native --out runs/native_v1.npz
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from igpt_codec.core.images import load_image
from igpt_codec.core.palette import image_to_tokens, pixels_to_tokens, resize_rgb

PALETTE_PATH = Path(__file__).parent / "data" / "imagegpt_clusters.npy"
HELDOUT_PATH = Path(__file__).parent / "data" / "heldout.json"
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}
SIDE = 32
SIDES = tuple(range(8, 33))
EVAL_SIDES = (8, 16, 24, 28, 32)

# Share of training *tokens* per side; every other side of 8..32 shares OTHER_SHARE equally.
# 32 (the codec's default) dominates; 24 and 16 (the CLI's common alternatives) follow.
TOKEN_SHARE = {32: 0.40, 28: 0.08, 24: 0.14, 16: 0.12, 8: 0.03}
OTHER_SHARE = 0.23

# View kinds: the whole photo squashed (what the codec does with a photo), a near-whole
# crop (80-100% of each dimension: a jittered version of the same), or a crop of 1-100%.
P_WHOLE, P_NEAR_WHOLE = 0.25, 0.15

UNLIKE_TOP_FRACTION = 0.10


def token_shares() -> dict[int, float]:
    others = [s for s in SIDES if s not in TOKEN_SHARE]
    shares = {s: OTHER_SHARE / len(others) for s in others} | dict(TOKEN_SHARE)
    total = sum(shares.values())
    return {s: shares[s] / total for s in SIDES}


def view_side_probs() -> dict[int, float]:
    """Per-view side probabilities that give the token shares (a view of side s has s² tokens)."""
    raw = {s: share / s**2 for s, share in token_shares().items()}
    total = sum(raw.values())
    return {s: v / total for s, v in raw.items()}


def default_data_root() -> Path:
    env = os.environ.get("IGPT_SHARED_DATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "shared" / "data" / "train"


def is_validation(relative: str) -> bool:
    """The standard held-out sources: BSDS500 val/ and Wikipedia photos 045-049."""
    parts = Path(relative).parts
    if parts[0] == "bsds500" and len(parts) > 1 and parts[1] == "val":
        return True
    return parts[0] == "wikipedia-photos" and Path(relative).stem >= "045"


def all_sources(root: Path) -> list[str]:
    return sorted(
        str(p.relative_to(root))
        for p in root.rglob("*")
        if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
    )


def colourfulness_m3(rgb: np.ndarray) -> float:
    """Hasler and Süsstrunk (2003) M3: sqrt(s_rg² + s_yb²) + 0.3 sqrt(m_rg² + m_yb²).

    rg = R - G, yb = (R + G) / 2 - B on 0..255 values; s = standard deviation, m = mean.
    """
    r, g, b = (rgb[..., i].astype(np.float64) for i in range(3))
    rg, yb = r - g, 0.5 * (r + g) - b
    return float(
        math.sqrt(rg.std() ** 2 + yb.std() ** 2) + 0.3 * math.sqrt(rg.mean() ** 2 + yb.mean() ** 2)
    )


def make_heldout(root: Path) -> dict:
    """The held-out lists, from a definition fixed before training (see module docstring)."""
    sources = all_sources(root)
    standard = [s for s in sources if is_validation(s)]
    candidates = [s for s in sources if not is_validation(s)]
    m3 = {}
    for rel in candidates:
        m3[rel] = round(colourfulness_m3(resize_rgb(load_image(root / rel).rgb, SIDE)), 3)
    ranked = sorted(candidates, key=lambda s: (-m3[s], s))
    n_top = math.ceil(UNLIKE_TOP_FRACTION * len(candidates))
    top = ranked[:n_top]
    unlike = sorted(top)
    return {
        "definition": {
            "standard": "bsds500/val/* and wikipedia-photos/045-049 (as for the first model)",
            "unlike": (
                "among the other sources: the ceil(10%) with the highest Hasler-Susstrunk M3 "
                "colourfulness (sqrt(std_rg^2+std_yb^2) + 0.3 sqrt(mean_rg^2+mean_yb^2), "
                "rg=R-G, yb=(R+G)/2-B, on 0..255) of the photo squashed to 32x32 by the "
                "codec's bilinear resize"
            ),
            "unlike_never_trained": (
                "the unlike photos from cq100, which no model of this project was trained "
                "on (the shipped model of Dec 2026 saw bsds500 train/test and "
                "wikipedia-photos 001-044)"
            ),
            "m3_threshold": m3[top[-1]],
            "fixed_before_training": True,
        },
        "standard": standard,
        "unlike": unlike,
        "unlike_by_m3": top,
        # Warm-started models saw bsds500 train/test and wikipedia-photos 001-044; cq100 is new.
        "unlike_never_trained": [s for s in unlike if s.startswith("cq100/")],
        "m3": m3,
    }


def load_heldout(path: Path = HELDOUT_PATH) -> dict:
    return json.loads(path.read_text())


def split_sources(root: Path, heldout: dict) -> tuple[list[str], list[str], list[str]]:
    """(train, standard held-out, unlike held-out) relative paths; refuses unknown drift."""
    sources = all_sources(root)
    standard = [s for s in sources if s in set(heldout["standard"])]
    unlike = [s for s in sources if s in set(heldout["unlike"])]
    held = set(standard) | set(unlike)
    train = [s for s in sources if s not in held and s in heldout["m3"]]
    unknown = [s for s in sources if s not in held and s not in heldout["m3"]]
    if unknown:
        print(f"warning: {len(unknown)} sources not in heldout.json are left out", flush=True)
    return train, standard, unlike


def random_crop(image: Image.Image, rng: np.random.Generator, kind: str = "crop") -> Image.Image:
    """A view of the photo: 'whole', 'near' (80-100% of each dimension) or 'crop'.

    Crop area is log-uniform between 1% and 100% of the image, aspect ratio
    log-uniform in [1/2, 2]: thumbnails of whole photos and of details both occur
    in real use, and squashing non-square regions is what the codec does.
    Horizontal flip half the time.
    """
    width, height = image.size
    if kind == "whole":
        box = (0, 0, width, height)
    else:
        if kind == "near":
            crop_w = max(1, round(width * rng.uniform(0.8, 1.0)))
            crop_h = max(1, round(height * rng.uniform(0.8, 1.0)))
        else:
            area = width * height * math.exp(rng.uniform(math.log(0.01), 0.0))
            aspect = math.exp(rng.uniform(math.log(0.5), math.log(2.0)))
            crop_w = round(min(width, max(min(SIDE, width), math.sqrt(area * aspect))))
            crop_h = round(min(height, max(min(SIDE, height), math.sqrt(area / aspect))))
        left = int(rng.integers(0, width - crop_w + 1))
        top = int(rng.integers(0, height - crop_h + 1))
        box = (left, top, left + crop_w, top + crop_h)
    crop = image.crop(box)
    if rng.random() < 0.5:
        crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return crop


def _seed_for(relative: str, seed: int) -> int:
    digest = hashlib.sha256(f"{seed}:{relative}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


def views_of(args: tuple[Path, str, int, int, np.ndarray]) -> dict[int, list[np.ndarray]]:
    """`count` seeded views of one source, grouped by side."""
    root, relative, count, seed, palette = args
    rng = np.random.default_rng(_seed_for(relative, seed))
    image = load_image(root / relative).rgb
    probs = view_side_probs()
    sides = rng.choice(list(probs), size=count, p=list(probs.values()))
    out: dict[int, list[np.ndarray]] = {}
    for side in sides:
        u = rng.random()
        kind = "whole" if u < P_WHOLE else "near" if u < P_WHOLE + P_NEAR_WHOLE else "crop"
        view = random_crop(image, rng, kind)
        out.setdefault(int(side), []).append(image_to_tokens(view, palette, int(side)))
    return out


def whole_thumbnails(args: tuple[Path, str, np.ndarray]) -> dict[int, np.ndarray]:
    """The photo squashed to each evaluation side: exactly what the codec codes."""
    root, relative, palette = args
    image = load_image(root / relative).rgb
    return {side: image_to_tokens(image, palette, side) for side in EVAL_SIDES}


def pool_spec(views_per_source: int, seed: int, heldout: dict) -> dict:
    digest = hashlib.sha256(json.dumps(heldout, sort_keys=True).encode()).hexdigest()[:16]
    return {
        "version": 2,
        "views_per_source": views_per_source,
        "seed": seed,
        "token_share": {str(k): round(v, 5) for k, v in token_shares().items()},
        "p_whole": P_WHOLE,
        "p_near_whole": P_NEAR_WHOLE,
        "heldout_sha": digest,
    }


def build(root: Path, out: Path, views_per_source: int, val_crops: int, seed: int, workers: int):
    palette = np.load(PALETTE_PATH)
    heldout = load_heldout()
    train, standard, unlike = split_sources(root, heldout)
    print(
        f"sources: {len(train)} train, {len(standard)} standard held out, "
        f"{len(unlike)} unlike held out",
        flush=True,
    )
    arrays: dict[str, np.ndarray] = {}
    with ProcessPoolExecutor(workers) as pool:
        per_side: dict[int, list[np.ndarray]] = {s: [] for s in SIDES}
        jobs = [(root, rel, views_per_source, seed, palette) for rel in train]
        for i, views in enumerate(pool.map(views_of, jobs, chunksize=4)):
            for side, toks in views.items():
                per_side[side].extend(toks)
            if (i + 1) % 50 == 0:
                print(f"  {i + 1}/{len(train)} sources", flush=True)
        order_rng = np.random.default_rng(seed)
        for side, toks in per_side.items():
            stack = np.stack(toks).astype(np.uint16) if toks else np.zeros((0, side * side))
            arrays[f"train_{side}"] = stack[order_rng.permutation(len(stack))].astype(np.uint16)
        for name, rels in (("heldout", standard), ("unlike", unlike)):
            thumbs = list(pool.map(whole_thumbnails, [(root, r, palette) for r in rels]))
            for side in EVAL_SIDES:
                arrays[f"{name}_{side}"] = np.stack([t[side] for t in thumbs])
        fresh = [i for i, rel in enumerate(unlike) if rel in set(heldout["unlike_never_trained"])]
        for side in EVAL_SIDES:
            arrays[f"unlikefresh_{side}"] = arrays[f"unlike_{side}"][fresh]
        crops = []
        for rel in standard:
            rng = np.random.default_rng(_seed_for(rel, seed + 1))
            image = load_image(root / rel).rgb
            for _ in range(val_crops):
                crops.append(image_to_tokens(random_crop(image, rng), palette, SIDE))
        arrays["heldout_crops_32"] = np.stack(crops)
    spec = pool_spec(views_per_source, seed, heldout)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp.npz")
    np.savez(
        tmp,
        spec=np.array(json.dumps(spec)),
        train_sources=np.array(train),
        standard_sources=np.array(standard),
        unlike_sources=np.array(unlike),
        **arrays,
    )
    os.replace(tmp, out)
    n_tokens = sum(arrays[f"train_{s}"].size for s in SIDES)
    print(
        f"wrote {out}: {n_tokens / 1e6:.1f}M training tokens, spec {json.dumps(spec)}", flush=True
    )


def native_crops(args: tuple[Path, str, int, int, np.ndarray]) -> np.ndarray:
    """`count` seeded 32x32 crops of one photo at its own scale [count, 1024] (uint16),
    each flipped left-right half the time; photos under 32 pixels on a side give none."""
    root, relative, count, seed, palette = args
    rng = np.random.default_rng(_seed_for(relative, seed))
    rgb = np.asarray(load_image(root / relative).rgb, dtype=np.uint8)
    height, width = rgb.shape[:2]
    if height < SIDE or width < SIDE:
        return np.zeros((0, SIDE * SIDE), np.uint16)
    crops = []
    for _ in range(count):
        top = int(rng.integers(0, height - SIDE + 1))
        left = int(rng.integers(0, width - SIDE + 1))
        crop = rgb[top : top + SIDE, left : left + SIDE]
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        crops.append(pixels_to_tokens(np.ascontiguousarray(crop), palette).astype(np.uint16))
    return np.stack(crops)


def build_native(
    root: Path, out: Path, crops_per_source: int, val_crops: int, seed: int, workers: int
) -> None:
    """The native-scale pool: `train_native_32` from the training sources and
    `heldout_native_32` (val_crops per standard held-out photo) to evaluate on."""
    palette = np.load(PALETTE_PATH)
    heldout = load_heldout()
    train, standard, _ = split_sources(root, heldout)
    with ProcessPoolExecutor(workers) as pool:
        jobs = [(root, rel, crops_per_source, seed, palette) for rel in train]
        train_crops = np.concatenate(list(pool.map(native_crops, jobs, chunksize=4)))
        jobs = [(root, rel, val_crops, seed + 1, palette) for rel in standard]
        val = np.concatenate(list(pool.map(native_crops, jobs, chunksize=4)))
    order = np.random.default_rng(seed).permutation(len(train_crops))
    spec = {
        "version": 1,
        "kind": "native",
        "crops_per_source": crops_per_source,
        "val_crops": val_crops,
        "seed": seed,
        "heldout_sha": pool_spec(0, seed, heldout)["heldout_sha"],
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp.npz")
    np.savez(
        tmp,
        spec=np.array(json.dumps(spec)),
        train_native_32=train_crops[order],
        heldout_native_32=val,
    )
    os.replace(tmp, out)
    print(f"wrote {out}: {len(train_crops)} training crops, {len(val)} held-out", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    held = sub.add_parser("heldout", help="write export/data/heldout.json")
    held.add_argument("--data", type=Path, default=default_data_root())
    held.add_argument("--out", type=Path, default=HELDOUT_PATH)
    pool = sub.add_parser("pool", help="build the tokenized training and validation pool")
    pool.add_argument("--data", type=Path, default=default_data_root())
    pool.add_argument("--out", type=Path, default=Path("runs/pool_v2.npz"))
    pool.add_argument("--views-per-source", type=int, default=128)
    pool.add_argument("--val-crops", type=int, default=4)
    pool.add_argument("--seed", type=int, default=1234)
    pool.add_argument("--workers", type=int, default=1)
    native = sub.add_parser("native", help="build the native-scale 32x32 crop pool")
    native.add_argument("--data", type=Path, default=default_data_root())
    native.add_argument("--out", type=Path, default=Path("runs/native_v1.npz"))
    native.add_argument("--crops-per-source", type=int, default=64)
    native.add_argument("--val-crops", type=int, default=4)
    native.add_argument("--seed", type=int, default=4321)
    native.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    if args.command == "native":
        build_native(
            args.data, args.out, args.crops_per_source, args.val_crops, args.seed, args.workers
        )
    elif args.command == "heldout":
        result = make_heldout(args.data)
        args.out.write_text(json.dumps(result, indent=1) + "\n")
        print(
            f"wrote {args.out}: {len(result['standard'])} standard, {len(result['unlike'])} "
            f"unlike (M3 >= {result['definition']['m3_threshold']})"
        )
    else:
        build(args.data, args.out, args.views_per_source, args.val_crops, args.seed, args.workers)


if __name__ == "__main__":
    main()
