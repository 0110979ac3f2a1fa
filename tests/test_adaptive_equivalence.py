"""The vectorized mixer's shortcuts against the plain reading of format/SPEC.md.

Why: AdaptiveMixer stacks its three levels, divides row by row and skips arithmetic
whose result it knows (levels with no counts yet, levels whose weights are all 4096);
each shortcut is a branch the spec does not have. These runs drive one mixer through
every branch (steps of changing size, new and repeated contexts, weights that move and
weights that stay, counts that halve, a level that forgets) and ask for the spec's
tables at every step.
"""

from __future__ import annotations

import numpy as np
import pytest
from test_adaptive import ReferenceMixer

from igpt_codec.core.adaptive import NONE, AdaptiveMixer


def _model_tables(rng: np.random.Generator, batch: int, peak: int | None) -> np.ndarray:
    """Model-like tables: a few likely symbols over a long tail, optionally one sharp."""
    logits = rng.normal(0, 3, (batch, 512))
    if peak is not None:
        logits[:, peak] += 10
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    return np.maximum(1, (probs * (1 << 20)).astype(np.int64))


@pytest.mark.parametrize(
    ("seed", "capacity", "colours", "repeat"),
    [
        (0, 16384, 6, 0.8),  # contexts repeat: counts grow, weights stay near 4096
        (1, 16384, 60, 0.05),  # counts do not help: weights fall
        (2, 12, 30, 0.5),  # a small capacity: the neighbour levels forget
    ],
)
def test_every_step_matches_the_spec(seed: int, capacity: int, colours: int, repeat: float):
    rng = np.random.default_rng(seed)
    palette = rng.integers(0, 512, colours)
    mixer, reference = AdaptiveMixer(capacity), ReferenceMixer(capacity)
    sizes = [1, 8, 3, 12, 8, 1, 5]
    for number in range(40):
        batch = min(sizes[number % len(sizes)], capacity)
        freqs = _model_tables(rng, batch, int(palette[0]) if number % 3 else None)
        neighbours = palette[rng.integers(0, colours, (batch, 4))]
        neighbours[rng.random((batch, 4)) < 0.1] = NONE
        copied = np.where(neighbours[:, 0] == NONE, palette[0], neighbours[:, 0])
        symbols = np.where(
            rng.random(batch) < repeat, copied, palette[rng.integers(0, colours, batch)]
        )
        table, step = mixer.tables(freqs, neighbours)
        want = reference.step(freqs.tolist(), neighbours.tolist(), symbols.tolist())
        assert table.tolist() == want, f"step {number}"
        mixer.update(step, symbols)
    assert [level.weights.tolist() for level in mixer._levels] == reference.weights


def test_halving_in_a_large_step_matches_the_spec() -> None:
    """Steps of 64 windows in two contexts pass the count limit (about 32 a step each)."""
    rng = np.random.default_rng(5)
    mixer, reference = AdaptiveMixer(), ReferenceMixer()
    halved = False
    for _ in range(40):
        freqs = _model_tables(rng, 64, 7)
        neighbours = np.where(rng.random((64, 1)) < 0.5, 7, 9) * np.ones((1, 4), np.int64)
        symbols = np.where(rng.random(64) < 0.9, 7, rng.integers(0, 512, 64))
        table, step = mixer.tables(freqs, neighbours)
        assert table.tolist() == reference.step(
            freqs.tolist(), neighbours.tolist(), symbols.tolist()
        )
        before = mixer._levels[1].totals.copy()
        mixer.update(step, symbols)
        halved |= bool((mixer._levels[1].totals < before).any())
    assert halved
