"""What a shorter attention span costs in bits, and what it saves in a decode step.

Issue 23 (speed) found a decode step bound by the key/value cache it reads: every token
attends to every earlier token of its 32x32 window (up to 1,023 positions). A model that
attends only to the last S positions reads at most S. Two sides, measured here before any
retraining:

- **bits**: the shipped model's float EMA weights (export/checkpoint/default_model.pt),
  evaluated with a banded causal mask (token t sees t-S+1..t; SOS drops out of view once
  t >= S) on held-out photos: 32x32 thumbnails and 32x32 crops at native scale, as the
  full-resolution coder feeds windows. Untrained for the band, so the loss is an upper
  bound of what a fine-tune would leave.
- **step time**: the shipped exact graph stepped at past length S against past lengths
  up to 1,023 (batch 1 and 16, 1 thread), interleaved, median of rounds: what a step
  costs when the cache it reads holds S positions (the graph itself is unchanged, so this
  isolates the cache's bytes).

    python -m studies.attention_span --photos 24 --spans 64,128,256,1024 \\
        --out docs/bench-results/attention_span.json

Status: a study for issue 23, to choose a span before training one (needs torch).
Result: docs/bench-results/attention_span.json and docs/speed.md.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from igpt_codec.core.images import load_image
from igpt_codec.core.palette import image_to_tokens, pixels_to_tokens
from igpt_codec.export import igpt_torch
from igpt_codec.export.train import load_checkpoint, position_ids, restore, with_sos
from igpt_codec.export.train_data import default_data_root, load_heldout
from igpt_codec.runtime.bundle import load_bundle
from igpt_codec.runtime.contract import SOS
from igpt_codec.runtime.exact_runner import ExactTokenModel
from igpt_codec.runtime.positions import GRID

CHECKPOINT = Path(__file__).resolve().parents[1] / "export" / "checkpoint" / "default_model.pt"
LN2 = math.log(2)


def banded(span: int):
    """forward_train with a banded causal mask: each query sees its last `span` positions."""

    def forward_train(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = (self._heads(z) for z in self.c_attn(x).split(c, dim=2))
        i = torch.arange(t)
        visible = (i[None, :] <= i[:, None]) & (i[:, None] - i[None, :] < span)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=visible, scale=1.0 / self.divisor)
        return self.c_proj(y.transpose(1, 2).reshape(b, t, c))

    return forward_train


def heldout_tokens(photos: int, palette: np.ndarray, seed: int = 7) -> dict[str, np.ndarray]:
    """32x32 thumbnails and one native-scale 32x32 crop per held-out photo."""
    root = default_data_root()
    names = sorted(load_heldout()["standard"])[:photos]
    rng = np.random.default_rng(seed)
    thumbs, crops = [], []
    for name in names:
        loaded = load_image(root / name)
        thumbs.append(image_to_tokens(loaded.rgb, palette, 32).reshape(-1))
        rgb = np.asarray(loaded.rgb)
        h, w = rgb.shape[:2]
        r, c = rng.integers(0, h - 31), rng.integers(0, w - 31)
        crops.append(pixels_to_tokens(rgb[r : r + 32, c : c + 32], palette).reshape(-1))
    return {"thumbnails": np.stack(thumbs), "native_crops": np.stack(crops)}


@torch.no_grad()
def bits(model, tokens: np.ndarray) -> float:
    target = torch.as_tensor(tokens.astype(np.int64))
    logits = model(with_sos(target), position_ids(32, GRID))
    loss = F.cross_entropy(logits.reshape(-1, 512), target.reshape(-1), reduction="sum")
    return loss.item() / target.numel() / LN2


def step_seconds(pasts: list[int], batches: list[int], rounds: int) -> dict[str, float]:
    """Median seconds per exact decode step at each (batch, past length), interleaved."""
    bundle = load_bundle(None)
    model = ExactTokenModel(bundle, threads=1)
    times: dict[str, list[float]] = {f"b{b}_p{p}": [] for b in batches for p in pasts}
    for _ in range(rounds):
        for b in batches:
            for p in pasts:
                state = model.start(b)
                ids = np.full((b, p), SOS, np.int64)
                if p:
                    pos = np.broadcast_to(np.arange(p) % 1024, (b, p))
                    _, state = model.run(ids, pos, state)
                stepper = model.stepper(state)
                tokens = np.zeros(b, np.int64)
                start = time.perf_counter()
                for k in range(16):
                    stepper.step(tokens, (p + k) % 1024)
                times[f"b{b}_p{p}"].append((time.perf_counter() - start) / 16)
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m studies.attention_span", description=__doc__)
    parser.add_argument("--photos", type=int, default=24)
    parser.add_argument("--spans", default="64,128,256,1024")
    parser.add_argument("--pasts", default="64,128,256,512,960")
    parser.add_argument("--batches", default="1,16")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)
    _, ema, _ = restore(load_checkpoint(CHECKPOINT))
    ema.eval()
    palette = load_bundle(None).palette
    sets = heldout_tokens(args.photos, palette)
    original = igpt_torch.Attention.forward_train
    result: dict[str, object] = {"photos": args.photos, "bits": {}}
    for span in map(int, args.spans.split(",")):
        igpt_torch.Attention.forward_train = banded(span)
        result["bits"][str(span)] = {name: bits(ema, t) for name, t in sets.items()}
        print(span, result["bits"][str(span)], flush=True)
    igpt_torch.Attention.forward_train = original
    pasts = [int(p) for p in args.pasts.split(",")]
    batches = [int(b) for b in args.batches.split(",")]
    result["step_seconds"] = step_seconds(pasts, batches, args.rounds)
    print(json.dumps(result["step_seconds"], indent=1))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
