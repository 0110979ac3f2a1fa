"""A shallower model warm-started from the committed checkpoint (issue 23's model lever).

Why: at batch 12 a step of the exact graph is mostly per-node cost, and a layer is about
85 of its ~300 nodes: a 96 x 2 model steps about 30% faster than the shipped 96 x 3
(docs/speed.md, "Session 27"). Whether its bits can come back within the issue's 0.5% is
what training must show. This derives the starting point: the committed checkpoint with
its last blocks dropped (weights and EMA weights), a fresh AdamW state for the remaining
parameters, the same data cursors, pool spec, attention span and history, and a schedule
that re-warms from the checkpoint's step and cools down over `--steps`. Then train with
export/train.py's resume path:

    python -m studies.shallow_model --layers 2 --steps 6000 --out runs/shallow2/seed.pt
    nohup nice -n 19 python export/train.py --out runs/shallow2 \\
        --resume-from runs/shallow2/seed.pt --threads 1 > runs/shallow2.log 2>&1 &

Its evaluations (val_whole_bpt, val_crops_bpt every 500 steps) compare with the shipped
model's 3.3577 and 2.9953 at step 19,000 (codec/models/default_training.json).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
from pathlib import Path

import torch

from igpt_codec.export.igpt_torch import IGPT, IGPTShape
from igpt_codec.export.train import CHECKPOINT_FILE, load_checkpoint, make_optimizer, save_atomic


def _kept(state: dict, layers: int) -> dict:
    """A state dict without the blocks from `layers` on."""
    out = {}
    for key, value in state.items():
        parts = key.split(".")
        if len(parts) > 2 and parts[1] == "h" and int(parts[2]) >= layers:
            continue
        out[key] = value
    return out


def derive(ckpt: dict, layers: int, steps: int, rewarm: int) -> dict:
    """The checkpoint with only its first `layers` blocks, ready for train.py to resume."""
    shape = IGPTShape(**ckpt["shape"])
    if not 1 <= layers < shape.n_layer:
        raise SystemExit(f"--layers must be 1..{shape.n_layer - 1}, got {layers}")
    new_shape = dataclasses.replace(shape, n_layer=layers)
    model, ema = IGPT(new_shape), IGPT(new_shape)
    model.load_state_dict(_kept(ckpt["ema"], layers))  # train from the averaged weights
    ema.load_state_dict(_kept(ckpt["ema"], layers))
    optimizer = make_optimizer(model, ckpt["schedule"]["peak"], ckpt["weight_decay"])
    out = copy.copy(ckpt)
    out["shape"] = dict(new_shape.__dict__)
    out["model"], out["ema"] = model.state_dict(), ema.state_dict()
    out["optimizer"] = optimizer.state_dict()
    start = ckpt["step"]
    out["schedule"] = {
        **ckpt["schedule"],
        "total_steps": start + steps,
        "decay_steps": steps // 2,
        "rewarm": {"start": start, "steps": rewarm},
    }
    out["provenance"] = {
        **ckpt.get("provenance", {}),
        "derived": f"first {layers} of {shape.n_layer} blocks of the checkpoint at step {start}",
    }
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", type=Path, default=CHECKPOINT_FILE)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--steps", type=int, default=6000, help="steps to train from here")
    parser.add_argument("--rewarm", type=int, default=200)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    derived = derive(load_checkpoint(args.checkpoint), args.layers, args.steps, args.rewarm)
    save_atomic(derived, args.out)
    print(f"wrote {args.out}: {derived['shape']}, schedule {derived['schedule']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
