"""Step cost of the longer-reach levels (codec/core/match.py), before and after a speed-up.

Why: coding 3 runs match.py's six levels after coding 2's mixer at every cell step of
decoding, and a step holds only a few windows (4-6 on 256- and 481-wide images: a chain's
window groups), so numpy's per-call cost, not arithmetic, sets the price. This times one
step (window_template, tables, update) of the current MatchMixer against a baseline
revision of match.py loaded from git, on the cached coding-2 tables of real images
(bench_out/match_model/*.coding2.npz, written by studies/match_model.py), and checks
that both give the same tables at every step, and the same state at the end.

Each timed run takes `batch` windows of the image (from every chain and band in turn)
and steps their cells in coding order from their first coded cell, the input tables being
coding 2's own output for those cells. Coding 2's mixer (AdaptiveMixer.tables + update)
is timed on the same windows (fed the model's tables), for the ratio of coding 3 to
coding 2. CPU time (process_time), best of `repeat` runs, per step in microseconds.

    nice -n 10 python -m studies.match_speed --baseline 20d5d42 --out bench_out/match_speed.json

Status: a study kept to rerun; nothing imports it. Result: docs/synthetic.md, "Step cost
of the levels".
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from igpt_codec.core import match
from igpt_codec.core.adaptive import AdaptiveMixer, window_neighbours
from studies.match_model import CACHE, chain_layout

IMAGES = ("text_builtin", "101085.jpg")
BATCHES = (1, 4, 8, 12, 32)
"""Steps hold a chain's windows: 4 on a 256-wide image, 8 at 481, 12 at 768, 24 at 1536."""


