"""The codec's model work for either bundle profile, in the shape the benchmarks time it.

Exact bundles (profile exact-int-v1) run `ExactTokenModel`: the graph outputs the
integer frequency tables themselves, the encoder codes an image from ONE
whole-sequence call, and the decoder steps token by token with the KV cache,
feeding each token's position (`igpt_codec.runtime.positions`). Float bundles (profile float32)
run `TokenModel`: probabilities, then `quantize_probs`, token by token on both sides.

`StepRunner` hides that difference for the benchmarks: `model_step` is the runner
call the decoder makes per step, `tables` turns its output into the cumulative tables
the range coder reads (float: quantize + cumulative; exact: cumulative only, the
tables come out of the graph), and `whole_sequence` is the exact encoder's one call.
"""

from __future__ import annotations

import math

import numpy as np

from igpt_codec.core.freq import FREQ_BITS, cumulative, quantize_probs
from igpt_codec.core.palette import PALETTE_SIZE
from igpt_codec.runtime.bundle import Bundle
from igpt_codec.runtime.contract import SOS
from igpt_codec.runtime.exact_runner import ExactTokenModel
from igpt_codec.runtime.float_runner import TokenModel
from igpt_codec.runtime.kv_cache import KVCache, KVState
from igpt_codec.runtime.positions import positions

EXACT_CACHE_LIMIT = 127
"""The exact graph's cache holds int8 values in float32 (manifest: cache_layout.dtype)."""


def profile_name(bundle: Bundle) -> str:
    return "exact" if bundle.exact else "float"


class StepRunner:
    """One bundle's model in the codec's own calls, for `threads` intra-op threads."""

    def __init__(self, bundle: Bundle, threads: int | None = 1):
        self.bundle = bundle
        self.exact = bundle.exact
        self.model: ExactTokenModel | TokenModel = (
            ExactTokenModel(bundle, threads=threads)
            if bundle.exact
            else TokenModel(bundle, threads=threads)
        )

    def start(self, batch: int) -> KVState:
        return self.model.start(batch)

    def positions(self, side: int) -> np.ndarray:
        return positions(side, self.bundle.position_layout, self.bundle.n_positions)

    def model_step(
        self, tokens: np.ndarray, state: KVState, position: int
    ) -> tuple[np.ndarray, KVState]:
        """One decoder step: freqs int64 [B, 512] (exact) or probs float32 [B, 512] (float)."""
        if self.exact:
            batch = state.batch
            ids = np.asarray(tokens, np.int64).reshape(batch, 1)
            freqs, state = self.model.run(ids, np.full((batch, 1), position, np.int64), state)
            return freqs[:, 0], state
        return self.model.step(tokens, state)

    def tables(self, output: np.ndarray) -> np.ndarray:
        """Cumulative tables [..., 513] the coder reads, from a model_step output."""
        if self.exact:
            return cumulative(output)
        return cumulative(quantize_probs(output, FREQ_BITS))

    def whole_sequence(self, tokens: np.ndarray, side: int) -> np.ndarray:
        """The exact encoder's one call for one image: freqs int64 [side², 512]."""
        if not self.exact:
            raise ValueError("whole-sequence coding is for exact bundles only")
        tokens = np.asarray(tokens, np.int64)
        ids = np.concatenate([[SOS], tokens[:-1]])[None, :]
        pos = self.positions(side)[None, :]
        freqs, _ = self.model.run(ids, pos, self.model.start(1), keep_cache=False)
        return freqs[0]

    def synthetic_state(self, batch: int, past: int, seed: int) -> KVState:
        """A KV cache of `past` positions with random values, one buffer per layer input.

        Separate buffers matter: one buffer shared by every layer would stay in the CPU
        cache at small sizes and flatter the step. Float caches get values in [-1, 1),
        exact ones integers in [-127, 127] (what that graph stores); the values do not
        change the speed of either.
        """
        rng = np.random.default_rng(seed)
        bundle = self.bundle
        heads = (bundle.n_head, bundle.head_dim)
        shape = (batch, heads[0], past, heads[1])
        if self.exact:
            block = rng.integers(
                -EXACT_CACHE_LIMIT, EXACT_CACHE_LIMIT + 1, size=shape, dtype=np.int16
            ).astype(np.float32)
        else:
            block = rng.random(shape, dtype=np.float32) * np.float32(2) - np.float32(1)
        # Copied into the runner's own buffers: one per layer input, as the codec has.
        cache = KVCache.empty(bundle.n_layer, (batch, *heads), past)
        for keys in cache.keys:
            keys[..., :past] = np.swapaxes(block, 2, 3)
        for values in cache.values:
            values[:, :, :past] = block
        return KVState(cache, batch, past)


def side_of(positions_count: int) -> int:
    """N for N x N = positions_count (the benchmarks code square thumbnails)."""
    side = math.isqrt(positions_count)
    if side * side != positions_count:
        raise ValueError(f"{positions_count} positions is not a square image")
    return side


def random_tokens(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return rng.integers(0, PALETTE_SIZE, size=shape, dtype=np.int64)
