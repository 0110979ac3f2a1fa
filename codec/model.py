"""The ONNX Runtime step runner that encoder and decoder share.

Losslessness needs the encoder and the decoder to see bit-identical
probabilities, so both must run this exact code path: the same graph, the same
session options, token by token with the KV cache (a full-sequence pass differs
in the last bits). Keep every numerics-relevant choice here, in one place.

Run-time module: numpy and onnxruntime only.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort

from codec.bundle import KV_CHUNK, Bundle
from format.errors import BundleError

SOS = 512
VOCAB = 512
INPUT_IDS = "input_ids"
PAST_LENGTH = "past_length"
LOGITS_OUTPUT = "logits"
PROBS_OUTPUT = "probs"
POSITION_IDS = "position_ids"
EXACT_FREQS = "freqs"


def graph_io_names(n_layer: int) -> tuple[list[str], list[str]]:
    """(inputs, outputs) of the step graph in graph order: the bundle contract's names.

    inputs: input_ids int64 [batch, seq], past_length int64 [] (valid cache positions),
    then per layer past.{i}.key float32 [batch, heads, head_dim, capacity] and
    past.{i}.value [batch, heads, capacity, head_dim]. outputs: logits and probs
    [batch, seq, 512], then per layer new.{i}.key [batch, heads, head_dim, seq] and
    new.{i}.value [batch, heads, seq, head_dim]: the keys and values of the fed tokens only.
    """
    past, new = [], []
    for i in range(n_layer):
        past += [f"past.{i}.key", f"past.{i}.value"]
        new += [f"new.{i}.key", f"new.{i}.value"]
    return [INPUT_IDS, PAST_LENGTH, *past], [LOGITS_OUTPUT, PROBS_OUTPUT, *new]


def exact_io_names(n_layer: int) -> tuple[list[str], list[str]]:
    """(inputs, outputs) of the exact step graph (contract exact-int-v1), in graph order.

    inputs: input_ids and position_ids int64 [batch, seq], past_length int64 [], then per
    layer past.{i}.key float32 [batch, heads, head_dim, capacity] and past.{i}.value
    [batch, heads, capacity, head_dim], all integer-valued. outputs: freqs int32
    [batch, seq, 512] (every entry >= 1: the coder's table), then per layer new.{i}.key
    [batch, heads, head_dim, seq] and new.{i}.value [batch, heads, seq, head_dim].
    """
    past, new = [], []
    for i in range(n_layer):
        past += [f"past.{i}.key", f"past.{i}.value"]
        new += [f"new.{i}.key", f"new.{i}.value"]
    return [INPUT_IDS, POSITION_IDS, PAST_LENGTH, *past], [EXACT_FREQS, *new]


def cache_capacity(length: int) -> int:
    """Cache positions allocated for a sequence of `length` tokens: whole chunks, at least one.

    A function of the length alone, never of batch size or threads: the capacity is the
    softmax length inside the graph, so encoder and decoder must feed the same one.
    """
    return KV_CHUNK * max(1, -(-length // KV_CHUNK))


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
    # Shapes change with the cache capacity (every KV_CHUNK steps) and the batch; a memory
    # pattern would rarely be reused.
    options.enable_mem_pattern = False
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
) -> ort.InferenceSession:
    """An onnxruntime session for a bundle graph, checked against what the manifest says.

    With `sha256` (a loaded bundle's), the graph is read once, its hash compared and
    the session built from those very bytes, so a file replaced after load_bundle
    verified it cannot slip in. Every way onnxruntime can refuse the file becomes a
    one-line BundleError, and the graph's own cache shapes must carry the manifest's
    head count and head size, so an edited manifest cannot reach onnxruntime as a
    shape error in the middle of a run. Sessions are cached per (graph, threads).
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise BundleError(f"cannot read {path}: {exc.strerror or exc}") from exc
    digest = hashlib.sha256(data).hexdigest()
    if sha256 is not None and digest != sha256:
        raise BundleError(f"{path.name} changed since its bundle was verified (sha256 mismatch)")
    key = (digest, threads, tuple(names[0]), tuple(names[1]), heads)
    cached = _SESSIONS.get(key)
    if cached is not None:
        return cached
    try:
        session = ort.InferenceSession(
            data, sess_options=make_session_options(threads), providers=["CPUExecutionProvider"]
        )
    except Exception as exc:  # onnxruntime raises its own pybind exception types
        raise BundleError(f"onnxruntime cannot load {path.name}: {_first_line(exc)}") from exc
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


_SESSION_CACHE = 2
"""Sessions kept for reuse (one decode call after another skips the graph load)."""
_SESSIONS: dict[tuple, ort.InferenceSession] = {}


def run_session(session: ort.InferenceSession, fetch: list[str], feeds: dict) -> list:
    """session.run_with_ort_values with onnxruntime's failures as one-line BundleErrors."""
    try:
        return session.run_with_ort_values(fetch, feeds)
    except Exception as exc:  # onnxruntime raises its own pybind exception types
        raise BundleError(f"the model graph failed to run: {_first_line(exc)}") from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]


class _Cache:
    """Preallocated K/V buffers shared by the states of one batch of sequences.

    Keys are stored [B, H, D, capacity] (q @ keys needs no transpose), values
    [B, H, capacity, D]. Positions >= `length` are zero. Only the state whose length
    equals `length` (the newest) may write; an older state forks a copy first, so every
    KVState behaves as immutable while the usual forward-only loop never copies the cache.
    """

    __slots__ = ("all_keys", "all_values", "feeds", "keys", "length", "values")

    def __init__(self, all_keys: np.ndarray, all_values: np.ndarray, length: int):
        # Every layer's buffer is one slice of a stacked array (contiguous: the layer is the
        # outer axis), so a decode step appends all layers' keys in one assignment.
        self.all_keys = all_keys
        self.all_values = all_values
        self.keys = list(all_keys)
        self.values = list(all_values)
        self.length = length
        # OrtValues wrap the numpy memory (no copy): writes into the buffers are seen by the graph.
        self.feeds = [
            ort.OrtValue.ortvalue_from_numpy(b)
            for pair in zip(self.keys, self.values, strict=True)
            for b in pair
        ]

    @classmethod
    def empty(
        cls, n_layer: int, shape: tuple[int, int, int], length: int, dtype=np.float32
    ) -> _Cache:
        batch, heads, head_dim = shape
        capacity = cache_capacity(length)
        keys = np.zeros((n_layer, batch, heads, head_dim, capacity), dtype)
        values = np.zeros((n_layer, batch, heads, capacity, head_dim), dtype)
        return cls(keys, values, length)

    @property
    def capacity(self) -> int:
        return self.all_keys.shape[-1]

    def for_writing(self, past: int) -> _Cache:
        """This cache if its newest state is `past` long, else a copy (copy on write)."""
        return self if self.length == past else self.resized(past, past)

    def appended(self, news: Sequence[np.ndarray], past: int) -> _Cache:
        """The cache with the graph's new keys and values (k0, v0, k1, ...) after `past`;
        grown into a fresh buffer when they pass its capacity."""
        length = past + news[0].shape[-1]
        cache = self if cache_capacity(length) == self.capacity else self.resized(length, past)
        for i in range(len(cache.keys)):
            cache.keys[i][..., past:length] = news[2 * i]
            cache.values[i][:, :, past:length] = news[2 * i + 1]
        cache.length = length
        return cache

    def appended_step(self, keys: np.ndarray, values: np.ndarray, past: int) -> _Cache:
        """appended() for one position of every layer, stacked: keys [L, B, H, D, 1], values
        [L, B, H, 1, D]."""
        cache = self if cache_capacity(past + 1) == self.capacity else self.resized(past + 1, past)
        cache.all_keys[..., past] = keys[..., 0]
        cache.all_values[:, :, :, past] = values[:, :, :, 0]
        cache.length = past + 1
        return cache

    def resized(self, length: int, keep: int) -> _Cache:
        """A cache of capacity cache_capacity(length) holding this one's first `keep` positions."""
        n_layer, batch, heads, head_dim, _ = self.all_keys.shape
        out = _Cache.empty(n_layer, (batch, heads, head_dim), length, self.all_keys.dtype)
        out.all_keys[..., :keep] = self.all_keys[..., :keep]
        out.all_values[:, :, :, :keep] = self.all_values[:, :, :, :keep]
        out.length = keep
        return out


def _checked_ids(ids: np.ndarray, state: KVState, n_positions: int) -> np.ndarray:
    """Token ids [batch, seq >= 1] in 0..SOS that still fit the model's positions."""
    ids = np.asarray(ids)
    if ids.ndim != 2 or ids.shape[0] != state.batch or ids.shape[1] < 1:
        raise ValueError(f"ids must be [{state.batch}, seq >= 1], got {ids.shape}")
    if not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"tokens must be integers, got {ids.dtype}")
    if int(ids.min()) < 0 or int(ids.max()) > SOS:
        raise ValueError("tokens must lie in [0, 512] (512 = SOS)")
    if state.length + ids.shape[1] > n_positions:
        raise ValueError(f"the model has only {n_positions} positions")
    return ids


