"""The ring-buffer key/value cache of a graph with a bounded attention span (exact-int-v1-span).

Why: a decode step reads its whole cache (docs/speed.md), and with an attention span S a
token never looks further back than S positions, so the cache needs S slots, not the
window's 1,024. Position p lives in slot p mod S; the graph works out from past_length
which slot holds which position and masks slots not yet written or out of the span
(export/exact_graph.py, `_span_masks`). The attention arithmetic is exact integer
arithmetic, so the order of the slots does not change a bit of the tables.

Same interface as kv_cache.KVCache (for_writing, appended, appended_step, feeds, length),
so the exact runner and its stepper drive either, and the same KVState wraps it. Kept
apart from kv_cache.py: the linear cache grows and copies, the ring never does.

Run-time module: numpy and onnxruntime.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from igpt_codec.runtime.kv_cache import CacheBuffers, KVState
from igpt_codec.runtime.kv_cache import stacked as stacked_linear


class RingCache(CacheBuffers):
    """S slots of keys [L, B, H, D, S] and values [L, B, H, S, D]; position p in slot p mod S.

    Only the newest state (length == `length`) may write. An older state can be stepped
    again only while the ring has not wrapped since (length <= S): then a copy holds it
    exactly (slots written later lie beyond its past and are masked). Beyond that its keys
    are overwritten, and going back is refused rather than silently computing other tables.
    """

    __slots__ = ()

    def __init__(self, all_keys: np.ndarray, all_values: np.ndarray, length: int):
        if all_keys.shape[-1] != all_values.shape[-2] or all_keys.shape[-1] < 1:
            raise ValueError("ring keys and values must have the same number of slots (>= 1)")
        super().__init__(all_keys, all_values, length)

    @classmethod
    def empty(
        cls, n_layer: int, shape: tuple[int, int, int], span: int, dtype=np.float32
    ) -> RingCache:
        batch, heads, head_dim = shape
        keys = np.zeros((n_layer, batch, heads, head_dim, span), dtype)
        values = np.zeros((n_layer, batch, heads, span, head_dim), dtype)
        return cls(keys, values, 0)

    def for_writing(self, past: int) -> RingCache:
        """This cache if its newest state is `past` long, else a copy holding that state."""
        return self if self.length == past else self.forked(past)

    def forked(self, past: int) -> RingCache:
        """A copy holding the state at length `past` (which this ring must still hold)."""
        if past > self.length or (past < self.length and self.length > self.capacity):
            raise ValueError(
                f"a ring cache of {self.capacity} slots at length {self.length} no longer "
                f"holds the state at length {past}"
            )
        return RingCache(self.all_keys.copy(), self.all_values.copy(), past)

    def appended(self, news: Sequence[np.ndarray], past: int) -> RingCache:
        """The graph's new keys and values (k0, v0, k1, ...) of positions past.. written into
        their slots; of a call longer than the ring only the last `capacity` positions stay.

        Written as at most two slices of slots (the positions wrap around the ring at most
        once), not a fancy index: a chunked encode writes S positions per call."""
        seq = news[0].shape[-1]
        keep = min(seq, self.capacity)
        first = (past + seq - keep) % self.capacity
        pieces = [(first, min(first + keep, self.capacity))]
        if first + keep > self.capacity:
            pieces.append((0, first + keep - self.capacity))
        for i in range(len(self.keys)):
            keys, values = news[2 * i][..., seq - keep :], news[2 * i + 1][:, :, seq - keep :]
            done = 0
            for lo, hi in pieces:
                self.keys[i][..., lo:hi] = keys[..., done : done + hi - lo]
                self.values[i][:, :, lo:hi] = values[:, :, done : done + hi - lo]
                done += hi - lo
        self.length = past + seq
        return self

    def appended_step(self, keys: np.ndarray, values: np.ndarray, past: int) -> RingCache:
        """appended() for one position of every layer, stacked: keys [L, B, H, D, 1], values
        [L, B, H, 1, D]. Never reallocates, so a stepper's binding stays valid."""
        slot = past % self.capacity
        self.all_keys[..., slot] = keys[..., 0]
        self.all_values[:, :, :, slot] = values[:, :, :, 0]
        self.length = past + 1
        return self


def stacked(states: list[KVState]) -> KVState:
    """One state holding the sequences of `states` (all of one length), in order.

    The ring counterpart of kv_cache.stacked (which it calls for linear caches): the slot
    of a position depends on the length alone, so rings of one length stack along the batch.
    """
    if not all(isinstance(state.cache, RingCache) for state in states):
        return stacked_linear(states)
    length = states[0].length
    if any(state.length != length for state in states):
        raise ValueError("states to stack must all have the same length")
    keys = np.concatenate([state.cache.all_keys for state in states], axis=1)
    values = np.concatenate([state.cache.all_values for state in states], axis=1)
    cache = RingCache(keys, values, length)
    return KVState(cache, sum(state.batch for state in states), length)  # type: ignore[arg-type]
