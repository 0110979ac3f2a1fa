"""How close a model step is to what the memory and the arithmetic units allow.

Two machine figures are measured with numpy: memory bandwidth (copy of a large
array, counting the bytes read plus the bytes written; one thread) and float32
matmul throughput (square matmul, 2 n^3 FLOPs), once per thread count in a
child process with the BLAS thread count fixed; a cell run with T threads is
held to the best rate seen with at most T.
Each sampled step (stepbench) is then set beside:

- bytes / bandwidth, where bytes = the weights read once per step (4 bytes per
  matmul weight for both profiles: the exact graph stores int8 weights on disk but
  onnxruntime folds their Cast at load, so it multiplies int8-valued float32
  operands) plus the KV cache traffic: attention reads the runner's preallocated
  cache in place (B*L) and the step writes the new position (B*1), at
  2 * n_layer * n_embd * 4 bytes per position (codec/runtime/);
- FLOPs / matmul throughput, where FLOPs = 2 per multiply-add of the four weight
  matmuls per layer, the two attention products over L+1 keys and the 512-way head.

The larger of the two is a lower bound on the step; the measured model time over
it says how far the runtime is from the hardware. Layer norms, softmax, GELU,
the embedding gather and Python overhead are left out (small, and not bounded by
either figure), so the bound is optimistic; for exact bundles more so, since
their norms, softmax and GELU are integer rescaling and table lookups (many
small elementwise kernels: bench.profiles counts them by op type).

Exact bundles' encoder makes one whole-sequence call per image; `whole_sequence_rows`
bounds it the same way (weights read once, all positions' FLOPs).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench.timing import median, timed
from igpt_codec.core.palette import PALETTE_SIZE

FLOAT32_BYTES = 4


def measure_bandwidth(mib: int, repeats: int) -> dict[str, Any]:
    """Copy bandwidth in GB/s (read + written bytes), single-threaded numpy copy."""
    count = mib * (1 << 20) // 8
    src = np.arange(count, dtype=np.float64)
    dst = np.empty_like(src)
    np.copyto(dst, src)  # touch every page once, so page faults are not timed
    runs = [timed(lambda: np.copyto(dst, src))[1] for _ in range(max(1, repeats))]
    seconds = median(runs)
    return {
        "array_bytes": src.nbytes,
        "repeats": len(runs),
        "seconds": seconds,
        "gb_per_s": 2 * src.nbytes / seconds / 1e9,
        "method": "numpy.copyto of a float64 array; bytes read + bytes written per second",
    }


def measure_matmul(n: int, repeats: int) -> dict[str, Any]:
    """float32 square matmul throughput in GFLOP/s (2 n^3 per product)."""
    rng = np.random.default_rng(0)
    a = rng.random((n, n), dtype=np.float32)
    b = rng.random((n, n), dtype=np.float32)
    a @ b  # warm up the BLAS threads
    runs = [timed(lambda: a @ b)[1] for _ in range(max(1, repeats))]
    seconds = median(runs)
    return {
        "n": n,
        "repeats": len(runs),
        "seconds": seconds,
        "gflop_per_s": 2 * n**3 / seconds / 1e9,
        "method": "numpy float32 square matmul (its BLAS)",
    }


BLAS_THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def measure_matmul_threads(n: int, repeats: int, threads: Sequence[int]) -> dict[str, Any]:
    """`measure_matmul` in a child process per BLAS thread count (set by environment, the
    only knob numpy's BLAS reads reliably, and only at start-up)."""
    results = {}
    code = (
        "import json, sys; from bench.bounds import measure_matmul; "
        f"print(json.dumps(measure_matmul({int(n)}, {int(repeats)})))"
    )
    for count in sorted(set(threads)):
        env = {**os.environ, **dict.fromkeys(BLAS_THREAD_VARIABLES, str(count))}
        done = subprocess.run(
            [sys.executable, "-c", code],
            cwd=Path(__file__).resolve().parents[1],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        results[str(count)] = {**json.loads(done.stdout), "blas_threads": count}
    return results


def best_rate(rates: dict[str, Any], threads: int) -> float:
    """The best GFLOP/s any probe reached with at most `threads` threads: an upper limit."""
    usable = [r["gflop_per_s"] for t, r in rates.items() if int(t) <= threads]
    return max(usable or [r["gflop_per_s"] for r in rates.values()])


def weight_count(shape: dict[str, Any]) -> int:
    """Matmul weights read per step: qkv, attention projection, MLP in/out, and the head."""
    d = shape["n_embd"]
    inner = shape.get("n_inner") or 4 * d
    return shape["n_layer"] * (3 * d * d + d * d + 2 * d * inner) + d * PALETTE_SIZE


def step_costs(shape: dict[str, Any], batch: int, past: int) -> dict[str, float]:
    """Bytes moved and FLOPs of one step at batch B after `past` positions."""
    d, layers = shape["n_embd"], shape["n_layer"]
    inner = shape.get("n_inner") or 4 * d
    weight_bytes = weight_count(shape) * FLOAT32_BYTES
    kv_position = 2 * layers * d * FLOAT32_BYTES
    kv_bytes = batch * kv_position * (past + 1)
    per_row = layers * (2 * d * (4 * d + 2 * inner) + 4 * (past + 1) * d) + 2 * d * PALETTE_SIZE
    return {
        "weight_bytes": float(weight_bytes),
        "kv_bytes": float(kv_bytes),
        "flops": float(batch * per_row),
    }


def bound_rows(
    steps: dict[str, Any], bandwidth_gb_s: float, rates: dict[str, Any]
) -> list[dict[str, Any]]:
    """Every sampled cell with its memory and compute bounds beside the measured model time."""
    shape = steps["bundle"]
    rows = []
    for cell in steps["cells"]:
        gflop_s = best_rate(rates, cell["threads"])
        costs = step_costs(shape, cell["batch"], cell["past"])
        memory_ms = 1e3 * (costs["weight_bytes"] + costs["kv_bytes"]) / (bandwidth_gb_s * 1e9)
        weights_ms = 1e3 * costs["weight_bytes"] / (bandwidth_gb_s * 1e9)
        compute_ms = 1e3 * costs["flops"] / (gflop_s * 1e9)
        bound = max(memory_ms, compute_ms)
        rows.append(
            {
                "batch": cell["batch"],
                "threads": cell["threads"],
                "past": cell["past"],
                **costs,
                "weights_only_ms": weights_ms,
                "memory_bound_ms": memory_ms,
                "compute_bound_ms": compute_ms,
                "bound_ms": bound,
                "bound_by": "memory" if memory_ms >= compute_ms else "compute",
                "measured_model_ms": cell["model_ms"],
                "measured_over_bound": cell["model_ms"] / bound if bound else None,
            }
        )
    return rows


def whole_sequence_rows(
    steps: dict[str, Any], bandwidth_gb_s: float, rates: dict[str, Any]
) -> list[dict[str, Any]]:
    """The exact encoder's one call per image beside its bound: weights read once, the
    cache written once, the FLOPs of every position (attention over 1..N keys)."""
    shape = steps["bundle"]
    n = steps["positions"]
    rows = []
    for threads, whole in steps.get("whole_sequence", {}).items():
        flops = sum(step_costs(shape, 1, past)["flops"] for past in range(n))
        kv = step_costs(shape, 1, n - 1)["kv_bytes"]
        weight_bytes = weight_count(shape) * FLOAT32_BYTES
        memory_ms = 1e3 * (weight_bytes + kv) / (bandwidth_gb_s * 1e9)
        compute_ms = 1e3 * flops / (best_rate(rates, int(threads)) * 1e9)
        bound = max(memory_ms, compute_ms)
        rows.append(
            {
                "threads": int(threads),
                "positions": n,
                "weight_bytes": float(weight_bytes),
                "kv_bytes": float(kv),
                "flops": float(flops),
                "memory_bound_ms": memory_ms,
                "compute_bound_ms": compute_ms,
                "bound_ms": bound,
                "bound_by": "memory" if memory_ms >= compute_ms else "compute",
                "measured_model_ms": whole["model_ms"],
                "measured_over_bound": whole["model_ms"] / bound if bound else None,
            }
        )
    return rows
