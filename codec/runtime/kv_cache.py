"""The preallocated key/value cache that both runners step, and the state that wraps it.

Why apart: the float and the exact runner share one cache layout (keys [B, H, D, capacity],
values [B, H, capacity, D], grown in chunks of KV_CHUNK positions: the bundle contract).

Run-time module: numpy and onnxruntime.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import onnxruntime as ort

from igpt_codec.runtime.contract import SOS, cache_capacity


class CacheBuffers:
    """Every layer's key and value buffer as slices of two stacked arrays, wrapped once as
    OrtValues: what the linear cache (below) and the ring (ring_cache.py) share.

    The layer is the outer axis (contiguous), so a decode step appends all layers' keys in
    one assignment; the OrtValues wrap the numpy memory (no copy), so writes into the
    buffers are seen by the graph.
    """

    __slots__ = ("all_keys", "all_values", "feeds", "keys", "length", "values")

    def __init__(self, all_keys: np.ndarray, all_values: np.ndarray, length: int):
        self.all_keys = all_keys
        self.all_values = all_values
        self.keys = list(all_keys)
        self.values = list(all_values)
        self.length = length
        self.feeds = [
            ort.OrtValue.ortvalue_from_numpy(b)
            for pair in zip(self.keys, self.values, strict=True)
            for b in pair
        ]

    @property
    def capacity(self) -> int:
        return self.all_keys.shape[-1]


class KVCache(CacheBuffers):
    """Preallocated K/V buffers shared by the states of one batch of sequences.

    Keys are stored [B, H, D, capacity] (q @ keys needs no transpose), values
    [B, H, capacity, D]. Positions >= `length` are zero. Only the state whose length
    equals `length` (the newest) may write; an older state forks a copy first, so every
    KVState behaves as immutable while the usual forward-only loop never copies the cache.
    """

    __slots__ = ()

    @classmethod
    def empty(
        cls, n_layer: int, shape: tuple[int, int, int], length: int, dtype=np.float32
    ) -> KVCache:
        batch, heads, head_dim = shape
        capacity = cache_capacity(length)
        keys = np.zeros((n_layer, batch, heads, head_dim, capacity), dtype)
        values = np.zeros((n_layer, batch, heads, capacity, head_dim), dtype)
        return cls(keys, values, length)

    def for_writing(self, past: int) -> KVCache:
        """This cache if its newest state is `past` long, else a copy (copy on write)."""
        return self if self.length == past else self.resized(past, past)

    def forked(self, past: int) -> KVCache:
        """A copy holding the first `past` positions (a caller that must not touch this one)."""
        return self.resized(past, past)

    def appended(self, news: Sequence[np.ndarray], past: int) -> KVCache:
        """The cache with the graph's new keys and values (k0, v0, k1, ...) after `past`;
        grown into a fresh buffer when they pass its capacity."""
        length = past + news[0].shape[-1]
        cache = self if cache_capacity(length) == self.capacity else self.resized(length, past)
        for i in range(len(cache.keys)):
            cache.keys[i][..., past:length] = news[2 * i]
            cache.values[i][:, :, past:length] = news[2 * i + 1]
        cache.length = length
        return cache

    def appended_step(self, keys: np.ndarray, values: np.ndarray, past: int) -> KVCache:
        """appended() for one position of every layer, stacked: keys [L, B, H, D, 1], values
        [L, B, H, 1, D]."""
        cache = self if cache_capacity(past + 1) == self.capacity else self.resized(past + 1, past)
        cache.all_keys[..., past] = keys[..., 0]
        cache.all_values[:, :, :, past] = values[:, :, :, 0]
        cache.length = past + 1
        return cache

    def resized(self, length: int, keep: int) -> KVCache:
        """A cache of capacity cache_capacity(length) holding this one's first `keep` positions."""
        n_layer, batch, heads, head_dim, _ = self.all_keys.shape
        out = KVCache.empty(n_layer, (batch, heads, head_dim), length, self.all_keys.dtype)
        out.all_keys[..., :keep] = self.all_keys[..., :keep]
        out.all_values[:, :, :, :keep] = self.all_values[:, :, :, :keep]
        out.length = keep
        return out


def checked_ids(ids: np.ndarray, state: KVState, n_positions: int) -> np.ndarray:
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

    cache: KVCache = field(repr=False)
    batch: int
    length: int


def stacked(states: list[KVState]) -> KVState:
    """One state holding the sequences of `states` (all of one length), in order.

    Why: a caller may feed a large batch's prefix in several smaller calls (their memory
    grows with the batch) and step the whole batch from one cache afterwards; the exact
    graph's numbers do not depend on how the batch was cut.
    """
    length = states[0].length
    if any(state.length != length for state in states):
        raise ValueError("states to stack must all have the same length")
    keys = np.concatenate([state.cache.all_keys for state in states], axis=1)
    values = np.concatenate([state.cache.all_values for state in states], axis=1)
    cache = KVCache(keys, values, length)
    return KVState(cache, sum(state.batch for state in states), length)
