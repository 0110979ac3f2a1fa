"""Train the shipped default model: ImageGPT architecture, ImageGPT palette, on 2 CPU cores.

Engineering for a 2-core CPU (each measured, see docs/training.md):
- the lean module in export/igpt_torch.py (SDPA attention, no cache objects)
  instead of transformers' eager ImageGPT; its state dict loads unchanged into
  ImageGPTForCausalImageModeling for export;
- tokens precomputed once by export/train_data.py;
- colour-aware initialisation: token embeddings and output rows start as
  functions of the palette colour (so the output starts as a Gaussian-like bump
  around a predicted colour), position embeddings start as 2-D (row, column)
  sinusoids; only the starting point changes, not the architecture;
- warm-up then cosine learning-rate decay, AdamW, gradient clipping;
- resumable checkpoints written atomically; a time budget ends a run cleanly.

Run in the background, e.g.
    nohup python export/train.py --preset small --out runs/small --minutes 90 > small.log 2>&1 &
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from export.igpt_torch import IGPT, IGPTShape, to_transformers
from export.make_random_checkpoint import write_preprocessor_config

SOS = 512
LN2 = math.log(2.0)
PALETTE_PATH = Path(__file__).parent / "data" / "imagegpt_clusters.npy"

PRESETS: dict[str, IGPTShape] = {
    "micro": IGPTShape(n_embd=32, n_layer=1, n_head=2),  # tests only
    "tiny": IGPTShape(n_embd=96, n_layer=3, n_head=2),
    "small": IGPTShape(n_embd=128, n_layer=4, n_head=2),
    "medium": IGPTShape(n_embd=192, n_layer=6, n_head=3),
    "large": IGPTShape(n_embd=256, n_layer=8, n_head=8),
}


def colour_aware_init(model: IGPT, palette: np.ndarray, seed: int) -> None:
    """Start embeddings and output rows from colour geometry instead of pure noise.

    Output row i gets [P c_i, -|c_i|^2 / 2 u] so that a hidden state h = P mu + u
    gives logit_i = -|mu - c_i|^2 / 2 + const: a bump around a predicted colour mu.
    """
    gen = torch.Generator().manual_seed(seed)
    d = model.shape.n_embd
    colours = torch.as_tensor(palette, dtype=torch.float32)  # (512, 3)
    basis, _ = torch.linalg.qr(torch.randn(d, 4, generator=gen))  # orthonormal columns
    proj, unit = basis[:, :3], basis[:, 3]
    with torch.no_grad():
        wte = model.transformer.wte.weight
        wte[:512] += 0.5 * colours @ proj.T
        head = model.lm_head.weight
        head += 2.0 * (colours @ proj.T - 0.5 * (colours**2).sum(1, keepdim=True) * unit)
        wpe = model.transformer.wpe.weight
        n_pos = wpe.shape[0]
        side = round(math.sqrt(n_pos))
        pos = torch.arange(n_pos)
        rows, cols = (pos // side).float(), (pos % side).float()
        n_freq = max(1, min(8, d // 8))
        feats = []
        for k in range(n_freq):
            freq = math.pi / side * (2**k) / 2
            feats += [torch.sin(rows * freq), torch.cos(rows * freq)]
            feats += [torch.sin(cols * freq), torch.cos(cols * freq)]
        feat = torch.stack(feats, 1)  # (n_pos, 4 n_freq)
        mix = torch.randn(feat.shape[1], d, generator=gen) / math.sqrt(feat.shape[1])
        wpe += 0.3 * feat @ mix


def lr_at(step: int, progress: float, peak: float, warmup: int) -> float:
    """Linear warm-up, then cosine decay to 10% as `progress` (0..1) runs out.

    progress is the larger of steps done / steps planned and time spent / time
    budget, so a run cut short by its time budget still ends with a decayed rate.
    """
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min(1.0, max(0.0, progress))
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def with_sos(tokens: torch.Tensor) -> torch.Tensor:
    """Model input: SOS then all pixels but the last; target: all pixels."""
    sos = torch.full((tokens.shape[0], 1), SOS, dtype=torch.long)
    return torch.cat([sos, tokens[:, :-1]], dim=1)


@torch.no_grad()
def evaluate(model: IGPT, tokens: np.ndarray, batch: int = 32) -> float:
    model.eval()
    total, count = 0.0, 0
    for i in range(0, len(tokens), batch):
        target = torch.as_tensor(tokens[i : i + batch].astype(np.int64))
        logits = model(with_sos(target))
        total += F.cross_entropy(
            logits.reshape(-1, 512), target.reshape(-1), reduction="sum"
        ).item()
        count += target.numel()
    model.train()
    return total / count / LN2


def save_atomic(obj, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def train(args: argparse.Namespace) -> None:
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    pool = np.load(args.pool)
    train_tokens, val_whole, val_crops = pool["train"], pool["val_whole"], pool["val_crops"]
    shape = PRESETS[args.preset]
    model = IGPT(shape)
    colour_aware_init(model, np.load(PALETTE_PATH), args.seed)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "wpe" not in n]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2 or "wpe" in n]
    optimizer = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": args.weight_decay},
            {"params": no_decay, "weight_decay": 0},
        ],
        lr=args.lr,
        betas=(0.9, 0.95),
    )
    step, cursor, history, elapsed = 0, 0, [], 0.0
    ckpt_path = out / "checkpoint.pt"
    if ckpt_path.exists():
        ckpt = torch.load(ckpt_path, weights_only=False)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        step, cursor, history = ckpt["step"], ckpt["cursor"], ckpt["history"]
        elapsed = ckpt.get("elapsed", 0.0)
        print(f"resumed at step {step}", flush=True)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"preset {args.preset} {shape} params {n_params}", flush=True)
    model.train()
    budget = args.minutes * 60
    started = time.time() - elapsed

    def save_checkpoint() -> None:
        """Everything a resumed run needs: weights, optimizer, data cursor, time spent."""
        state = {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "step": step,
            "cursor": cursor,
            "history": history,
            "preset": args.preset,
            "elapsed": time.time() - started,
        }
        save_atomic(state, ckpt_path)

    t_last, tokens_since = time.time(), 0
    while step < args.steps and time.time() - started < budget:
        idx = (cursor + np.arange(args.batch)) % len(train_tokens)
        cursor = int((cursor + args.batch) % len(train_tokens))
        target = torch.as_tensor(train_tokens[idx].astype(np.int64))
        for group in optimizer.param_groups:
            progress = max(step / args.steps, (time.time() - started) / budget)
            group["lr"] = lr_at(step, progress, args.lr, args.warmup)
        logits = model(with_sos(target))
        loss = F.cross_entropy(logits.reshape(-1, 512), target.reshape(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        step += 1
        tokens_since += target.numel()
        if step % args.log_every == 0:
            now = time.time()
            rate = tokens_since / (now - t_last)
            t_last, tokens_since = now, 0
            print(
                f"step {step} train_bpt {loss.item() / LN2:.4f} "
                f"lr {optimizer.param_groups[0]['lr']:.2e} tok/s {rate:.0f}",
                flush=True,
            )
        if step % args.eval_every == 0 or step == args.steps:
            entry = {
                "step": step,
                "tokens_seen": step * args.batch * 1024,
                "val_whole_bpt": evaluate(model, val_whole),
                "val_crops_bpt": evaluate(model, val_crops),
                "time": time.time(),
            }
            history.append(entry)
            print("eval " + json.dumps(entry), flush=True)
            save_checkpoint()
    final = {
        "step": step,
        "val_whole_bpt": evaluate(model, val_whole),
        "val_crops_bpt": evaluate(model, val_crops),
        "params": n_params,
        "preset": args.preset,
        "shape": shape.__dict__,
        "history": history,
    }
    save_checkpoint()
    hf_dir = out / "hf"
    hf = to_transformers(model.eval())
    hf.save_pretrained(hf_dir)
    write_preprocessor_config(hf_dir, np.load(PALETTE_PATH))
    (out / "result.json").write_text(json.dumps(final, indent=1))
    print("final " + json.dumps({k: v for k, v in final.items() if k != "history"}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description="Train the default ImageGPT-architecture model")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="small")
    parser.add_argument("--pool", type=Path, default=Path("runs/token_pool.npz"))
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=4000)
    parser.add_argument("--minutes", type=float, default=1e9)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--weight-decay", type=float, default=0.01)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--log-every", type=int, default=10)
    parser.add_argument("--eval-every", type=int, default=200)
    train(parser.parse_args())


if __name__ == "__main__":
    main()
