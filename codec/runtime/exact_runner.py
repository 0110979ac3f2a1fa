"""The exact runner: integer frequency tables from an exact-arithmetic graph.

The encoder runs a whole sequence in one call; the decoder steps token by token with the
KV cache (ExactStepper). Both give the same integers, on every CPU and onnxruntime
release, because every value the graph computes is an integer held exactly.

Run-time module: numpy and onnxruntime only.
"""

from __future__ import annotations

import threading

import numpy as np
import onnxruntime as ort

from igpt_codec.core.errors import BundleError
from igpt_codec.runtime.bundle import Bundle
from igpt_codec.runtime.contract import (
    EXACT_FREQS,
    INPUT_IDS,
    PAST_LENGTH,
    POSITION_IDS,
    VOCAB,
    exact_io_names,
)
from igpt_codec.runtime.kv_cache import KVCache, KVState, checked_ids
from igpt_codec.runtime.ring_cache import RingCache
from igpt_codec.runtime.session import first_line, open_session, run_session


class ExactTokenModel:
    """Integer frequency tables from an exact-arithmetic graph (profile exact-int-v1).

    Every value the graph computes is an integer held exactly, so its output does not
    depend on threads, batch grouping, whole-sequence vs token-by-token, the CPU or the
    onnxruntime release. The encoder therefore runs each image in one `run` with the whole
    sequence (which a bundle with an attention span feeds through its ring in chunks of S
    tokens); the decoder steps with the KV cache. The tables go straight to the range
    coder: no float operation follows the graph.
    """

    def __init__(self, bundle: Bundle, threads: int | None = None):
        self.bundle = bundle
        self.n_layer = bundle.n_layer
        self.n_positions = bundle.n_positions
        self._heads = (bundle.n_head, bundle.head_dim)
        inputs, outputs = exact_io_names(bundle.n_layer)
        self._threads = threads
        self._names = (inputs, outputs)
        self._session: ort.InferenceSession | None = None
        self._opened: ort.InferenceSession | None = None  # the one this model opened
        self._step_session: ort.InferenceSession | None = None
        self._lock = threading.Lock()  # decoder threads may ask for a session at once
        self._past_names = inputs[3:]
        self._new_names = outputs[1:]

    def _open(self, mem_pattern: bool) -> ort.InferenceSession:
        return open_session(
            self.bundle.model_path,
            self._threads,
            self._names,
            self._heads,
            sha256=self.bundle.manifest["files"]["model.onnx"]["sha256"],
            mem_pattern=mem_pattern,
        )

    @property
    def session(self) -> ort.InferenceSession:
        """The session whole-sequence calls run, opened on first use: a thumbnail decoder
        only steps, and opening a session it never runs cost about 15 ms of its process.
        Opening checks the graph (its bytes' hash against the manifest, its inputs against
        the manifest's shapes), so a bad bundle is a BundleError at the first call that
        needs a session, before any token is coded."""
        with self._lock:
            if self._session is None:
                self._session = self._opened = self._open(mem_pattern=False)
            return self._session

    @session.setter
    def session(self, session: ort.InferenceSession) -> None:
        """A caller's own session (a profiler's): run() and the steppers both use it, until
        the model's own is set back."""
        with self._lock:
            self._session = session

    @property
    def step_session(self) -> ort.InferenceSession:
        """The session the steppers run: for a bundle with an attention span, one with
        onnxruntime's memory pattern (a ring's steps all have the same shapes, so the
        planned buffers are reused: 1.22x faster steps at batch 1, 1.04x at 12; the same
        tables), opened on first use; otherwise the model's own session, as when a caller
        set `session` to its own (a profiler's)."""
        if self.bundle.attention_span is None:
            return self.session
        with self._lock:
            if self._session is not None and self._session is not self._opened:
                return self._session  # a caller's own
            if self._step_session is None:
                self._step_session = self._open(mem_pattern=True)
            return self._step_session

    def start(self, batch: int) -> KVState:
        """An empty cache (past length 0); the first token fed must be SOS.

        A bundle with an attention span S gets a ring of S slots (ring_cache.py), else the
        linear cache that grows in chunks.
        """
        if batch < 1:
            raise ValueError(f"batch must be >= 1, got {batch}")
        span = self.bundle.attention_span
        if span is not None:
            ring = RingCache.empty(self.n_layer, (batch, *self._heads), span)
            return KVState(ring, batch, 0)  # type: ignore[arg-type]
        cache = KVCache.empty(self.n_layer, (batch, *self._heads), 0)
        return KVState(cache, batch, 0)

    def run(
        self,
        ids: np.ndarray,
        positions: np.ndarray,
        state: KVState,
        keep_cache: bool = True,
        chunk: int | None = None,
        out: np.ndarray | None = None,
    ) -> tuple[np.ndarray, KVState]:
        """Feed `seq` tokens per sequence at the given positions; freqs int64 [B, seq, 512]
        (or written into `out`, an int32 or int64 array of that shape, and returned: the
        encoder's int32 tables, without a copy through int64 and back).

        keep_cache=False skips storing the new keys and values (the encoder's single
        whole-sequence call needs no cache afterwards); the returned state is then the input.

        With an attention span S, a sequence longer than `chunk` tokens (1..S, default S)
        goes through the graph in chunks of that many (`_run_chunked`): the same integers,
        a fraction of the work. Each token of a chunk of c scores S + c slots (the ring
        and the chunk), so shorter chunks waste fewer scores but pay the per-call cost more
        often: c = S suits one sequence, c = 64 a batch of a few (see ENCODE_CHUNK).
        """
        ids = checked_ids(ids, state, self.n_positions)
        positions = np.asarray(positions)
        if positions.shape != ids.shape or not np.issubdtype(positions.dtype, np.integer):
            raise ValueError(f"positions must be integers shaped like ids {ids.shape}")
        if int(positions.min()) < 0 or int(positions.max()) >= self.n_positions:
            raise ValueError(f"positions must lie in [0, {self.n_positions})")
        span = self.bundle.attention_span
        size = ids.shape[1] if span is None else span if chunk is None else chunk
        if span is not None and not 1 <= size <= span:
            raise ValueError(f"chunk must lie in [1, {span}] (the span), got {chunk}")
        freqs = _tables_out(out, ids.shape)
        if ids.shape[1] > size:
            return freqs, self._run_chunked(ids, positions, state, keep_cache, size, freqs)
        return freqs, self._call(ids, positions, state, keep_cache, freqs)

    def _run_chunked(
        self,
        ids: np.ndarray,
        positions: np.ndarray,
        state: KVState,
        keep_cache: bool,
        chunk: int,
        freqs: np.ndarray,
    ) -> KVState:
        """run() for a span bundle, `chunk` (<= S) tokens per graph call through the ring.

        Why: one call of seq tokens computes seq x (C + seq) attention scores (a window at
        past 0: the 1,024^2 triangle, nearly all of it masked); a chunk of S after a full ring
        computes S x 2S, every score within reach of the span. The graph accepts any past and
        seq, and its tables do not depend on how a sequence is cut (tests/test_attention_span.py,
        tests/test_span_speed_paths.py). keep_cache=False works on a private ring (a fresh
        one at past 0, else a copy), so the caller's state is left as it was.
        """
        seq = ids.shape[1]
        if keep_cache:
            work = state
        elif state.length == 0:
            work = self.start(state.batch)
        else:
            work = KVState(state.cache.forked(state.length), state.batch, state.length)
        for lo in range(0, seq, chunk):
            hi = min(lo + chunk, seq)
            keep = keep_cache or hi < seq
            work = self._call(ids[:, lo:hi], positions[:, lo:hi], work, keep, freqs[:, lo:hi])
        return work if keep_cache else state

    def _call(
        self,
        ids: np.ndarray,
        positions: np.ndarray,
        state: KVState,
        keep_cache: bool,
        freqs: np.ndarray,
    ) -> KVState:
        """One graph call on checked inputs; its tables written into `freqs` [B, seq, 512]."""
        past, seq = state.length, ids.shape[1]
        cache = state.cache.for_writing(past)
        feeds = {
            INPUT_IDS: ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(ids, np.int64)),
            POSITION_IDS: ort.OrtValue.ortvalue_from_numpy(
                np.ascontiguousarray(positions, np.int64)
            ),
            PAST_LENGTH: ort.OrtValue.ortvalue_from_numpy(np.array(past, np.int64)),
        }
        feeds.update(zip(self._past_names, cache.feeds, strict=True))
        names = [EXACT_FREQS, *self._new_names] if keep_cache else [EXACT_FREQS]
        outputs = run_session(self.session, names, feeds)
        tables = outputs[0].numpy()
        if tables.shape != freqs.shape:
            raise BundleError(f"the model graph gave tables {tables.shape}, not {freqs.shape}")
        freqs[...] = tables
        if not keep_cache:
            return state
        news = [o.numpy() for o in outputs[1:]]
        return KVState(cache.appended(news, past), state.batch, past + seq)

    def stepper(self, state: KVState) -> ExactStepper:
        """A decoder's token-by-token loop from `state` on, without run()'s per-call costs."""
        return ExactStepper(self, state)


