"""What the exact graph with an attention span (ring cache) costs per step, against today's.

Issue 23: a decode step reads its whole key/value cache. The span graph
(export/exact_graph.py, contract exact-int-v1-span) reads a ring of S slots instead.
Measured here on a random model of the shipped shape (96 wide, 3 layers, 2 heads; the
step time does not depend on the weights), both graphs exported from the same weights:

- **decode**: seconds to step one whole 1,024-token window (past 0..1023) through the
  stepper (IOBinding), at batch 1, 16 and 32, 1 thread;
- **encode**: the whole-window call (seq 1,024 at past 0) at batch 1 and 8, and, for the
  span graph, the same window fed in chunks of S tokens through the ring (the graph
  accepts any past and seq), which computes an S-wide band of scores instead of the
  1,024^2 triangle.

Rounds interleave the variants (the machine is shared: ratios within a round are what
counts); the median of the rounds is reported, with node counts of both graphs.

    python -m studies.attention_span_graph --rounds 3 \\
        --out docs/bench-results/attention_span_graph.json

Status: a study for issue 23 (needs torch for the export). Result: docs/speed.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx

from igpt_codec.export.exact_export import load_calibration
from igpt_codec.export.make_random_checkpoint import write_random_checkpoint
from igpt_codec.export.onnx_export import export_bundle
from igpt_codec.runtime.bundle import load_bundle
from igpt_codec.runtime.contract import SOS
from igpt_codec.runtime.exact_runner import ExactTokenModel
from igpt_codec.runtime.positions import GRID, positions

SHAPE = {"n_embd": 96, "n_layer": 3, "n_head": 2, "n_positions": 1024}
WINDOW = 1024


def window_ids(batch: int) -> np.ndarray:
    """SOS + tokens of real photos (check set), repeated to `batch` rows."""
    tokens = load_calibration()[1]
    rows = np.concatenate([np.full((len(tokens), 1), SOS), tokens[:, :-1]], axis=1)
    return rows[np.arange(batch) % len(rows)]


def decode_window(model: ExactTokenModel, ids: np.ndarray) -> float:
    """Seconds to step positions 0..1023 of `ids` (the decoder's loop, IOBinding)."""
    pos = positions(32, GRID)
    stepper = model.stepper(model.start(len(ids)))
    start = time.perf_counter()
    for t in range(WINDOW):
        stepper.step(ids[:, t], int(pos[t]))
    return time.perf_counter() - start


def encode_window(model: ExactTokenModel, ids: np.ndarray, chunk: int | None = None) -> float:
    """Seconds for the tables of a whole window: one call, or calls of `chunk` tokens."""
    pos = np.broadcast_to(positions(32, GRID), ids.shape)
    start = time.perf_counter()
    if chunk is None:
        model.run(ids, pos, model.start(len(ids)), keep_cache=False)
    else:
        state = model.start(len(ids))
        for lo in range(0, WINDOW, chunk):
            _, state = model.run(ids[:, lo : lo + chunk], pos[:, lo : lo + chunk], state)
    return time.perf_counter() - start


def node_count(bundle: Path) -> int:
    return len(onnx.load(str(bundle / "model.onnx"), load_external_data=False).graph.node)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--span", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batches", default="1,16,32")
    parser.add_argument("--encode-batches", default="1,8")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    batches = [int(b) for b in args.batches.split(",")]
    encode_batches = [int(b) for b in args.encode_batches.split(",")]

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        ckpt = write_random_checkpoint(root / "ckpt", **SHAPE, seed=0, lm_head_scale=10.0)
        bundles = {"full": root / "full", "span": root / "span"}
        export_bundle(str(ckpt), bundles["full"], calibration_images=16)
        export_bundle(str(ckpt), bundles["span"], calibration_images=16, attention_span=args.span)
        models = {k: ExactTokenModel(load_bundle(p), threads=1) for k, p in bundles.items()}
        nodes = {k: node_count(p) for k, p in bundles.items()}

        decode: dict[int, dict[str, list[float]]] = {b: {"full": [], "span": []} for b in batches}
        encode: dict[int, dict[str, list[float]]] = {
            b: {"full": [], "span": [], "span_chunked": []} for b in encode_batches
        }
        for r in range(args.rounds):
            for b in batches:
                ids = window_ids(b)
                order = ["full", "span"] if r % 2 == 0 else ["span", "full"]
                for name in order:
                    decode[b][name].append(decode_window(models[name], ids))
            for b in encode_batches:
                ids = window_ids(b)
                encode[b]["full"].append(encode_window(models["full"], ids))
                encode[b]["span"].append(encode_window(models["span"], ids))
                encode[b]["span_chunked"].append(encode_window(models["span"], ids, args.span))
            print(f"round {r + 1}/{args.rounds} done", flush=True)

    def med(xs: list[float]) -> float:
        return round(statistics.median(xs), 4)

    result = {
        "study": "studies/attention_span_graph.py",
        "what": "exact graph, full attention vs attention span (ring cache), same weights",
        "model": SHAPE | {"weights": "random (seed 0), step time does not depend on them"},
        "span": args.span,
        "threads": 1,
        "rounds": args.rounds,
        "load_average": round(os.getloadavg()[0], 2),
        "graph_nodes": nodes,
        "decode_window_s": {
            str(b): {
                "full": med(v["full"]),
                "span": med(v["span"]),
                "ms_per_step_full": round(1000 * med(v["full"]) / WINDOW, 3),
                "ms_per_step_span": round(1000 * med(v["span"]) / WINDOW, 3),
                "speedup": round(med(v["full"]) / med(v["span"]), 3),
                "tokens_per_s_span": round(b * WINDOW / med(v["span"]), 1),
                "tokens_per_s_full": round(b * WINDOW / med(v["full"]), 1),
            }
            for b, v in decode.items()
        },
        "encode_window_s": {
            str(b): {
                "full": med(v["full"]),
                "span": med(v["span"]),
                "span_chunked": med(v["span_chunked"]),
                "speedup_span": round(med(v["full"]) / med(v["span"]), 3),
                "speedup_span_chunked": round(med(v["full"]) / med(v["span_chunked"]), 3),
            }
            for b, v in encode.items()
        },
        "raw": {"decode": decode, "encode": encode},
    }
    text = json.dumps(result, indent=2) + "\n"
    print(text)
    if args.out:
        tmp_out = args.out.with_name(args.out.name + ".partial")
        tmp_out.write_text(text)
        tmp_out.replace(args.out)


if __name__ == "__main__":
    main()
