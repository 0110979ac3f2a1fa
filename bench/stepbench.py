"""Encode and decode speed from a fixed number of timed steps at sampled past lengths.

Why sampled: a full 32x32 image is 1024 steps, and on the iGPT-S shape one step
costs ~29 ms at batch 1 and ~390 ms at batch 32, so a full grid of batches and
thread counts would take most of an hour on two cores. A step's cost depends on
the batch and the past length only (not on the token values), and grows about
linearly with the past, so timing a few steps at a few past lengths and
integrating the piecewise-linear fit over positions 0..N-1 estimates a whole
image. The compression section times whole images through the API, which checks
the estimate (results.json: speed.estimate_check).

Each timed step is exactly the codec's per-step work, in the codec's own code:
`TokenModel.step` from a KV cache of the sampled length, `quantize_probs` +
`cumulative`, then one `encode_symbol` per row (encode) or one `decode_symbol`
per row (decode). The model step is shared by both directions and timed once;
each direction's coder work is timed separately on the same tables. The cache
is synthetic (random values of the right shape, in the runner's preallocated
buffers) and every timed step restarts from it (rewound in place, no copy), so each
runs at exactly the sampled length.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from bench.config import StepPlan
from bench.timing import median
from codec.bundle import Bundle
from codec.coder import RangeDecoder, RangeEncoder
from codec.freq import FREQ_BITS, cumulative, quantize_probs
from codec.model import KVState, TokenModel
from codec.palette import PALETTE_SIZE

GARBAGE_PAYLOAD_BYTES = 4096
"""The decoders read random bytes: decoding cost per symbol does not depend on them."""


@dataclass(frozen=True)
class Cell:
    """Median milliseconds of one (batch, threads, past length) cell."""

    batch: int
    threads: int
    past: int
    steps: int
    model_ms: float
    quantize_ms: float
    encode_coder_ms: float
    decode_coder_ms: float
    encode_ms: float
    decode_ms: float


def past_lengths(plan: StepPlan, positions: int) -> list[int]:
    """Evenly spaced past lengths over 0..positions-1 (or the plan's fixed ones, clipped)."""
    last = positions - 1
    if plan.fixed_past is not None:
        return sorted({min(p, last) for p in plan.fixed_past})
    samples = max(1, plan.past_samples)
    if samples == 1:
        return [last // 2]
    return sorted(set(np.rint(np.linspace(0, last, samples)).astype(int).tolist()))


def synthetic_state(model: TokenModel, batch: int, past: int, seed: int) -> KVState:
    """A KV cache of `past` positions: random values, a separate buffer per past input.

    Separate buffers matter: one buffer shared by every layer would stay in the CPU
    cache at small sizes and flatter the step. Copying one random block is much
    faster than drawing gigabytes of random numbers for iGPT-S at batch 32.
    """
    rng = np.random.default_rng(seed)
    bundle = model.bundle
    shape = (batch, bundle.n_head, past, bundle.head_dim)
    block = rng.random(shape, dtype=np.float32) * np.float32(2) - np.float32(1)
    # state_from_cache copies every block into the runner's own (separate) buffers.
    blocks = [block] * bundle.n_layer
    return model.state_from_cache(blocks, blocks)


def time_cell(
    model: TokenModel, batch: int, threads: int, past: int, steps: int, warmup: int, seed: int
) -> Cell:
    state = synthetic_state(model, batch, past, seed)
    rng = np.random.default_rng(seed + 1)
    tokens = rng.integers(0, PALETTE_SIZE, size=(warmup + steps, batch), dtype=np.int64)
    encoders = [RangeEncoder() for _ in range(batch)]
    decoders = [RangeDecoder(rng.bytes(GARBAGE_PAYLOAD_BYTES)) for _ in range(batch)]
    model_t, quant_t, enc_t, dec_t = [], [], [], []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        probs, after = model.step(tokens[i], state)
        t1 = time.perf_counter()
        # Rewind instead of stepping on: the next step rewrites the same cache position in
        # place. Stepping `state` again as it is would be a copy-on-write fork (a full cache
        # copy the codec never makes), and stepping `after` would move the past length.
        del after
        state.cache.length = past
        cum = cumulative(quantize_probs(probs, FREQ_BITS))
        t2 = time.perf_counter()
        for encoder, table, symbol in zip(encoders, cum, tokens[i].tolist(), strict=True):
            encoder.encode_symbol(table, symbol)
        t3 = time.perf_counter()
        for decoder, table in zip(decoders, cum, strict=True):
            decoder.decode_symbol(table)
        t4 = time.perf_counter()
        if i >= warmup:
            model_t.append(t1 - t0)
            quant_t.append(t2 - t1)
            enc_t.append(t3 - t2)
            dec_t.append(t4 - t3)
    ms = 1000.0
    return Cell(
        batch=batch,
        threads=threads,
        past=past,
        steps=steps,
        model_ms=ms * median(model_t),
        quantize_ms=ms * median(quant_t),
        encode_coder_ms=ms * median(enc_t),
        decode_coder_ms=ms * median(dec_t),
        encode_ms=ms * median([a + b + c for a, b, c in zip(model_t, quant_t, enc_t, strict=True)]),
        decode_ms=ms * median([a + b + c for a, b, c in zip(model_t, quant_t, dec_t, strict=True)]),
    )


def image_seconds(cells: list[Cell], field: str, positions: int) -> float:
    """Seconds for positions 0..N-1: the sampled ms per step, linearly interpolated."""
    pasts = [c.past for c in cells]
    values = [getattr(c, field) for c in cells]
    return float(np.interp(np.arange(positions), pasts, values).sum() / 1000.0)


def estimates(cells: list[Cell], positions: int) -> list[dict[str, Any]]:
    """Tokens per second per (batch, threads), for a whole image of `positions` tokens."""
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
        for field in ("encode_ms", "decode_ms", "model_ms"):
            seconds = image_seconds(group, field, positions)
            name = field.removesuffix("_ms")
            row[f"{name}_seconds_per_batch"] = seconds
            row[f"{name}_tokens_per_s"] = batch * positions / seconds
        rows.append(row)
    return rows


def bundle_summary(bundle: Bundle) -> dict[str, Any]:
    model = bundle.manifest.get("model", {})
    return {
        "path": str(bundle.path),
        "fingerprint": bundle.fingerprint.hex(),
        "quantization": bundle.quantization,
        "batch_invariant": bundle.batch_invariant,
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
    """The sampled grid for one bundle: cells, whole-image estimates, session start-up."""
    batches = plan.batches
    notes = []
    if not bundle.batch_invariant and any(b > 1 for b in batches):
        batches = (1,)
        notes.append("bundle is not batch-invariant: the codec runs it at batch 1 only")
    pasts = past_lengths(plan, positions)
    cells: list[Cell] = []
    session_seconds: dict[str, list[float]] = {}
    for threads in plan.threads:
        for batch in batches:
            # A fresh session per batch, longest past first: onnxruntime's arena then serves
            # every later (smaller) cell from memory it already holds, and is freed after.
            start = time.perf_counter()
            model = TokenModel(bundle, threads=threads)
            session_seconds.setdefault(str(threads), []).append(time.perf_counter() - start)
            for past in reversed(pasts):
                cell = time_cell(
                    model, batch, threads, past, plan.steps_for(batch), plan.warmup, seed
                )
                cells.append(cell)
                if log is not None:
                    log(
                        f"  batch {batch:2d} threads {threads} past {past:4d}: "
                        f"model {cell.model_ms:8.2f} ms, encode step {cell.encode_ms:8.2f} ms"
                    )
            del model
    return {
        "bundle": bundle_summary(bundle),
        "positions": positions,
        "past_lengths": pasts,
        "plan": {
            "batches": list(batches),
            "threads": list(plan.threads),
            "steps": {str(b): plan.steps_for(b) for b in batches},
            "warmup": plan.warmup,
        },
        "session_create_seconds": {t: median(v) for t, v in session_seconds.items()},
        "cells": [cell.__dict__ for cell in cells],
        "estimates": estimates(cells, positions),
        "notes": notes,
    }
