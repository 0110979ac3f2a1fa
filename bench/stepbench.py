"""Encode and decode speed from a fixed number of timed steps at sampled past lengths.

Why sampled: a full 32x32 image is 1024 decoder steps, and on the iGPT-S shape one
step costs tens of ms at batch 1 and hundreds at batch 32, so a full grid of batches
and thread counts would take most of an hour on two cores. A step's cost depends on
the batch and the past length only (not on the token values), and grows about
linearly with the past, so timing a few steps at a few past lengths and integrating
the piecewise-linear fit over positions 0..N-1 estimates a whole image. The
compression section times whole images through the API, which checks the estimate
(results.json: speed.estimate_check).

Each timed step is exactly the decoder's per-step work, in the codec's own calls
(bench.runners): the model step from a KV cache of the sampled length
(`ExactTokenModel.run` of one token at its position for exact bundles,
`TokenModel.step` for float ones), the tables (exact: `cumulative` of the graph's
integer frequencies; float: `quantize_probs` + `cumulative`), then one
`decode_symbol` per row (decode) or one `encode_symbol` per row (encode). The cache is
synthetic (random values of the right shape, in the runner's preallocated buffers)
and every timed step restarts from it (rewound in place, no copy), so each runs at
exactly the sampled length.

Encoding differs by profile. A float bundle's encoder steps like its decoder, so its
encode figure integrates the sampled steps. An exact bundle's encoder codes each image
from ONE whole-sequence call (its tables equal the decoder's bit for bit), so its
encode figure is that call timed on whole images (`whole_sequence`), plus the tables
and the coder, one image per call as `igpt_codec.pipelines.stream` runs it at any batch.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from bench.config import StepPlan
from bench.runners import StepRunner, profile_name, random_tokens, side_of
from bench.timing import median
from igpt_codec.core.coder import RangeDecoder, RangeEncoder
from igpt_codec.runtime.bundle import Bundle

GARBAGE_PAYLOAD_BYTES = 4096
"""The decoders read random bytes: decoding cost per symbol does not depend on them."""


@dataclass(frozen=True)
class Cell:
    """Median milliseconds of one (batch, threads, past length) cell.

    tables_ms: float bundles quantize probabilities and build cumulative tables; exact
    bundles only build cumulative tables of the graph's own integer frequencies.
    encode_ms is None for exact bundles: their encoder does not step (see WholeSequence).
    """

    batch: int
    threads: int
    past: int
    steps: int
    model_ms: float
    tables_ms: float
    encode_coder_ms: float
    decode_coder_ms: float
    encode_ms: float | None
    decode_ms: float
    model_cpu_ms: float
    """The model step in this process's CPU time: without the time other processes took
    from it on a shared machine (one intra-op thread runs on the calling thread)."""
    decode_cpu_ms: float


def past_lengths(plan: StepPlan, positions: int) -> list[int]:
    """Evenly spaced past lengths over 0..positions-1 (or the plan's fixed ones, clipped)."""
    last = positions - 1
    if plan.fixed_past is not None:
        return sorted({min(p, last) for p in plan.fixed_past})
    samples = max(1, plan.past_samples)
    if samples == 1:
        return [last // 2]
    return sorted(set(np.rint(np.linspace(0, last, samples)).astype(int).tolist()))


def time_cell(
    runner: StepRunner,
    batch: int,
    threads: int,
    past: int,
    steps: int,
    warmup: int,
    seed: int,
    position: int | None = None,
) -> Cell:
    """`steps` timed decoder steps at past length `past` (after `warmup` untimed ones).

    position: the position id of the fed token (exact graphs take it as an input);
    defaults to `past`, the raster position.
    """
    state = runner.synthetic_state(batch, past, seed)
    rng = np.random.default_rng(seed + 1)
    tokens = random_tokens(rng, warmup + steps, batch)
    encoders = [RangeEncoder() for _ in range(batch)]
    decoders = [RangeDecoder(rng.bytes(GARBAGE_PAYLOAD_BYTES)) for _ in range(batch)]
    where = past if position is None else position
    model_t, table_t, enc_t, dec_t, model_c, dec_c = [], [], [], [], [], []
    for i in range(warmup + steps):
        c0 = time.process_time()
        t0 = time.perf_counter()
        output, after = runner.model_step(tokens[i], state, where)
        t1 = time.perf_counter()
        c1 = time.process_time()
        # Rewind instead of stepping on: the next step rewrites the same cache position in
        # place. Stepping `state` again as it is would be a copy-on-write fork (a full cache
        # copy the codec never makes), and stepping `after` would move the past length.
        del after
        state.cache.length = past
        c1b = time.process_time()
        t1b = time.perf_counter()
        cum = runner.tables(output)
        t2 = time.perf_counter()
        c2 = time.process_time()
        for encoder, table, symbol in zip(encoders, cum, tokens[i].tolist(), strict=True):
            encoder.encode_symbol(table, symbol)
        c3 = time.process_time()
        t3 = time.perf_counter()
        for decoder, table in zip(decoders, cum, strict=True):
            decoder.decode_symbol(table)
        t4 = time.perf_counter()
        c4 = time.process_time()
        if i >= warmup:
            model_t.append(t1 - t0)
            table_t.append(t2 - t1b)
            enc_t.append(t3 - t2)
            dec_t.append(t4 - t3)
            model_c.append(c1 - c0)
            dec_c.append((c1 - c0) + (c2 - c1b) + (c4 - c3))
    ms = 1000.0
    stepped = zip(model_t, table_t, enc_t, strict=True)
    return Cell(
        batch=batch,
        threads=threads,
        past=past,
        steps=steps,
        model_ms=ms * median(model_t),
        tables_ms=ms * median(table_t),
        encode_coder_ms=ms * median(enc_t),
        decode_coder_ms=ms * median(dec_t),
        encode_ms=None if runner.exact else ms * median([a + b + c for a, b, c in stepped]),
        decode_ms=ms * median([a + b + c for a, b, c in zip(model_t, table_t, dec_t, strict=True)]),
        model_cpu_ms=ms * median(model_c),
        decode_cpu_ms=ms * median(dec_c),
    )


@dataclass(frozen=True)
class WholeSequence:
    """The exact encoder's work for one image (one call, then tables and coder), median ms."""

    threads: int
    positions: int
    runs: int
    model_ms: float
    tables_ms: float
    coder_ms: float
    encode_ms: float
    model_cpu_ms: float
    encode_cpu_ms: float

    @property
    def tokens_per_s(self) -> float:
        return self.positions / (self.encode_ms / 1000.0)


def time_whole_sequence(
    runner: StepRunner, threads: int, side: int, runs: int, warmup: int, seed: int
) -> WholeSequence:
    """Whole images through the exact encoder's one call, as the thumbnail pipeline codes them."""
    rng = np.random.default_rng(seed + 2)
    model_t, table_t, coder_t, model_c, encode_c = [], [], [], [], []
    for i in range(warmup + runs):
        tokens = random_tokens(rng, side * side)
        c0 = time.process_time()
        t0 = time.perf_counter()
        freqs = runner.whole_sequence(tokens, side)
        t1 = time.perf_counter()
        c1 = time.process_time()
        cum = runner.tables(freqs)
        t2 = time.perf_counter()
        encoder = RangeEncoder()
        for table, symbol in zip(cum, tokens.tolist(), strict=True):
            encoder.encode_symbol(table, symbol)
        encoder.finish()
        t3 = time.perf_counter()
        c3 = time.process_time()
        if i >= warmup:
            model_t.append(t1 - t0)
            table_t.append(t2 - t1)
            coder_t.append(t3 - t2)
            model_c.append(c1 - c0)
            encode_c.append(c3 - c0)
    ms = 1000.0
    return WholeSequence(
        threads=threads,
        positions=side * side,
        runs=runs,
        model_ms=ms * median(model_t),
        tables_ms=ms * median(table_t),
        coder_ms=ms * median(coder_t),
        encode_ms=ms
        * median([a + b + c for a, b, c in zip(model_t, table_t, coder_t, strict=True)]),
        model_cpu_ms=ms * median(model_c),
        encode_cpu_ms=ms * median(encode_c),
    )


def image_seconds(cells: list[Cell], field: str, positions: int) -> float:
    """Seconds for positions 0..N-1: the sampled ms per step, linearly interpolated."""
    pasts = [c.past for c in cells]
    values = [getattr(c, field) for c in cells]
    return float(np.interp(np.arange(positions), pasts, values).sum() / 1000.0)


def estimates(
    cells: list[Cell], positions: int, whole: dict[int, WholeSequence] | None = None
) -> list[dict[str, Any]]:
    """Tokens per second per (batch, threads), for a whole image of `positions` tokens.

    Exact bundles (`whole` given, per thread count): encode is the whole-sequence call per
    image, the same at every batch (the encoder codes one image per call).
    """
    groups: dict[tuple[int, int], list[Cell]] = {}
    for cell in cells:
        groups.setdefault((cell.batch, cell.threads), []).append(cell)
    rows = []
    for (batch, threads), group in sorted(groups.items()):
        group.sort(key=lambda c: c.past)
        row: dict[str, Any] = {
            "batch": batch,
            "threads": threads,
            "past_lengths": [c.past for c in group],
            "whole_image_estimate": len(group) > 1,
        }
        for field in ("decode_ms", "model_ms", "decode_cpu_ms", "model_cpu_ms"):
            seconds = image_seconds(group, field, positions)
            name = field.removesuffix("_ms")
            row[f"{name}_seconds_per_batch"] = seconds
            row[f"{name}_tokens_per_s"] = batch * positions / seconds
        if whole is None:
            seconds = image_seconds(group, "encode_ms", positions)
            row["encode_from"] = "sampled steps"
        else:
            seconds = batch * whole[threads].encode_ms / 1000.0
            row["encode_from"] = "whole-sequence call per image"
        row["encode_seconds_per_batch"] = seconds
        row["encode_tokens_per_s"] = batch * positions / seconds
        rows.append(row)
    return rows


def bundle_summary(bundle: Bundle) -> dict[str, Any]:
    model = bundle.manifest.get("model", {})
    return {
        "path": str(bundle.path),
        "fingerprint": bundle.fingerprint.hex(),
        "profile": bundle.profile,
        "exact": bundle.exact,
        "position_layout": bundle.position_layout,
        "n_layer": bundle.n_layer,
        "n_head": bundle.n_head,
        "head_dim": bundle.head_dim,
        "n_embd": bundle.n_head * bundle.head_dim,
        "n_inner": model.get("n_inner"),
        "n_positions": bundle.n_positions,
        "model_file_bytes": bundle.model_path.stat().st_size,
    }


def run_steps(
    bundle: Bundle, plan: StepPlan, positions: int, seed: int = 0, log: Any = None
) -> dict[str, Any]:
    """The sampled grid for one bundle: cells, whole-image estimates, session start-up.

    For exact bundles also the encoder's whole-sequence call per thread count.
    """
    pasts = past_lengths(plan, positions)
    side = side_of(positions)
    cells: list[Cell] = []
    whole: dict[int, WholeSequence] = {}
    session_seconds: dict[str, list[float]] = {}
    for threads in plan.threads:
        for batch in plan.batches:
            # A fresh session per batch, longest past first: onnxruntime's arena then serves
            # every later (smaller) cell from memory it already holds, and is freed after.
            start = time.perf_counter()
            runner = StepRunner(bundle, threads=threads)
            session_seconds.setdefault(str(threads), []).append(time.perf_counter() - start)
            order = runner.positions(side)
            for past in reversed(pasts):
                cell = time_cell(
                    runner,
                    batch,
                    threads,
                    past,
                    plan.steps_for(batch),
                    plan.warmup,
                    seed,
                    position=int(order[past]),
                )
                cells.append(cell)
                if log is not None:
                    log(
                        f"  batch {batch:2d} threads {threads} past {past:4d}: "
                        f"model {cell.model_ms:8.2f} ms, decode step {cell.decode_ms:8.2f} ms"
                    )
            del runner
        if bundle.exact:
            runner = StepRunner(bundle, threads=threads)
            runs = max(1, plan.whole_runs)
            whole[threads] = time_whole_sequence(runner, threads, side, runs, plan.warmup, seed)
            del runner
            if log is not None:
                log(
                    f"  whole sequence threads {threads}: model "
                    f"{whole[threads].model_ms:8.1f} ms, encode {whole[threads].encode_ms:8.1f} ms"
                    f" per {positions}-token image"
                )
    notes: list[str] = []
    return {
        "bundle": bundle_summary(bundle),
        "profile": profile_name(bundle),
        "positions": positions,
        "past_lengths": pasts,
        "plan": {
            "batches": list(plan.batches),
            "threads": list(plan.threads),
            "steps": {str(b): plan.steps_for(b) for b in plan.batches},
            "warmup": plan.warmup,
            "whole_runs": plan.whole_runs if bundle.exact else 0,
        },
        "session_create_seconds": {t: median(v) for t, v in session_seconds.items()},
        "cells": [cell.__dict__ for cell in cells],
        "whole_sequence": {
            str(t): {
                **w.__dict__,
                "tokens_per_s": w.tokens_per_s,
                "cpu_tokens_per_s": w.positions / (w.encode_cpu_ms / 1000.0),
            }
            for t, w in whole.items()
        },
        "estimates": estimates(cells, positions, whole if bundle.exact else None),
        "notes": notes,
    }
