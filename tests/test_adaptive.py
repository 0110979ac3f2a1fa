"""Adaptive context mixing (coding 2): the vectorized mixer against a plain reading of
format/SPEC.md, the limits its tables keep, and what it is for (it learns a photo's
repetitions and fades out where its counts do not help)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from igpt_codec.core import adaptive
from igpt_codec.core.adaptive import NONE, AdaptiveMixer, window_neighbours
from igpt_codec.core.coder import MAX_TOTAL


class ReferenceMixer:
    """SPEC.md "Coding 2" step by step in Python integers: dicts, loops, no numpy."""

    def __init__(self, capacity: int = adaptive.MAX_CONTEXTS) -> None:
        self.capacity = capacity
        self.counts: list[dict[int, list[int]]] = [{}, {}, {}]
        self.weights = [[4096] * 10 for _ in range(3)]

    @staticmethod
    def contexts(freqs: list[int], west: int, north: int, nw: int, ne: int) -> list[int]:
        guess = freqs.index(max(freqs))
        wn = west * 513 + north
        return [guess, wn, (wn * 513 + nw) * 513 + ne]

    def step(self, freqs: list[list[int]], neighbours: list[list[int]], symbols: list[int]):
        for level in (1, 2):
            keys = {self.contexts(f, *nb)[level] for f, nb in zip(freqs, neighbours, strict=True)}
            if len(self.counts[level]) + len(freqs) > self.capacity:
                self.counts[level].clear()
            del keys  # a context is held from its first lookup
        kept = []
        tables = []
        for f, nb in zip(freqs, neighbours, strict=True):
            total = sum(f)
            q = [max(1, (x << 22) // total) for x in f]
            levels = []
            for level, ctx in enumerate(self.contexts(f, *nb)):
                c = self.counts[level].setdefault(ctx, [0] * 512)
                n = sum(c)
                k = 16 + 4 * sum(1 for x in c if x > 0)
                big_q = sum(q)
                r = [
                    max(1, ((c[s] * big_q + k * q[s]) << 22) // ((n + k) * big_q))
                    for s in range(512)
                ]
                b = min(n.bit_length(), 9)
                w = self.weights[level][b]
                m = [max(1, ((4096 - w) * q[s] + w * r[s]) >> 12) for s in range(512)]
                levels.append((ctx, b, q, r, m))
                q = m
            tables.append(q)
            kept.append(levels)
        for level in range(3):
            for levels, x in zip(kept, symbols, strict=True):
                _, b, q, r, m = levels[level]
                self.weights[level][b] += (82 * (r[x] - q[x])) // m[x]
            self.weights[level] = [min(4096, max(0, w)) for w in self.weights[level]]
            touched = set()
            for levels, x in zip(kept, symbols, strict=True):
                ctx = levels[level][0]
                self.counts[level][ctx][x] += 1
                touched.add(ctx)
            for ctx in touched:
                c = self.counts[level][ctx]
                if sum(c) > 1023:
                    self.counts[level][ctx] = [(x + 1) >> 1 for x in c]
        return tables


@st.composite
def steps(draw: st.DrawFn) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Steps over a few colours, so contexts repeat within and across steps."""
    colours = draw(st.lists(st.integers(0, 511), min_size=1, max_size=4, unique=True))
    out = []
    for _ in range(draw(st.integers(1, 6))):
        batch = draw(st.integers(1, 5))
        peak = draw(st.sampled_from(colours))
        freqs = np.array(
            [
                draw(st.lists(st.integers(1, 1 << 20), min_size=512, max_size=512))
                if draw(st.booleans())
                else [1 << 20 if s == peak else 1 for s in range(512)]
                for _ in range(batch)
            ],
            np.int64,
        )
        choice = st.sampled_from([*colours, NONE])
        neighbours = np.array([[draw(choice) for _ in range(4)] for _ in range(batch)], np.int64)
        symbols = np.array([draw(st.sampled_from(colours)) for _ in range(batch)], np.int64)
        out.append((freqs, neighbours, symbols))
    return out


@settings(max_examples=25, deadline=None)
@given(steps(), st.sampled_from([5, 8, adaptive.MAX_CONTEXTS]))
def test_mixer_follows_the_spec(sequence, capacity: int) -> None:
    mixer, reference = AdaptiveMixer(capacity), ReferenceMixer(capacity)
    for freqs, neighbours, symbols in sequence:
        table, step = mixer.tables(freqs, neighbours)
        want = reference.step(freqs.tolist(), neighbours.tolist(), symbols.tolist())
        assert table.tolist() == want
        mixer.update(step, symbols)


