"""Training tokens/s: transformers' eager ImageGPT against the lean SDPA module, side by side.

Both get the same config, batch and optimizer; their steps alternate in one
process, so machine noise hits both alike and the ratio is meaningful even on a
busy 2-core machine. Needs the export extra (torch, transformers).

    python -m studies.train_speed --n-embd 128 --n-layer 4 --n-head 4 --batch 4 --steps 4

Status: a one-off study, kept to rerun; nothing imports it.
Result: the training speed figures in docs/training.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F
from transformers import ImageGPTConfig, ImageGPTForCausalImageModeling

from igpt_codec.export.igpt_torch import IGPT, IGPTShape
from igpt_codec.export.train import with_sos


def _step(model, target: torch.Tensor, optimizer, lean: bool) -> float:
    start = time.perf_counter()
    inputs = with_sos(target)
    if lean:
        logits = model(inputs)
    else:
        positions = torch.arange(inputs.shape[1]).unsqueeze(0)
        logits = model(inputs, position_ids=positions, use_cache=False).logits
    loss = F.cross_entropy(logits.reshape(-1, 512), target.reshape(-1))
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return time.perf_counter() - start


def measure(n_embd: int, n_layer: int, n_head: int, batch: int, steps: int, threads: int) -> dict:
    torch.manual_seed(0)
    torch.set_num_threads(threads)
    shape = IGPTShape(n_embd=n_embd, n_layer=n_layer, n_head=n_head)
    config = ImageGPTConfig(
        **shape.to_config_kwargs(), resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0
    )
    config._attn_implementation = "eager"
    models = {
        "transformers_eager": ImageGPTForCausalImageModeling(config),
        "lean_sdpa": IGPT(shape),
    }
    optimizers = {k: torch.optim.AdamW(m.parameters(), lr=1e-3) for k, m in models.items()}
    target = torch.randint(0, 512, (batch, 1024))
    times: dict[str, list[float]] = {k: [] for k in models}
    for i in range(steps + 1):
        for name, model in models.items():
            t = _step(model, target, optimizers[name], lean=name == "lean_sdpa")
            if i:  # the first step of each warms allocators and kernels
                times[name].append(t)
    tokens = batch * 1024
    result = {
        "config": {"n_embd": n_embd, "n_layer": n_layer, "n_head": n_head, "batch": batch},
        "threads": threads,
        "steps": steps,
    }
    for name, ts in times.items():
        median = statistics.median(ts)
        result[name] = {"median_s_per_step": median, "tokens_per_s": tokens / median}
    result["speedup"] = (
        result["lean_sdpa"]["tokens_per_s"] / result["transformers_eager"]["tokens_per_s"]
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-embd", type=int, default=128)
    parser.add_argument("--n-layer", type=int, default=4)
    parser.add_argument("--n-head", type=int, default=4)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    result = measure(args.n_embd, args.n_layer, args.n_head, args.batch, args.steps, args.threads)
    text = json.dumps(result, indent=1)
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
