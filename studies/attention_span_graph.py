"""What the exact graph with an attention span (ring cache) costs per step, against today's.

Issue 23: a decode step reads its whole key/value cache. The span graph
(export/exact_graph.py, contract exact-int-v1-span) reads a ring of S slots instead.
Measured here on a random model of the shipped shape (96 wide, 3 layers, 2 heads; the
step time does not depend on the weights), every graph exported from the same weights:

- `full`: the full-attention graph (contract exact-int-v1, what ships today);
- `span_before`: the span graph as first built (exact_graph.py at --before-rev, loaded from
  git and used for that export only), run as the runner then ran it;
- `span`: the span graph of this checkout (fewer nodes), through this checkout's runner.

- **decode**: seconds to step one whole 1,024-token window (past 0..1023) through the
  stepper (IOBinding), at batch 1, 16 and 32, 1 thread;
- **encode**: one window's tables at batch 1 and 8: `full` and `span_before` in one call
  (seq 1,024 at past 0, what the encoders did), `span_before_chunked` fed by the caller in
  chunks of S through the ring, and `span` through `ExactTokenModel.run` (which now cuts a
  span bundle's long sequences into chunks of S itself).

Rounds interleave the variants (the machine is shared: ratios within a round are what
counts); the median of the rounds is reported, and each ratio is the median of the
per-round ratios, with node counts of every graph. With --profile, onnxruntime's profiler
also gives one step's kernel time by op type; with --mem-pattern, the span graph runs a
second time in a session with onnxruntime's memory pattern on (`span_mem_pattern`: the
codec's sessions have it off, runtime/session.py).

    nice -n 10 python -m studies.attention_span_graph --rounds 5 \\
        --out docs/bench-results/attention_span_graph_nodes.json

Status: a study for issue 23 (needs torch for the export and git for --before-rev).
Results: docs/speed.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import tempfile
import time
import types
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from igpt_codec.export import exact_export
from igpt_codec.export.exact_export import load_calibration
from igpt_codec.export.make_random_checkpoint import write_random_checkpoint
from igpt_codec.export.onnx_export import export_bundle
from igpt_codec.runtime.bundle import load_bundle
from igpt_codec.runtime.contract import (
    EXACT_FREQS,
    INPUT_IDS,
    PAST_LENGTH,
    POSITION_IDS,
    SOS,
)
from igpt_codec.runtime.exact_runner import ExactTokenModel
from igpt_codec.runtime.positions import GRID, positions
from igpt_codec.runtime.session import make_session_options

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


def one_call(model: ExactTokenModel, ids: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """A whole window in one graph call at past 0, as run() did before it cut span bundles'
    sequences into chunks (every output fetched, as it then did)."""
    state = model.start(len(ids))
    feeds = {
        INPUT_IDS: ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(ids, np.int64)),
        POSITION_IDS: ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(pos, np.int64)),
        PAST_LENGTH: ort.OrtValue.ortvalue_from_numpy(np.array(0, np.int64)),
    }
    feeds.update(zip(model._past_names, state.cache.feeds, strict=True))
    outputs = model.session.run_with_ort_values([EXACT_FREQS, *model._new_names], feeds)
    return outputs[0].numpy().astype(np.int64)


def encode_window(model: ExactTokenModel, ids: np.ndarray, how: str, span: int) -> float:
    """Seconds for the tables of a whole window: `one` graph call, `chunks` of S tokens fed
    by the caller, or `run` (ExactTokenModel.run with keep_cache=False, as the encoders call)."""
    pos = np.broadcast_to(positions(32, GRID), ids.shape)
    start = time.perf_counter()
    if how == "one":
        one_call(model, ids, pos)
    elif how == "chunks":
        state = model.start(len(ids))
        for lo in range(0, WINDOW, span):
            _, state = model.run(ids[:, lo : lo + span], pos[:, lo : lo + span], state)
    else:
        model.run(ids, pos, model.start(len(ids)), keep_cache=False)
    return time.perf_counter() - start


def node_count(bundle: Path) -> int:
    return len(onnx.load(str(bundle / "model.onnx"), load_external_data=False).graph.node)


def graph_builder_at(rev: str):
    """export/exact_graph.py as it was at git revision `rev`, loaded as a module."""
    source = subprocess.run(
        ["git", "show", f"{rev}:export/exact_graph.py"],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[1],
    ).stdout
    module = types.ModuleType(f"exact_graph_{rev}")
    exec(compile(source, f"{rev}:export/exact_graph.py", "exec"), module.__dict__)
    return module


def export_before(ckpt: Path, out: Path, span: int, rev: str) -> None:
    """A span bundle whose graph the exporter at `rev` wrote (same plan: exact_plan.py and
    the calibration are shared); only build_graph is swapped, for this one export."""
    old = graph_builder_at(rev)
    saved = exact_export.build_graph
    exact_export.build_graph = old.build_graph
    try:
        export_bundle(str(ckpt), out, calibration_images=16, attention_span=span)
    finally:
        exact_export.build_graph = saved


def profile_step(bundle: Path, batch: int, steps: int = 300) -> dict:
    """One decode step's kernel time by op type (onnxruntime's profiler, mean of `steps`
    steps from past 0; through a ring every step runs the same work)."""
    loaded = load_bundle(bundle)
    model = ExactTokenModel(loaded, threads=1)
    options = make_session_options(1)
    options.enable_profiling = True
    with tempfile.TemporaryDirectory() as tmp:
        options.profile_file_prefix = str(Path(tmp) / "step")
        model.session = ort.InferenceSession(
            str(loaded.model_path), options, providers=["CPUExecutionProvider"]
        )
        ids, pos = window_ids(batch), positions(32, GRID)
        stepper = model.stepper(model.start(batch))
        for t in range(steps):
            stepper.step(ids[:, t], int(pos[t]))
        events = json.loads(Path(model.session.end_profiling()).read_text())
    by_op: dict[str, list[float]] = {}
    nodes = set()
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            entry = by_op.setdefault(e["args"]["op_name"], [0.0, 0.0])
            entry[0] += e["dur"] / steps
            entry[1] += 1 / steps
            nodes.add(e["name"])
    ranked = sorted(by_op.items(), key=lambda kv: -kv[1][0])
    return {
        "nodes_run": len(nodes),
        "kernel_us_per_step": round(sum(v[0] for v in by_op.values()), 1),
        "by_op_us_and_nodes": {op: [round(v[0], 1), round(v[1])] for op, v in ranked},
    }


def with_mem_pattern(bundle: Path) -> ExactTokenModel:
    """The span model in a session like the codec's but with onnxruntime's memory pattern on.

    Why measured: the codec turns the pattern off because a linear cache changes its shape
    every KV_CHUNK steps (runtime/session.py); a ring keeps one shape, so a decoder's steps
    could reuse one pattern. Memory placement only: the same integers (same_tables checks)."""
    loaded = load_bundle(bundle)
    model = ExactTokenModel(loaded, threads=1)
    options = make_session_options(1)
    options.enable_mem_pattern = True
    model.session = ort.InferenceSession(
        str(loaded.model_path), options, providers=["CPUExecutionProvider"]
    )
    return model


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--span", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batches", default="1,16,32")
    parser.add_argument("--encode-batches", default="1,8")
    parser.add_argument(
        "--before-rev", default="b980df3", help="git revision of the first span graph"
    )
    parser.add_argument("--profile", action="store_true", help="also profile one step by op type")
    parser.add_argument(
        "--mem-pattern",
        action="store_true",
        help="also run the span graph in a session with onnxruntime's memory pattern on",
    )
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    batches = [int(b) for b in args.batches.split(",")]
    encode_batches = [int(b) for b in args.encode_batches.split(",")]
    graphs = ["full", "span_before", "span"]
    encodings = {
        "full": ("full", "one"),
        "span_before": ("span_before", "one"),
        "span_before_chunked": ("span_before", "chunks"),
        "span": ("span", "run"),
    }
    if args.mem_pattern:
        graphs.append("span_mem_pattern")
        encodings["span_mem_pattern"] = ("span_mem_pattern", "run")

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        ckpt = write_random_checkpoint(root / "ckpt", **SHAPE, seed=0, lm_head_scale=10.0)
        bundles = {name: root / name for name in graphs if name != "span_mem_pattern"}
        export_bundle(str(ckpt), bundles["full"], calibration_images=16)
        export_before(ckpt, bundles["span_before"], args.span, args.before_rev)
        export_bundle(str(ckpt), bundles["span"], calibration_images=16, attention_span=args.span)
        models = {k: ExactTokenModel(load_bundle(p), threads=1) for k, p in bundles.items()}
        nodes = {k: node_count(p) for k, p in bundles.items()}
        if args.mem_pattern:
            models["span_mem_pattern"] = with_mem_pattern(bundles["span"])
        same = same_tables(models, args.span)
        profiles = {}
        if args.profile:
            profiles = {
                f"{name}_batch{b}": profile_step(bundles[name], b)
                for name in ("span_before", "span")
                for b in (1, 16)
            }

        decode = {b: {name: [] for name in graphs} for b in batches}
        encode = {b: {name: [] for name in encodings} for b in encode_batches}
        for r in range(args.rounds):
            for b in batches:
                ids = window_ids(b)
                for name in graphs if r % 2 == 0 else graphs[::-1]:
                    decode[b][name].append(decode_window(models[name], ids))
            for b in encode_batches:
                ids = window_ids(b)
                for name in encodings if r % 2 == 0 else list(encodings)[::-1]:
                    graph, how = encodings[name]
                    encode[b][name].append(encode_window(models[graph], ids, how, args.span))
            print(f"round {r + 1}/{args.rounds} done", flush=True)

    def med(xs: list[float]) -> float:
        return statistics.median(xs)

    def paired(slow: list[float], fast: list[float]) -> float:
        """Median over rounds of slow / fast measured in the same round (the load moves
        between rounds on this shared machine; within a round both saw about the same)."""
        return round(statistics.median(a / b for a, b in zip(slow, fast, strict=True)), 3)

    result = {
        "study": "studies/attention_span_graph.py",
        "what": "exact graph: full attention vs the first span graph vs this checkout's span "
        "graph and runner, same weights",
        "model": SHAPE | {"weights": "random (seed 0), step time does not depend on them"},
        "span": args.span,
        "before_rev": args.before_rev,
        "threads": 1,
        "rounds": args.rounds,
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "graph_nodes": nodes,
        "same_tables": same,
        "decode_ms_per_step": {
            str(b): {name: round(1000 * med(v[name]) / WINDOW, 3) for name in graphs}
            | {
                "span_vs_before": paired(v["span_before"], v["span"]),
                "span_vs_full": paired(v["full"], v["span"]),
                "tokens_per_s_span": round(b * WINDOW / med(v["span"]), 1),
            }
            for b, v in decode.items()
        },
        "encode_ms_per_window": {
            str(b): {name: round(1000 * med(v[name]), 2) for name in encodings}
            | {
                "span_vs_before_one_call": paired(v["span_before"], v["span"]),
                "span_vs_before_chunked": paired(v["span_before_chunked"], v["span"]),
                "span_vs_full": paired(v["full"], v["span"]),
            }
            for b, v in encode.items()
        },
        "profile_one_step": profiles,
        "mem_pattern_vs_span": {
            "decode": {str(b): paired(v["span"], v["span_mem_pattern"]) for b, v in decode.items()},
            "encode": {str(b): paired(v["span"], v["span_mem_pattern"]) for b, v in encode.items()},
        }
        if args.mem_pattern
        else None,
        "raw_s": {"decode": decode, "encode": encode},
    }
    text = json.dumps(result, indent=2) + "\n"
    print(text)
    if args.out:
        tmp_out = args.out.with_name(args.out.name + ".partial")
        tmp_out.write_text(text)
        tmp_out.replace(args.out)


def same_tables(models: dict[str, ExactTokenModel], span: int) -> bool:
    """Every encode path and the stepper give one window's tables bit for bit alike across
    the span graphs (before and now, every session); the figures compare equal work."""
    ids = window_ids(2)
    pos = np.broadcast_to(positions(32, GRID), ids.shape)
    reference = one_call(models["span_before"], ids, pos)
    for name in (n for n in models if n.startswith("span") and n != "span_before"):
        model = models[name]
        stepper = model.stepper(model.start(2))
        steps = np.stack(
            [stepper.step(ids[:, t], int(pos[0, t])).astype(np.int64) for t in range(WINDOW)],
            axis=1,
        )
        if not (
            np.array_equal(one_call(model, ids, pos), reference)
            and np.array_equal(model.run(ids, pos, model.start(2), False)[0], reference)
            and np.array_equal(steps, reference)
        ):
            return False
    return True


if __name__ == "__main__":
    main()