def test_halving_and_weights_follow_the_spec_over_many_steps() -> None:
    """A long run in two contexts: counts pass the limit and halve, weights move."""
    rng = np.random.default_rng(7)
    mixer, reference = AdaptiveMixer(), ReferenceMixer()
    for _ in range(70):
        freqs = rng.integers(1, 1 << 20, (20, 512))
        neighbours = np.tile([[5, 5, 5, 5]], (20, 1))
        neighbours[::2] = 9
        symbols = np.where(rng.random(20) < 0.8, 5, rng.integers(0, 512, 20))
        table, step = mixer.tables(freqs, neighbours)
        assert table.tolist() == reference.step(
            freqs.tolist(), neighbours.tolist(), symbols.tolist()
        )
        mixer.update(step, symbols)
    assert any(sum(c) < 1023 and max(c) > 300 for c in reference.counts[1].values())


def test_tables_stay_codable_at_the_extremes() -> None:
    """Every entry at least 1 and totals far inside the coder's limit, whatever the model
    says: a flat table, the sharpest one, after counts that contradict it."""
    mixer = AdaptiveMixer()
    sharp = np.ones((3, 512), np.int64)
    sharp[:, 0] = 1 << 20
    flat = np.full((3, 512), 1 << 20, np.int64)
    neighbours = np.full((3, 4), 7, np.int64)
    for _ in range(300):
        for freqs in (sharp, flat):
            table, step = mixer.tables(freqs, neighbours)
            assert table.min() >= 1
            assert table.sum(axis=1).max() < (1 << 22) + 512 < MAX_TOTAL
            mixer.update(step, np.array([511, 511, 3]))


def _cost(tables: np.ndarray, symbols: np.ndarray) -> float:
    picked = tables[np.arange(len(symbols)), symbols]
    return float(-np.log2(picked / tables.sum(axis=1)).sum())


def test_it_learns_what_the_image_repeats() -> None:
    """The model says little (a flat table) but the image always repeats its west
    neighbour: the mixer's tables cost a fraction of the model's."""
    rng = np.random.default_rng(1)
    mixer = AdaptiveMixer()
    model_bits = mixed_bits = 0.0
    flat = np.full((8, 512), 1 << 10, np.int64)
    for _ in range(200):
        neighbours = rng.integers(0, 4, (8, 4))
        symbols = neighbours[:, 0].copy()
        table, step = mixer.tables(flat, neighbours)
        model_bits += _cost(flat, symbols)
        mixed_bits += _cost(table, symbols)
        mixer.update(step, symbols)
    assert mixed_bits < 0.25 * model_bits


def test_it_fades_out_where_counts_do_not_help() -> None:
    """A model that is right and an image with no repetition for the counts to find:
    the learned weights keep the mixer within a few percent of the model alone."""
    rng = np.random.default_rng(2)
    mixer = AdaptiveMixer()
    model_bits = mixed_bits = 0.0
    for _ in range(400):
        logits = rng.normal(0, 3, (8, 512))
        probs = np.exp(logits - logits.max(axis=1, keepdims=True))
        probs /= probs.sum(axis=1, keepdims=True)
        freqs = np.maximum(1, (probs * (1 << 20)).astype(np.int64))
        symbols = np.array([rng.choice(512, p=p) for p in probs])
        neighbours = rng.integers(0, 512, (8, 4))
        table, step = mixer.tables(freqs, neighbours)
        model_bits += _cost(freqs, symbols)
        mixed_bits += _cost(table, symbols)
        mixer.update(step, symbols)
    assert mixed_bits < 1.03 * model_bits
    assert mixer._levels[0].weights.min() < adaptive.WEIGHT_ONE  # it did move


def test_neighbours_stay_inside_the_window() -> None:
    cells = np.arange(2 * 12).reshape(2, 12)  # two windows of 3 rows x 4 columns
    assert window_neighbours(cells, 0, 4).tolist() == [[NONE] * 4] * 2
    assert window_neighbours(cells, 3, 4).tolist()[0] == [2, NONE, NONE, NONE]
    assert window_neighbours(cells, 4, 4).tolist()[1] == [NONE, 12, NONE, 13]
    assert window_neighbours(cells, 7, 4).tolist()[0] == [6, 3, 2, NONE]
    assert window_neighbours(cells, 9, 4).tolist()[0] == [8, 5, 4, 6]


@pytest.mark.parametrize("bad", [0, -1])
def test_capacity_must_be_positive(bad: int) -> None:
    with pytest.raises(ValueError, match="capacity"):
        AdaptiveMixer(bad)