def baseline_module(revision: str) -> ModuleType:
    """codec/core/match.py as it was at `revision` (git show), imported under another name."""
    source = subprocess.run(
        ["git", "show", f"{revision}:codec/core/match.py"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    path = Path(tempfile.mkdtemp()) / "match_baseline.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("match_baseline", path)
    if spec is None or spec.loader is None:
        raise RuntimeError(f"cannot load match.py at {revision}")
    module = importlib.util.module_from_spec(spec)
    sys.modules["match_baseline"] = module
    spec.loader.exec_module(module)
    return module


def windows_of(name: str) -> tuple[list[tuple[np.ndarray, np.ndarray, np.ndarray]], int]:
    """Every window of a cached image: (cells [n], coded mask [n], row of each coded cell's
    table in the cached arrays, -1 elsewhere [n]), and the window width."""
    tokens = np.load(CACHE / f"{name}.npz")["tokens"]
    out = []
    at = 0
    for bands in chain_layout(tokens, 32):
        for cells, mask in bands:
            rows = np.full(mask.shape, -1, np.int64)
            cell, window = np.nonzero(mask.T)  # coding order: cell-major
            rows[window, cell] = at + np.arange(len(cell))
            at += len(cell)
            out.extend(zip(cells, mask, rows, strict=True))
    return out, min(32, tokens.shape[1])


@functools.lru_cache(maxsize=1)
def cached_tables(name: str) -> tuple[np.ndarray, np.ndarray]:
    """The model's and coding 2's tables of one image (int32, coding order)."""
    return np.load(CACHE / f"{name}.npz")["tables"], np.load(CACHE / f"{name}.coding2.npz")[
        "tables"
    ]


def batch_steps(name: str, batch: int, steps: int) -> list[dict[str, np.ndarray]]:
    """`steps` cell steps of `batch` windows (the image's windows taken in turn; the
    cells every one of them codes), with coding 2's input and output tables."""
    windows, width = windows_of(name)
    chosen = [windows[i % len(windows)] for i in range(batch)]
    cells = np.stack([w[0] for w in chosen])
    mask = np.stack([w[1] for w in chosen]).all(axis=0)
    rows = np.stack([w[2] for w in chosen])
    model, mixed = cached_tables(name)
    out = []
    for cell in np.flatnonzero(mask)[:steps].tolist():
        out.append(
            {
                "cell": cell,
                "cells": cells,
                "width": width,
                "model": np.asarray(model[rows[:, cell]], np.int64),
                "coding2": np.asarray(mixed[rows[:, cell]], np.int64),
                "symbols": cells[:, cell],
            }
        )
    return out


def run_match(
    module: ModuleType, steps: list[dict[str, Any]], levels: slice = slice(None)
) -> tuple[float, list, Any]:
    """CPU seconds of window_template + tables + update over the steps, the tables, and
    the mixer (its state at the end); `levels`: which of DEFAULT_LEVELS it runs."""
    mixer = module.MatchMixer(module.DEFAULT_LEVELS[levels])
    outs = []
    start = time.process_time()
    for s in steps:
        template = module.window_template(s["cells"], s["cell"], s["width"], mixer.size)
        table, step = mixer.tables(s["coding2"], template)
        mixer.update(step, s["symbols"])
        outs.append(table)
    return time.process_time() - start, outs, mixer


def run_coding2(steps: list[dict[str, Any]]) -> float:
    """CPU seconds of coding 2's mixer (window_neighbours + tables + update) over the steps."""
    mixer = AdaptiveMixer()
    start = time.process_time()
    for s in steps:
        around = window_neighbours(s["cells"], s["cell"], s["width"])
        _, step = mixer.tables(s["model"], around)
        mixer.update(step, s["symbols"])
    return time.process_time() - start


def state_of(mixer: Any) -> list[list[Any]]:
    """A mixer's learnt state, level by level, in a form both revisions share."""
    return [
        [lv.tags.tolist(), lv.counts.tolist(), lv.totals.tolist(), lv.weights.tolist()]
        for lv in mixer._levels
    ]


def measure(baseline: ModuleType | None, name: str, batch: int, steps: int, repeat: int) -> dict:
    """Microseconds per step of coding 2's mixer and of the levels (current, baseline)."""
    data = batch_steps(name, batch, steps)
    n = len(data)
    row: dict[str, Any] = {"image": name, "batch": batch, "steps": n}
    coding2, current, before, symbol, neighbour = [], [], [], [], []
    for _ in range(repeat):  # interleaved: the machine's load changes over a run
        coding2.append(run_coding2(data))
        current.append(run_match(match, data))
        symbol.append(run_match(match, data, slice(0, 3))[0])
        neighbour.append(run_match(match, data, slice(3, 6))[0])
        if baseline is not None:
            before.append(run_match(baseline, data))
    row["symbol_levels_only_us"] = min(symbol) / n * 1e6
    row["neighbour_levels_only_us"] = min(neighbour) / n * 1e6
    row["coding2_us"] = min(coding2) / n * 1e6
    row["levels_us"] = min(t for t, _, _ in current) / n * 1e6
    if baseline is not None:
        row["baseline_levels_us"] = min(t for t, _, _ in before) / n * 1e6
        same = all(np.array_equal(a, b) for a, b in zip(current[0][1], before[0][1], strict=True))
        row["identical_tables"] = same
        row["identical_state"] = state_of(current[0][2]) == state_of(before[0][2])
        if not (same and row["identical_state"]):
            raise RuntimeError(f"{name} batch {batch}: the levels differ from the baseline")
    row["coding3_over_coding2"] = (row["coding2_us"] + row["levels_us"]) / row["coding2_us"]
    return row


def replay(baseline: ModuleType | None, name: str, chains: int) -> dict:
    """The image's first `chains` chains stepped as the coder steps them (every band, the
    windows live at each cell): CPU seconds of coding 2's mixer and of the levels
    (current and baseline, the same tables checked at every step), and the steps' sizes."""
    tokens = np.load(CACHE / f"{name}.npz")["tokens"]
    model, mixed = cached_tables(name)
    width = min(32, tokens.shape[1])
    spent = {"coding2": 0.0, "levels": 0.0, "baseline_levels": 0.0}
    sizes: dict[int, int] = {}
    at = 0
    for bands in chain_layout(tokens, 32)[:chains]:
        adaptive = AdaptiveMixer()
        mixers = {"levels": match.MatchMixer()}
        if baseline is not None:
            mixers["baseline_levels"] = baseline.MatchMixer(baseline.DEFAULT_LEVELS)
        modules = {"levels": match, "baseline_levels": baseline}
        for cells, mask in bands:
            for cell in np.flatnonzero(mask.any(axis=0)).tolist():
                live = np.flatnonzero(mask[:, cell])
                sizes[len(live)] = sizes.get(len(live), 0) + 1
                symbols = cells[live, cell]
                freqs = model[at : at + len(live)].astype(np.int64)
                inputs = mixed[at : at + len(live)].astype(np.int64)
                at += len(live)
                start = time.process_time()
                around = window_neighbours(cells, cell, width)[live]
                _, step = adaptive.tables(freqs, around)
                adaptive.update(step, symbols)
                spent["coding2"] += time.process_time() - start
                outs = []
                for key, mixer in mixers.items():
                    start = time.process_time()
                    template = modules[key].window_template(cells, cell, width, mixer.size)
                    table, mstep = mixer.tables(inputs, template[live])
                    mixer.update(mstep, symbols)
                    spent[key] += time.process_time() - start
                    outs.append(table)
                if not all(np.array_equal(outs[0], other) for other in outs[1:]):
                    raise RuntimeError(f"{name}: the levels differ from the baseline")
    steps = sum(sizes.values())
    row: dict[str, Any] = {"image": name, "chains": chains, "steps": steps, "batches": sizes}
    row.update({f"{k}_us": v / steps * 1e6 for k, v in spent.items() if v})
    row["coding3_over_coding2"] = (spent["coding2"] + spent["levels"]) / spent["coding2"]
    return row


def model_step_us(name: str, batch: int, steps: int, repeat: int) -> float:
    """CPU microseconds of one decode step of the exact model (ExactStepper.step, one
    thread) at this batch, from past length 128 on: what a step costs besides the mixers."""
    from igpt_codec.runtime.bundle import load_bundle
    from igpt_codec.runtime.contract import SOS
    from igpt_codec.runtime.exact_runner import ExactTokenModel

    model = ExactTokenModel(load_bundle(None), threads=1)
    windows, _ = windows_of(name)
    cells = np.stack([windows[i % len(windows)][0] for i in range(batch)])
    known = 4 * 32  # a band's context rows
    ids = np.concatenate([np.full((batch, 1), SOS), cells[:, :known]], axis=1)
    best = float("inf")
    for _ in range(repeat):
        positions = np.broadcast_to(np.arange(known + 1), ids.shape)
        _, state = model.run(ids, positions, model.start(batch))
        stepper = model.stepper(state)
        start = time.process_time()
        for cell in range(known, min(known + steps, cells.shape[1] - 1)):
            stepper.step(cells[:, cell], cell + 1)
        best = min(best, time.process_time() - start)
    return best / min(steps, cells.shape[1] - 1 - known) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", help="git revision of match.py to compare with")
    parser.add_argument("--images", nargs="*", default=list(IMAGES))
    parser.add_argument("--batches", nargs="*", type=int, default=list(BATCHES))
    parser.add_argument("--steps", type=int, default=895, help="cell steps per run (a band's)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--chains", type=int, default=1, help="chains replayed per image")
    parser.add_argument("--model", action="store_true", help="time the model's step too")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    baseline = baseline_module(args.baseline) if args.baseline else None
    rows = []
    for name in args.images if args.chains else []:
        row = replay(baseline, name, args.chains)
        print(json.dumps({k: round(v, 1) if isinstance(v, float) else v for k, v in row.items()}))
        rows.append(row)
    for name in args.images:
        for batch in args.batches:
            row = measure(baseline, name, batch, args.steps, args.repeat)
            if args.model:
                row["model_step_us"] = model_step_us(name, batch, args.steps, 2)
                plain = row["model_step_us"] + row["coding2_us"]
                row["decode_coding3_over_coding2"] = (plain + row["levels_us"]) / plain
                if baseline is not None:
                    row["baseline_decode_ratio"] = (plain + row["baseline_levels_us"]) / plain
            print(
                json.dumps({k: round(v, 1) if isinstance(v, float) else v for k, v in row.items()})
            )
            rows.append(row)
    result = {
        "study": "studies/match_speed.py",
        "baseline": args.baseline,
        "command": " ".join(sys.argv),
        "load_average_at_end": os.getloadavg(),
        "cpus": os.cpu_count(),
        "rows": rows,
    }
    if args.out is not None:
        args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
