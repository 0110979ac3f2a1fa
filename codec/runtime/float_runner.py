"""The float32 step runner: next-token probabilities token by token with the KV cache.

Losslessness needs the encoder and the decoder to see bit-identical probabilities. A
float graph gives them only on the machine and onnxruntime release that wrote a file,
and only along one path: the same graph, the same session options, token by token with
the KV cache (a full-sequence pass differs in the last bits). Kept for parity and
measurement; the codec codes with the exact runner (exact_runner.py).

Run-time module: numpy and onnxruntime only.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort

from igpt_codec.core.errors import BundleError
from igpt_codec.runtime.bundle import Bundle
from igpt_codec.runtime.contract import (
    INPUT_IDS,
    LOGITS_OUTPUT,
    PAST_LENGTH,
    PROBS_OUTPUT,
    VOCAB,
    graph_io_names,
)
from igpt_codec.runtime.kv_cache import KVCache, KVState, checked_ids
from igpt_codec.runtime.session import open_session, run_session


class TokenModel:
    """Next-token probabilities, one position at a time, for a batch of sequences."""

    def __init__(self, bundle: Bundle, threads: int | None = None):
        self.bundle = bundle
        self._open(bundle.model_path, bundle.n_layer, bundle.n_head, bundle.head_dim, threads)
        self.n_positions = bundle.n_positions
        inputs, outputs = graph_io_names(bundle.n_layer)
        if tuple(inputs) != bundle.input_names or tuple(outputs) != bundle.output_names:
            raise BundleError(f"the manifest's io names do not match {bundle.n_layer} layers")

    @classmethod
    def for_graph(
        cls,
        model_path: Path,
        *,
        n_layer: int,
        n_head: int,
        head_dim: int,
        n_positions: int,
        threads: int | None = None,
    ) -> TokenModel:
        """A runner for a bare step graph (export: parity runs before the bundle exists)."""
        model = cls.__new__(cls)
        model.bundle = None
        model._open(model_path, n_layer, n_head, head_dim, threads)
        model.n_positions = n_positions
        return model

    def _open(
        self, path: Path, n_layer: int, n_head: int, head_dim: int, threads: int | None
    ) -> None:
        inputs, outputs = graph_io_names(n_layer)
        sha256 = self.bundle.manifest["files"]["model.onnx"]["sha256"] if self.bundle else None
        self.session = open_session(path, threads, (inputs, outputs), (n_head, head_dim), sha256)
        self._past_names = inputs[2:]
        self._new_names = outputs[2:]
        self.n_layer = n_layer
        self._heads = (n_head, head_dim)

    def start(self, batch: int) -> KVState:
        """An empty cache (past length 0); the first step must feed SOS."""
        if batch < 1:
            raise ValueError(f"batch must be >= 1, got {batch}")
        return KVState(KVCache.empty(self.n_layer, (batch, *self._heads), 0), batch, 0)

    def state_from_cache(self, keys: Sequence[np.ndarray], values: Sequence[np.ndarray]) -> KVState:
        """A state holding a given cache, per layer [B, H, P, D] (benchmarks and tests)."""
        batch, _, length, _ = keys[0].shape
        cache = KVCache.empty(self.n_layer, (batch, *self._heads), length)
        for src, dst in zip(keys, cache.keys, strict=True):
            dst[..., :length] = np.swapaxes(src, 2, 3)
        for src, dst in zip(values, cache.values, strict=True):
            dst[:, :, :length] = src
        return KVState(cache, batch, length)

    def step(self, tokens: np.ndarray, state: KVState) -> tuple[np.ndarray, KVState]:
        """Feed one token per sequence; returns probs float32 [B, 512] for the next token.

        The cache lives in runner-owned buffers that the graph reads in place; the graph
        returns only the new keys and values, which are written into the buffers, so the
        cache is never copied per step (only every KV_CHUNK positions, when it grows).
        """
        tokens = np.asarray(tokens)
        if tokens.shape != (state.batch,) or not np.issubdtype(tokens.dtype, np.integer):
            raise ValueError(
                f"tokens must be {state.batch} integers, got {tokens.dtype} {tokens.shape}"
            )
        probs, state = self.run(tokens.reshape(state.batch, 1), state)
        return probs[:, 0], state

    def run(
        self, ids: np.ndarray, state: KVState, logits: bool = False
    ) -> tuple[np.ndarray, KVState] | tuple[np.ndarray, np.ndarray, KVState]:
        """Feed `seq` tokens per sequence (ids [B, seq]); probs [B, seq, 512] (and logits).

        The codec steps one token at a time (step); seq > 1 gives other floats in the last bits.
        """
        ids = checked_ids(ids, state, self.n_positions)
        past, seq = state.length, ids.shape[1]
        cache = state.cache.for_writing(past)
        feeds = {
            INPUT_IDS: ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(ids, np.int64)),
            PAST_LENGTH: ort.OrtValue.ortvalue_from_numpy(np.array(past, np.int64)),
        }
        feeds.update(zip(self._past_names, cache.feeds, strict=True))
        fetch = [LOGITS_OUTPUT, PROBS_OUTPUT] if logits else [PROBS_OUTPUT]
        outputs = run_session(self.session, [*fetch, *self._new_names], feeds)
        news = [o.numpy() for o in outputs[len(fetch) :]]
        after = KVState(cache.appended(news, past), state.batch, past + seq)
        # OrtValue.numpy() is a view of onnxruntime's buffer; copy so callers own their arrays.
        shape = (state.batch, seq, VOCAB)
        fetched = [
            np.array(o.numpy().reshape(shape), np.float32, order="C") for o in outputs[: len(fetch)]
        ]
        if logits:
            return fetched[0], fetched[1], after
        return fetched[0], after
