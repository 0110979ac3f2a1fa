"""The ONNX Runtime step runner that encoder and decoder share.

Losslessness needs the encoder and the decoder to see bit-identical
probabilities, so both must run this exact code path: the same graph, the same
session options, token by token with the KV cache (a full-sequence pass differs
in the last bits). Keep every numerics-relevant choice here, in one place.

Run-time module: numpy and onnxruntime only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnxruntime as ort

from codec.bundle import Bundle
from format.errors import BundleError

SOS = 512
VOCAB = 512
PROBS_OUTPUT = "probs"

# ORT_ENABLE_BASIC (constant folding, redundant-node removal) leaves the arithmetic of
# the graph as exported. EXTENDED and ALL swap subgraphs for fused contrib kernels
# (SimplifiedLayerNorm, QuickGelu, ...): measured, they change the floats against BASIC
# (DISABLE_ALL == BASIC bit for bit; ALL vs BASIC up to 3e-6 in probs on iGPT-S) and
# their kernel selection depends on the CPU and the onnxruntime release. Speed on the
# iGPT-S shape at batch 1: no difference beyond run-to-run noise (interleaved runs).
GRAPH_OPTIMIZATION = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC


def make_session_options(threads: int | None) -> ort.SessionOptions:
    """Session options for every codec session; all set explicitly, none left to defaults.

    threads=None lets onnxruntime use one intra-op thread per physical core. The
    thread count does not change the floats (tested: 1 vs 2 threads bit-identical), so
    encoder and decoder may use different counts.
    """
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    options = ort.SessionOptions()
    options.intra_op_num_threads = 0 if threads is None else threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = GRAPH_OPTIMIZATION
    # Shapes change every step (the past grows), so a memory pattern is never reused.
    options.enable_mem_pattern = False
    options.enable_cpu_mem_arena = True
    options.add_session_config_entry("session.set_denormal_as_zero", "0")
    # Idle pool threads sleep instead of spinning. A step runs ~150 small kernels, and with
    # 2 threads on a busy 2-core machine the spinning worker steals the core the main thread
    # needs (default model, batch 16, 2 threads: ~1.2x faster without spinning; floats unchanged).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    return options


@dataclass(frozen=True)
class KVState:
    """The KV cache after `length` tokens of `batch` sequences; never mutated, so reusable."""

    past: tuple[ort.OrtValue, ...]
    batch: int
    length: int


class TokenModel:
    """Next-token probabilities, one position at a time, for a batch of sequences."""

    def __init__(self, bundle: Bundle, threads: int | None = None):
        self.bundle = bundle
        self.session = ort.InferenceSession(
            str(bundle.model_path),
            sess_options=make_session_options(threads),
            providers=["CPUExecutionProvider"],
        )
        graph_inputs = tuple(i.name for i in self.session.get_inputs())
        graph_outputs = {o.name for o in self.session.get_outputs()}
        if graph_inputs != bundle.input_names or not set(bundle.output_names) <= graph_outputs:
            raise BundleError(
                f"{bundle.model_path.name} does not have the inputs/outputs its manifest lists"
            )
        # Logits are never fetched: the codec consumes the in-graph softmax only.
        self._fetch = [PROBS_OUTPUT, *bundle.present_names]
        self._empty_shape = (bundle.n_head, 0, bundle.head_dim)

    def start(self, batch: int) -> KVState:
        """An empty cache (past length 0); the first step must feed SOS."""
        if batch < 1:
            raise ValueError(f"batch must be >= 1, got {batch}")
        empty = np.zeros((batch, *self._empty_shape), dtype=np.float32)
        past = tuple(ort.OrtValue.ortvalue_from_numpy(empty) for _ in self.bundle.past_names)
        return KVState(past=past, batch=batch, length=0)

    def step(self, tokens: np.ndarray, state: KVState) -> tuple[np.ndarray, KVState]:
        """Feed one token per sequence; returns probs float32 [B, 512] for the next token.

        The cache stays in onnxruntime-owned OrtValues between steps, so it is not
        copied through numpy (measured 437 -> 384 ms per step at batch 32 on iGPT-S).
        """
        tokens = np.asarray(tokens)
        if tokens.shape != (state.batch,) or not np.issubdtype(tokens.dtype, np.integer):
            raise ValueError(
                f"tokens must be {state.batch} integers, got {tokens.dtype} {tokens.shape}"
            )
        if tokens.size and (int(tokens.min()) < 0 or int(tokens.max()) > SOS):
            raise ValueError("tokens must lie in [0, 512] (512 = SOS)")
        if state.length >= self.bundle.n_positions:
            raise ValueError(f"the model has only {self.bundle.n_positions} positions")
        ids = np.ascontiguousarray(tokens, dtype=np.int64).reshape(state.batch, 1)
        feeds = {self.bundle.input_names[0]: ort.OrtValue.ortvalue_from_numpy(ids)}
        feeds.update(zip(self.bundle.past_names, state.past, strict=True))
        outputs = self.session.run_with_ort_values(self._fetch, feeds)
        # OrtValue.numpy() is a view of onnxruntime's buffer; copy so callers own their array.
        probs = np.array(outputs[0].numpy().reshape(state.batch, VOCAB), np.float32, order="C")
        return probs, KVState(past=tuple(outputs[1:]), batch=state.batch, length=state.length + 1)
