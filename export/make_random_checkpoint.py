"""Write a random-weights ImageGPT checkpoint directory of a chosen shape.

Why: the hub is unreachable here and the real checkpoints are large, yet tests,
export timings and codec benchmarks need checkpoints with the real layout
(`save_pretrained` output plus a `preprocessor_config.json` holding the colour
clusters). Random weights give flat next-token distributions, which would hide
coding bugs that only show with confident predictions, so `lm_head_scale`
sharpens them.

Usage: python -m igpt_codec.export.make_random_checkpoint OUT_DIR [--n-embd 512 --n-layer 24 ...]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

CLUSTERS_PATH = Path(__file__).parent / "data" / "imagegpt_clusters.npy"


def write_preprocessor_config(out_dir: Path, clusters: np.ndarray) -> Path:
    """The image-processor file transformers writes, with ImageGPT's 32x32 input size."""
    config = {
        "image_processor_type": "ImageGPTImageProcessor",
        "clusters": [[float(v) for v in row] for row in np.asarray(clusters, dtype=np.float32)],
        "do_color_quantize": True,
        "do_normalize": True,
        "do_resize": True,
        "resample": 2,
        "size": {"height": 32, "width": 32},
    }
    path = out_dir / "preprocessor_config.json"
    path.write_text(json.dumps(config, indent=1))
    return path


def write_random_checkpoint(
    out_dir: Path,
    *,
    n_embd: int = 512,
    n_layer: int = 24,
    n_head: int = 8,
    n_positions: int = 1024,
    seed: int = 0,
    lm_head_scale: float = 1.0,
    clusters: np.ndarray | None = None,
    with_preprocessor: bool = True,
) -> Path:
    """Save an ImageGPTForCausalImageModeling with seeded random weights; returns out_dir.

    `clusters=None` uses the ImageGPT clusters the project ships; `with_preprocessor=False`
    leaves the palette out, as a checkpoint saved without its image processor would.
    """
    from transformers import ImageGPTConfig, ImageGPTForCausalImageModeling

    config = ImageGPTConfig(
        n_embd=n_embd, n_layer=n_layer, n_head=n_head, n_positions=n_positions, vocab_size=513
    )
    torch.manual_seed(seed)
    model = ImageGPTForCausalImageModeling(config).eval()
    if lm_head_scale != 1.0:
        with torch.no_grad():
            model.lm_head.weight.mul_(lm_head_scale)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    if with_preprocessor:
        palette = np.load(CLUSTERS_PATH) if clusters is None else clusters
        write_preprocessor_config(out_dir, palette)
    return out_dir


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--n-embd", type=int, default=512)
    parser.add_argument("--n-layer", type=int, default=24)
    parser.add_argument("--n-head", type=int, default=8)
    parser.add_argument("--n-positions", type=int, default=1024)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lm-head-scale", type=float, default=1.0)
    parser.add_argument("--no-preprocessor", action="store_true")
    args = parser.parse_args(argv)
    write_random_checkpoint(
        args.out_dir,
        n_embd=args.n_embd,
        n_layer=args.n_layer,
        n_head=args.n_head,
        n_positions=args.n_positions,
        seed=args.seed,
        lm_head_scale=args.lm_head_scale,
        with_preprocessor=not args.no_preprocessor,
    )
    print(args.out_dir)


if __name__ == "__main__":
    main()