@dataclass(frozen=True)
class KVState:
    """The KV cache after `length` tokens of `batch` sequences; behaves as immutable, reusable.

    Stepping the newest state of a cache appends in place; stepping an older one (the same
    state twice) copies its `length` positions into a fresh cache first (copy-on-write).
    """

    cache: _Cache = field(repr=False)
    batch: int
    length: int


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
        return KVState(_Cache.empty(self.n_layer, (batch, *self._heads), 0), batch, 0)

    def state_from_cache(self, keys: Sequence[np.ndarray], values: Sequence[np.ndarray]) -> KVState:
        """A state holding a given cache, per layer [B, H, P, D] (benchmarks and tests)."""
        batch, _, length, _ = keys[0].shape
        cache = _Cache.empty(self.n_layer, (batch, *self._heads), length)
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
        ids = _checked_ids(ids, state, self.n_positions)
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


class ExactTokenModel:
    """Integer frequency tables from an exact-arithmetic graph (profile exact-int-v1).

    Every value the graph computes is an integer held exactly, so its output does not
    depend on threads, batch grouping, whole-sequence vs token-by-token, the CPU or the
    onnxruntime release. The encoder therefore runs each image in one call (`run` with the
    whole sequence); the decoder steps with the KV cache. The tables go straight to the
    range coder: no float operation follows the graph.
    """

    def __init__(self, bundle: Bundle, threads: int | None = None):
        self.bundle = bundle
        self.n_layer = bundle.n_layer
        self.n_positions = bundle.n_positions
        self._heads = (bundle.n_head, bundle.head_dim)
        inputs, outputs = exact_io_names(bundle.n_layer)
        self.session = open_session(
            bundle.model_path,
            threads,
            (inputs, outputs),
            self._heads,
            sha256=bundle.manifest["files"]["model.onnx"]["sha256"],
        )
        self._past_names = inputs[3:]
        self._new_names = outputs[1:]

    def start(self, batch: int) -> KVState:
        """An empty cache (past length 0); the first token fed must be SOS."""
        if batch < 1:
            raise ValueError(f"batch must be >= 1, got {batch}")
        cache = _Cache.empty(self.n_layer, (batch, *self._heads), 0)
        return KVState(cache, batch, 0)

    def run(
        self, ids: np.ndarray, positions: np.ndarray, state: KVState, keep_cache: bool = True
    ) -> tuple[np.ndarray, KVState]:
        """Feed `seq` tokens per sequence at the given positions; freqs int64 [B, seq, 512].

        keep_cache=False skips storing the new keys and values (the encoder's single
        whole-sequence call needs no cache afterwards); the returned state is then the input.
        """
        ids = _checked_ids(ids, state, self.n_positions)
        positions = np.asarray(positions)
        if positions.shape != ids.shape or not np.issubdtype(positions.dtype, np.integer):
            raise ValueError(f"positions must be integers shaped like ids {ids.shape}")
        if int(positions.min()) < 0 or int(positions.max()) >= self.n_positions:
            raise ValueError(f"positions must lie in [0, {self.n_positions})")
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
        outputs = run_session(self.session, [EXACT_FREQS, *self._new_names], feeds)
        freqs = outputs[0].numpy().astype(np.int64)
        if not keep_cache:
            return freqs, state
        news = [o.numpy() for o in outputs[1:]]
        return freqs, KVState(cache.appended(news, past), state.batch, past + seq)

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
        self._binding = model.session.io_binding()
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
            self._model.session.run_with_iobinding(self._binding)
        except Exception as exc:  # onnxruntime raises its own pybind exception types
            raise BundleError(f"the model graph failed to run: {_first_line(exc)}") from exc
        cache = self._cache.appended_step(self._new_keys, self._new_values, self._length)
        if cache is not self._cache:
            self._cache = cache
            self._bind_cache()
        self._length += 1
        return self._freqs[:, 0]