class ExactStepper:
    """One token per sequence per call, through an onnxruntime IOBinding.

    Why: a decode step of the default model at batch 12 takes about 2 ms in the graph,
    and run() spent a further 0.3 ms per step in Python (checking its inputs, wrapping
    them and the seven outputs in new OrtValues, copying the table). Here the inputs and
    outputs are bound once to buffers this object owns, so a step writes the tokens and
    the position into them, runs, and appends the new keys and values to the cache; the
    graph computes the same integers as through run().
    """

    def __init__(self, model: ExactTokenModel, state: KVState) -> None:
        self._model = model
        self._batch = state.batch
        self._length = state.length
        self._cache = state.cache.for_writing(state.length)
        n_head, head_dim = model._heads
        batch = state.batch
        self._ids = np.zeros((batch, 1), np.int64)
        self._positions = np.zeros((batch, 1), np.int64)
        self._past = np.zeros((), np.int64)
        self._freqs = np.zeros((batch, 1, VOCAB), np.int32)
        self._new_keys = np.zeros((model.n_layer, batch, n_head, head_dim, 1), np.float32)
        self._new_values = np.zeros((model.n_layer, batch, n_head, 1, head_dim), np.float32)
        news = [b for pair in zip(self._new_keys, self._new_values, strict=True) for b in pair]
        self._session = model.step_session
        self._binding = self._session.io_binding()
        for name, array in [
            (INPUT_IDS, self._ids),
            (POSITION_IDS, self._positions),
            (PAST_LENGTH, self._past),
        ]:
            self._binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(array))
        outputs = [EXACT_FREQS, *model._new_names]
        for name, array in zip(outputs, [self._freqs, *news], strict=True):
            self._binding.bind_ortvalue_output(name, ort.OrtValue.ortvalue_from_numpy(array))
        self._bind_cache()

    def _bind_cache(self) -> None:
        for name, value in zip(self._model._past_names, self._cache.feeds, strict=True):
            self._binding.bind_ortvalue_input(name, value)

    @property
    def state(self) -> KVState:
        """The cache after the tokens fed so far (stepping it elsewhere copies it first)."""
        return KVState(self._cache, self._batch, self._length)

    def step(self, tokens: np.ndarray, position: int) -> np.ndarray:
        """Feed tokens [B] (0..512) at one position; the next tables int32 [B, 512], a view
        that the next step overwrites."""
        if self._length >= self._model.n_positions or not 0 <= position < self._model.n_positions:
            raise ValueError(f"the model has only {self._model.n_positions} positions")
        if self._cache.length != self._length:
            raise ValueError("the cache was stepped elsewhere since this stepper began")
        self._ids[:, 0] = tokens
        self._positions[:] = position
        self._past[...] = self._length
        try:
            self._session.run_with_iobinding(self._binding)
        except Exception as exc:  # onnxruntime raises its own pybind exception types
            raise BundleError(f"the model graph failed to run: {first_line(exc)}") from exc
        cache = self._cache.appended_step(self._new_keys, self._new_values, self._length)
        if cache is not self._cache:
            self._cache = cache
            self._bind_cache()
        self._length += 1
        return self._freqs[:, 0]


def _tables_out(out: np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray:
    """Where run() writes its tables: `out`, checked, or a new int64 array."""
    want = (*shape, VOCAB)
    if out is None:
        return np.empty(want, np.int64)
    if out.shape != want or out.dtype not in (np.int32, np.int64):
        raise ValueError(f"out must be int32 or int64 shaped {want}, got {out.dtype} {out.shape}")
    return out
