"""Decode speed of several bundles side by side: the model-size choice in numbers.

Each bundle runs whole 32x32 images (1024 decoder steps with the KV cache) through
its profile's runner (`ExactTokenModel` for exact bundles, `TokenModel` for float
ones; bench.runners) at each batch size, model steps only; the bundles take turns,
round after round, so load on a shared machine falls on all of them alike. Prints and
optionally writes JSON with the median tokens/s per bundle and batch.

    python -m studies.model_sizes runs/sizes/tiny runs/sizes/small runs/sizes/medium \\
        --json sizes.json

Status: a one-off study, kept to rerun; nothing imports it.
Result: docs/bench-results/model_sizes.json; the choice is in docs/training.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

from bench.runners import StepRunner
from igpt_codec.runtime.bundle import load_bundle


def image_seconds(model: StepRunner, batch: int, steps: int, seed: int) -> float:
    """Wall time for `steps` decoding steps of `batch` sequences fed random tokens."""
    rng = np.random.default_rng(seed)
    state = model.start(batch)
    tokens = np.full(batch, 512, dtype=np.int64)
    start = time.perf_counter()
    for position in range(steps):
        _, state = model.model_step(tokens, state, position)
        tokens = rng.integers(0, 512, size=batch, dtype=np.int64)
    return time.perf_counter() - start


def compare(bundles: list[Path], batches: list[int], rounds: int, threads: int) -> dict:
    models = {str(p): StepRunner(load_bundle(p), threads=threads) for p in bundles}
    steps = {str(p): load_bundle(p).n_positions for p in bundles}
    times: dict[str, dict[int, list[float]]] = {k: {b: [] for b in batches} for k in models}
    for r in range(rounds):
        for batch in batches:
            for name, model in models.items():
                times[name][batch].append(image_seconds(model, batch, steps[name], seed=r))
    result: dict = {"threads": threads, "rounds": rounds, "bundles": {}}
    for name, per_batch in times.items():
        manifest = load_bundle(name).manifest
        entry = {
            "profile": manifest["profile"],
            "model": manifest["model"],
            "model_onnx_bytes": manifest["files"]["model.onnx"]["bytes"],
            "tokens_per_s": {},
        }
        for batch, ts in per_batch.items():
            entry["tokens_per_s"][str(batch)] = batch * steps[name] / statistics.median(ts)
        result["bundles"][name] = entry
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundles", nargs="+", type=Path)
    parser.add_argument("--batches", default="1,16")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    batches = [int(b) for b in args.batches.split(",")]
    result = compare(args.bundles, batches, args.rounds, args.threads)
    text = json.dumps(result, indent=1)
    print(text)
    if args.json:
        args.json.write_text(text)


if __name__ == "__main__":
    main()
