"""onnxruntime sessions for bundle graphs: options set explicitly, graphs checked, cached.

Why apart: every runner (float, exact, the exporter's parity check) must open graphs
with the very same options, since options such as the optimization level change the
floats of a float graph; keeping them in one place keeps that promise.

Run-time module: onnxruntime and the standard library.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import onnxruntime as ort

from igpt_codec.core.errors import BundleError

# ORT_ENABLE_BASIC (constant folding, redundant-node removal) leaves the arithmetic of
# the graph as exported. EXTENDED and ALL swap subgraphs for fused contrib kernels
# (SimplifiedLayerNorm, QuickGelu, ...): measured, they change the floats against BASIC
# (DISABLE_ALL == BASIC bit for bit; ALL vs BASIC up to 3e-6 in probs on iGPT-S) and
# their kernel selection depends on the CPU and the onnxruntime release. Speed on the
# iGPT-S shape at batch 1: no difference beyond run-to-run noise (interleaved runs).
GRAPH_OPTIMIZATION = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC


def make_session_options(threads: int | None, mem_pattern: bool = False) -> ort.SessionOptions:
    """Session options for every codec session; all set explicitly, none left to defaults.

    threads=None lets onnxruntime use one intra-op thread per physical core. The
    thread count does not change the floats (tested: 1 vs 2 threads bit-identical), so
    encoder and decoder may use different counts. mem_pattern: see open_session.
    """
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    options = ort.SessionOptions()
    options.intra_op_num_threads = 0 if threads is None else threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = GRAPH_OPTIMIZATION
    # Off by default: with a linear cache shapes change every KV_CHUNK steps (and with the
    # batch), so a memory pattern would rarely be reused.
    options.enable_mem_pattern = mem_pattern
    options.enable_cpu_mem_arena = True
    options.add_session_config_entry("session.set_denormal_as_zero", "0")
    # Idle pool threads sleep instead of spinning. A step runs ~150 small kernels, and with
    # 2 threads on a busy 2-core machine the spinning worker steals the core the main thread
    # needs (default model, batch 16, 2 threads: ~1.2x faster without spinning; floats unchanged).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    return options


def open_session(
    path: Path,
    threads: int | None,
    names: tuple[list[str], list[str]],
    heads: tuple[int, int],
    sha256: str | None = None,
    mem_pattern: bool = False,
) -> ort.InferenceSession:
    """An onnxruntime session for a bundle graph, checked against what the manifest says.

    With `sha256` (a loaded bundle's), the graph is read once, its hash compared and
    the session built from those very bytes, so a file replaced after load_bundle
    verified it cannot slip in. Every way onnxruntime can refuse the file becomes a
    one-line BundleError, and the graph's own cache shapes must carry the manifest's
    head count and head size, so an edited manifest cannot reach onnxruntime as a
    shape error in the middle of a run. Sessions are cached per (graph, threads,
    mem_pattern).

    mem_pattern=True turns on onnxruntime's memory pattern (its buffers planned once per
    input shapes and reused): for a decoder stepping a ring cache, whose every step has the
    same shapes. It plans memory only, not arithmetic (the same tables, tested); measured on
    the default model's steps, 1 thread: 1.22x faster at batch 1, 1.04x at 12, 1.02x at 32
    (docs/speed.md, session 24), but slower for a chunked encode, so only the steppers ask.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise BundleError(f"cannot read {path}: {exc.strerror or exc}") from exc
    digest = hashlib.sha256(data).hexdigest()
    if sha256 is not None and digest != sha256:
        raise BundleError(f"{path.name} changed since its bundle was verified (sha256 mismatch)")
    key = (digest, threads, tuple(names[0]), tuple(names[1]), heads, mem_pattern)
    cached = _SESSIONS.get(key)
    if cached is not None:
        return cached
    try:
        session = ort.InferenceSession(
            data,
            sess_options=make_session_options(threads, mem_pattern),
            providers=["CPUExecutionProvider"],
        )
    except Exception as exc:  # onnxruntime raises its own pybind exception types
        raise BundleError(f"onnxruntime cannot load {path.name}: {first_line(exc)}") from exc
    inputs, outputs = names
    graph_inputs = session.get_inputs()
    if [i.name for i in graph_inputs] != inputs or [o.name for o in session.get_outputs()] != (
        outputs
    ):
        raise BundleError(f"{path.name} does not have the inputs/outputs its manifest lists")
    for node in graph_inputs:
        if node.name.endswith(".key") and list(node.shape[1:3]) != list(heads):
            raise BundleError(
                f"{path.name} has {node.shape[1]} heads of size {node.shape[2]}, "
                f"the manifest says {heads[0]} of size {heads[1]}"
            )
    while len(_SESSIONS) >= _SESSION_CACHE:
        _SESSIONS.pop(next(iter(_SESSIONS)))
    _SESSIONS[key] = session
    return session


_SESSION_CACHE = 4
"""Sessions kept for reuse (one decode call after another skips the graph load): a
thumbnail model's and a full-resolution model's, each with its stepper's."""
_SESSIONS: dict[tuple, ort.InferenceSession] = {}


def run_session(session: ort.InferenceSession, fetch: list[str], feeds: dict) -> list:
    """session.run_with_ort_values with onnxruntime's failures as one-line BundleErrors."""
    try:
        return session.run_with_ort_values(fetch, feeds)
    except Exception as exc:  # onnxruntime raises its own pybind exception types
        raise BundleError(f"the model graph failed to run: {first_line(exc)}") from exc


def first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]
