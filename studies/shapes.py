"""The speed side of the shape study (issue 10): exact-profile decode tokens/s at batch 16
on 1 thread for candidate shapes, against the floor of 5,000 tokens/s.

Speed does not depend on the weights, so each candidate is a seeded random ImageGPT of
that shape, exported to the exact profile (16 calibration photos), and timed stepping a
whole 1024-token sequence at batch 16, interleaved with the shipped bundle so a noisy
machine shifts both alike. Bits per shape need real training budgets and are not here.

    python -m studies.shapes --json docs/bench-results/shapes.json

Status: a one-off study, kept to rerun; nothing imports it.
Result: docs/bench-results/shapes.json; the shape chosen is in docs/training.md.


"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from igpt_codec.runtime.bundle import load_bundle
from igpt_codec.runtime.contract import SOS
from igpt_codec.runtime.exact_runner import ExactTokenModel

CANDIDATES = [(96, 3, 2), (80, 4, 2), (96, 4, 2), (112, 3, 2), (128, 2, 2), (128, 3, 2)]
FLOOR = 5000.0


def decode_rate(model: ExactTokenModel, batch: int = 16, steps: int = 1024) -> float:
    """Tokens per second stepping `steps` positions of `batch` sequences, 1 token a call."""
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 512, (batch, steps))
    state = model.start(batch)
    feed = np.full((batch, 1), SOS)
    start = time.perf_counter()
    for t in range(steps):
        _, state = model.run(feed, np.full((batch, 1), t), state)
        feed = tokens[:, t : t + 1]
    return batch * steps / (time.perf_counter() - start)


def main() -> None:
    from igpt_codec.export.make_random_checkpoint import write_random_checkpoint
    from igpt_codec.export.onnx_export import export_bundle

    parser = argparse.ArgumentParser(prog="python -m studies.shapes", description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    shipped = ExactTokenModel(load_bundle(), threads=1)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n_embd, n_layer, n_head in CANDIDATES:
            name = f"{n_embd}x{n_layer}x{n_head}"
            ckpt = write_random_checkpoint(
                Path(tmp) / name, n_embd=n_embd, n_layer=n_layer, n_head=n_head, seed=1
            )
            export_bundle(str(ckpt), Path(tmp) / f"{name}-bundle", calibration_images=16)
            bundle = load_bundle(Path(tmp) / f"{name}-bundle")
            model = ExactTokenModel(bundle, threads=1)
            ours, theirs = [], []
            for _ in range(args.rounds):
                ours.append(decode_rate(model))
                theirs.append(decode_rate(shipped))
            rate, reference = float(np.median(ours)), float(np.median(theirs))
            params = 513 * n_embd * 2 + 1024 * n_embd + n_layer * (12 * n_embd**2 + 13 * n_embd)
            row = {
                "shape": name,
                "parameters": params,
                "decode_tok_s_b16_1t": rate,
                "shipped_tok_s_same_rounds": reference,
                "ratio_to_shipped": rate / reference,
                "meets_floor": rate >= FLOOR,
                "model_onnx_bytes": (bundle.path / "model.onnx").stat().st_size,
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    if args.json:
        args.json.write_text(json.dumps({"floor": FLOOR, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
