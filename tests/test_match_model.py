"""Neighbour-copy levels (codec/core/match.py): the vectorized mixer against a plain
reading of its docstring, the limits its tables keep, the step rules both coder sides
rely on, and what it is for (it learns repeats the four-neighbour levels miss, and
fades out on noise)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from igpt_codec.core import match
from igpt_codec.core.adaptive import NONE, WEIGHT_ONE, normalize
from igpt_codec.core.coder import MAX_TOTAL, RangeDecoder, RangeEncoder
from igpt_codec.core.freq import cumulative
from igpt_codec.core.match import TEMPLATE, LevelSpec, MatchMixer, window_template

LIMIT = (1 << 22) + 512
SLOW_DRAWS = [HealthCheck.too_slow]
"""`steps` draws 512-entry tables: slow to generate on a loaded machine, not a failure."""


class ReferenceMatch:
    """match.py's rules one window at a time in Python integers: lists, loops, no numpy."""

    def __init__(self, levels: tuple[LevelSpec, ...], slot_bits: int) -> None:
        self.levels = levels
        self.bits = slot_bits
        self.slots: list[dict[int, tuple[int, list[int]]]] = [{} for _ in levels]
        self.weights = [[spec.initial_weight] * 10 for spec in levels]

    @staticmethod
    def key(spec: LevelSpec, number: int, cells: list[int]) -> int:
        if spec.kind == "values":
            part = cells
        else:
            part = [spec.size if v == NONE else cells.index(v) for v in cells]
        h = ((number + 1) * 0x51ED27 + ("pattern", "values").index(spec.kind)) & 0xFFFF
        for v in part:
            h = ((h + v + 1) * match.HASH_MULTIPLIER) % (1 << 32)
        return h

    def step(self, tables: list[list[int]], templates: list[list[int]], symbols: list[int]):
        out, kept = [], []
        for table, template in zip(tables, templates, strict=True):
            levels = []
            for number, spec in enumerate(self.levels):
                cells = template[: spec.size]
                h = self.key(spec, number, cells)
                slot = h >> (32 - self.bits)
                empty = [0] * spec.outcomes
                tag, counts = self.slots[number].get(slot, (-1, empty))
                counts = counts if tag == h else empty
                n, d = sum(counts), sum(1 for c in counts if c)
                total = sum(table)
                k = spec.strength_base + spec.strength_per_symbol * d
                if spec.symbols:
                    refined = [
                        ((c * total + k * t) << 22) // ((n + k) * total)
                        for c, t in zip(counts, table, strict=True)
                    ]
                else:
                    leads = [i for i, v in enumerate(cells) if v != NONE and cells.index(v) == i]
                    q = [table[cells[i]] if i in leads else 0 for i in range(spec.size)]
                    q.append(total - sum(q))
                    merged = [
                        ((c * total + k * x) << 22) // ((n + k) * total)
                        for c, x in zip(counts, q, strict=True)
                    ]
                    refined = [t * merged[-1] // q[-1] for t in table]
                    for i in leads:
                        refined[cells[i]] = merged[i]
                refined = [max(1, r) for r in refined]
                b = min(n.bit_length(), 9)
                w = self.weights[number][b]
                mixed = [
                    max(1, ((t << 12) + w * (r - t)) >> 12)
                    for t, r in zip(table, refined, strict=True)
                ]
                levels.append((slot, h, b, table, refined, mixed))
                table = mixed
            out.append(table)
            kept.append(levels)
        for number, spec in enumerate(self.levels):
            for levels, x in zip(kept, symbols, strict=True):
                _, _, b, t, r, m = levels[number]
                self.weights[number][b] += (82 * (r[x] - t[x])) // m[x]
            self.weights[number] = [min(4096, max(0, w)) for w in self.weights[number]]
            winners = {levels[number][0]: levels[number][1] for levels in kept}  # last wins
            for slot, h in winners.items():
                if self.slots[number].get(slot, (-1, None))[0] != h:
                    self.slots[number][slot] = (h, [0] * spec.outcomes)
            for levels, template, x in zip(kept, templates, symbols, strict=True):
                slot, h = levels[number][:2]
                tag, counts = self.slots[number][slot]
                if tag == h:
                    cells = template[: spec.size]
                    if spec.symbols:
                        counts[x] += 1
                    else:
                        counts[cells.index(x) if x in cells else spec.size] += 1
            for slot in winners:
                counts = self.slots[number][slot][1]
                if sum(counts) > 1023:
                    counts[:] = [(c + 1) >> 1 for c in counts]
        return out


def level_specs(
    weight: st.SearchStrategy[int] | None = None, max_levels: int = 3
) -> st.SearchStrategy[tuple[LevelSpec, ...]]:
    """Level tuples of every kind and size; `weight`: the starting weights (any, by default)."""
    spec = st.builds(
        LevelSpec,
        st.sampled_from(match.KINDS),
        st.integers(1, len(TEMPLATE)),
        st.integers(1, 20),
        st.integers(0, 5),
        weight or st.integers(0, WEIGHT_ONE),
        st.booleans(),
    )
    return st.lists(spec, min_size=1, max_size=max_levels).map(tuple)


@st.composite
def steps(draw: st.DrawFn, size: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Steps over a few colours, so contexts (and slots) repeat within and across steps."""
    colours = draw(st.lists(st.integers(0, 511), min_size=1, max_size=3, unique=True))
    out = []
    for _ in range(draw(st.integers(1, 6))):
        batch = draw(st.integers(1, 5))
        peak = draw(st.sampled_from(colours))
        tables = np.array(
            [
                draw(st.lists(st.integers(1, 1 << 14), min_size=512, max_size=512))
                if draw(st.booleans())
                else [1 << 22 if s == peak else 1 for s in range(512)]
                for _ in range(batch)
            ],
            np.int64,
        )
        cell = st.sampled_from([*colours, NONE])
        template = np.array([[draw(cell) for _ in range(size)] for _ in range(batch)], np.int64)
        symbols = np.array([draw(st.sampled_from(colours)) for _ in range(batch)], np.int64)
        out.append((tables, template, symbols))
    return out


@settings(max_examples=30, deadline=None, suppress_health_check=SLOW_DRAWS)
@given(st.data(), level_specs(), st.sampled_from([1, 3, 16]))
def test_mixer_follows_the_reference(data: st.DataObject, levels, slot_bits: int) -> None:
    """Bit for bit the docstring's rules, slot collisions (1 or 3 bits) and takeovers included."""
    mixer, reference = MatchMixer(levels, slot_bits), ReferenceMatch(levels, slot_bits)
    for tables, template, symbols in data.draw(steps(mixer.size)):
        table, step = mixer.tables(tables, template)
        want = reference.step(tables.tolist(), template.tolist(), symbols.tolist())
        assert table.tolist() == want
        mixer.update(step, symbols)


def test_counts_halve_and_follow_the_reference_over_many_steps() -> None:
    rng = np.random.default_rng(3)
    levels = (
        LevelSpec("pattern", 6),
        LevelSpec("values", 4),
        LevelSpec("pattern", 3, symbols=True),
    )
    mixer, reference = MatchMixer(levels, 8), ReferenceMatch(levels, 8)
    for _ in range(150):
        tables = rng.integers(1, 1 << 14, (12, 512))
        template = np.tile([[5, 5, 9, 5, 9, 5]], (12, 1))
        template[::3, 2] = 7
        symbols = np.where(rng.random(12) < 0.7, 5, rng.choice([9, 7, 100], 12))
        table, step = mixer.tables(tables, template)
        assert table.tolist() == reference.step(
            tables.tolist(), template.tolist(), symbols.tolist()
        )
        mixer.update(step, symbols)
    assert any(sum(c) <= 1023 and max(c) > 400 for _, c in reference.slots[0].values())


@settings(max_examples=40, deadline=None, suppress_health_check=SLOW_DRAWS)
@given(st.data(), level_specs())
def test_tables_are_positive_and_bounded(data: st.DataObject, levels) -> None:
    """Entries >= 1; each level adds at most 512 over max(its input, 2^22 + 512)."""
    mixer = MatchMixer(levels, 4)
    for tables, template, symbols in data.draw(steps(mixer.size)):
        table, step = mixer.tables(tables, template)
        assert table.min() >= 1
        bound = np.maximum(tables.sum(axis=1), LIMIT) + 512 * len(levels)
        assert (table.sum(axis=1) <= bound).all()
        assert bound.max() < MAX_TOTAL
        mixer.update(step, symbols)


@settings(max_examples=25, deadline=None, suppress_health_check=SLOW_DRAWS)
@given(st.data(), level_specs(), st.randoms(use_true_random=False))
def test_a_steps_tables_do_not_depend_on_the_order_of_its_windows(data, levels, rnd) -> None:
    mixer = MatchMixer(levels, 5)
    sequence = data.draw(steps(mixer.size))
    for tables, template, symbols in sequence[:-1]:
        mixer.update(mixer.tables(tables, template)[1], symbols)
    tables, template, _ = sequence[-1]
    order = list(range(len(tables)))
    rnd.shuffle(order)
    straight, _ = mixer.tables(tables, template)
    shuffled, _ = mixer.tables(tables[order], template[order])
    assert np.array_equal(straight[order], shuffled)


def test_encoder_and_decoder_agree_through_the_range_coder() -> None:
    """Both sides derive each step's tables from the state before it, then learn the
    step's symbols: the decoder gets every symbol back with its own mixer."""
    rng = np.random.default_rng(11)
    width, rows, windows = 8, 6, 3
    image = rng.choice([3, 40, 41], (windows, rows * width), p=[0.7, 0.2, 0.1])
    image[:, width:] = np.where(
        rng.random((windows, (rows - 1) * width)) < 0.8, image[:, :-width], image[:, width:]
    )
    model = rng.integers(1, 1 << 16, (windows, rows * width, 512))
    encoder, sender = RangeEncoder(), MatchMixer()
    for cell in range(rows * width):
        template = window_template(image, cell, width, sender.size)
        table, step = sender.tables(normalize(model[:, cell]), template)
        cum = cumulative(table)
        symbols = image[:, cell]
        encoder.encode_intervals(
            cum[np.arange(windows), symbols].tolist(),
            cum[np.arange(windows), symbols + 1].tolist(),
            cum[:, -1].tolist(),
        )
        sender.update(step, symbols)
    payload, padding = encoder.finish()
    decoder, receiver = RangeDecoder(payload, padding), MatchMixer()
    decoded = np.full_like(image, 0)
    for cell in range(rows * width):
        template = window_template(decoded, cell, width, receiver.size)
        table, step = receiver.tables(normalize(model[:, cell]), template)
        symbols = decoder.decode_rows(cumulative(table))[0]
        decoded[:, cell] = symbols
        receiver.update(step, np.array(symbols))
    assert np.array_equal(decoded, image)


def _bits(tables: np.ndarray, symbols: np.ndarray) -> float:
    chosen = tables[np.arange(len(symbols)), symbols] / tables.sum(axis=1)
    return float(-np.log2(chosen).sum())


def _code(image: np.ndarray, width: int, model: np.ndarray, mixer: MatchMixer | None) -> float:
    bits = 0.0
    for cell in range(image.shape[1]):
        table = normalize(model[:, cell])
        symbols = image[:, cell]
        if mixer is not None:
            table, step = mixer.tables(table, window_template(image, cell, width, mixer.size))
            mixer.update(step, symbols)
        bits += _bits(table, symbols)
    return bits


def test_it_learns_a_repeated_glyph_in_any_colour() -> None:
    """A 5 x 5 glyph stamped over and over, in changing colours, under a flat model: the
    pattern level learns its shape once for every colour; far fewer bits than without."""
    glyph = np.array(
        [[0, 1, 1, 1, 0], [1, 0, 0, 0, 1], [1, 1, 1, 1, 1], [1, 0, 0, 0, 1], [1, 0, 0, 0, 1]]
    )
    rng = np.random.default_rng(5)
    width, rows = 30, 30
    image = np.zeros((4, rows, width), np.int64)
    for w in range(4):
        for y in range(0, rows, 6):
            for x in range(0, width, 6):
                ink = rng.integers(1, 512)
                image[w, y : y + 5, x : x + 5] = np.where(glyph == 1, ink, 0)
    image = image.reshape(4, -1)
    model = np.ones((4, rows * width, 512), np.int64)
    model[..., 0] = 64  # the model knows the background, nothing more
    plain = _code(image, width, model, None)
    mixed = _code(image, width, model, MatchMixer((LevelSpec("pattern", 12),)))
    assert mixed < 0.6 * plain


def test_it_fades_out_on_noise() -> None:
    """Independent symbols under the very table they were drawn from: no context
    predicts anything, and the levels cost under 1% (their weights fall)."""
    rng = np.random.default_rng(9)
    width, rows, windows = 32, 24, 8
    probs = rng.dirichlet(np.full(512, 0.3))
    model = np.maximum(1, (probs * (1 << 20)).astype(np.int64))
    image = rng.choice(512, (windows, rows * width), p=model / model.sum())
    models = np.broadcast_to(model, (windows, rows * width, 512))
    plain = _code(image, width, models, None)
    mixed = _code(image, width, models, MatchMixer())
    assert mixed < 1.01 * plain


def test_memory_is_bounded_by_the_slots() -> None:
    levels = (LevelSpec("pattern", 16), LevelSpec("values", 5, symbols=True))
    mixer = MatchMixer(levels, slot_bits=6)
    before = mixer.memory_bytes
    rng = np.random.default_rng(2)
    for _ in range(200):
        template = rng.integers(0, 513, (4, mixer.size))
        _, step = mixer.tables(rng.integers(1, 1000, (4, 512)), template)
        mixer.update(step, rng.integers(0, 512, 4))
    assert mixer.memory_bytes == before == 64 * (2 * 17 + 24) + 64 * (2 * 512 + 24)


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 5 * 7 - 1), st.integers(1, len(TEMPLATE)), st.integers(0, 99))
def test_the_template_reads_only_earlier_cells(cell: int, size: int, seed: int) -> None:
    width = 7
    rng = np.random.default_rng(seed)
    cells = rng.integers(0, 512, (2, 5 * width))
    later = cells.copy()
    later[:, cell:] = rng.integers(0, 512, (2, 5 * width - cell))
    got = window_template(cells, cell, width, size)
    assert np.array_equal(got, window_template(later, cell, width, size))
    row, col = divmod(cell, width)
    for i, (dx, dy) in enumerate(TEMPLATE[:size]):
        inside = 0 <= col + dx < width and row + dy >= 0
        assert (got[:, i] == NONE).all() != inside


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: LevelSpec("colours"), "level kind"),
        (lambda: LevelSpec("values", 0), "level size"),
        (lambda: LevelSpec("values", 4, 0), "strength"),
        (lambda: LevelSpec("values", 4, initial_weight=5000), "initial weight"),
        (lambda: MatchMixer(slot_bits=0), "slot_bits"),
        (lambda: LevelSpec("values", slot_bits=25), "slot_bits"),
        (lambda: LevelSpec("values", symbols=1), "symbols must be"),
        (lambda: MatchMixer().tables(np.ones((2, 511)), np.zeros((2, 12))), "tables must be"),
        (lambda: MatchMixer().tables(np.ones((2, 512)), np.zeros((2, 3))), "template must be"),
        (lambda: MatchMixer().tables(np.zeros((2, 512)), np.zeros((2, 12))), "table entries"),
        (
            lambda: MatchMixer().tables(
                np.ones((1, 512)), np.full((1, match.MatchMixer().size), 600)
            ),
            "template cells",
        ),
    ],
)
def test_bad_input_gets_a_one_line_error(call, message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        call()
    assert "\n" not in str(info.value)


def test_update_refuses_symbols_that_do_not_fit_the_step() -> None:
    mixer = MatchMixer()
    _, step = mixer.tables(np.ones((2, 512)), np.zeros((2, mixer.size), np.int64))
    with pytest.raises(ValueError, match="expected 2 symbols"):
        mixer.update(step, np.array([1, 2, 3]))
    with pytest.raises(ValueError, match="symbols must be"):
        mixer.update(step, np.array([1, 512]))


def _model_tables(rng: np.random.Generator, batch: int, peak: int | None) -> np.ndarray:
    """Model-like tables: a few likely symbols over a long tail, optionally one sharp."""
    logits = rng.normal(0, 3, (batch, 512))
    if peak is not None:
        logits[:, peak] += 10
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    return normalize(np.maximum(1, (probs * (1 << 20)).astype(np.int64)))


BRANCH_LEVELS = (
    LevelSpec("pattern", 7, 3, 1, 0, symbols=True),  # weights from 0: a skipped mix
    LevelSpec("values", 4, 2, 3, 4096),  # weights from 4096: the refined table itself
    LevelSpec("pattern", 12, 1, 0, 1024),  # the longest pattern: first_of as it is
    LevelSpec("values", 9, 5, 2, 2000, symbols=True),
    LevelSpec("pattern", 4, 1, 0, 3000),  # a second short pattern; outcomes like level 1's
    LevelSpec("values", 12, 1, 2, 4096, symbols=True),
)
"""Levels that take every branch of MatchMixer's shortcuts: weights at 0 and at 4096,
pattern keys of three lengths, neighbour levels of three sizes (two sharing their
number of outcomes, not side by side), symbol levels between them."""


@pytest.mark.parametrize(
    ("seed", "slot_bits", "colours", "repeat"),
    [
        (0, 12, 4, 0.9),  # contexts repeat: counts grow and halve, weights climb
        (1, 12, 40, 0.1),  # few repeats: weights fall (to 0 in some buckets)
        (2, 2, 6, 0.6),  # four slots a level: collisions in a step, takeovers every step
    ],
)
def test_every_step_matches_the_reference(seed: int, slot_bits: int, colours: int, repeat: float):
    """The stacked, fused mixer against the plain reference through steps of 1 to 32
    windows: its tables at every step, and its weights and slots at the end."""
    rng = np.random.default_rng(seed)
    palette = rng.choice(512, colours, replace=False)
    mixer = MatchMixer(BRANCH_LEVELS, slot_bits)
    reference = ReferenceMatch(BRANCH_LEVELS, slot_bits)
    sizes = [1, 8, 3, 32, 5, 2, 16]
    for number in range(36):
        batch = sizes[number % len(sizes)]
        tables = _model_tables(rng, batch, int(palette[0]) if number % 3 else None)
        template = palette[rng.integers(0, colours, (batch, mixer.size))]
        template[:, 1::2] = np.where(
            rng.random((batch, 1)) < repeat, template[:, :1], template[:, 1::2]
        )
        template[rng.random(template.shape) < 0.1] = NONE
        copied = np.where(template[:, 0] == NONE, palette[0], template[:, 0])
        symbols = np.where(
            rng.random(batch) < repeat, copied, palette[rng.integers(0, colours, batch)]
        )
        table, step = mixer.tables(tables, template)
        want = reference.step(tables.tolist(), template.tolist(), symbols.tolist())
        assert table.tolist() == want, f"step {number}"
        mixer.update(step, symbols)
    assert [level.weights.tolist() for level in mixer._levels] == reference.weights
    for level, slots in zip(mixer._levels, reference.slots, strict=True):
        for slot, (tag, counts) in slots.items():
            assert (level.tags[slot], level.counts[slot].tolist()) == (tag, counts)
            assert level.totals[slot] == sum(counts)
            assert level.distinct[slot] == sum(1 for c in counts if c)


@settings(max_examples=40, deadline=None)
@given(st.data(), level_specs(), st.integers(0, 9))
def test_fused_keys_are_each_levels_hash(data: st.DataObject, levels, seed: int) -> None:
    """tables() hashes every level at once (one matrix product); the slots it reads and
    writes are those of match.level_keys, the plain form of the key."""
    mixer = MatchMixer(levels, 16)
    rng = np.random.default_rng(seed)
    batch = data.draw(st.integers(1, 32))
    template = rng.choice([3, 7, 300, NONE], (batch, mixer.size))
    _, step = mixer.tables(rng.integers(1, 1 << 14, (batch, 512)), template)
    first = match.first_of(template)
    for number, spec in enumerate(levels):
        want = match.level_keys(spec, template, first, number)
        assert step.keys[number].tolist() == want.tolist()


def shortcut_levels() -> st.SearchStrategy[tuple[LevelSpec, ...]]:
    """Levels whose weights often start at 0 or 4096 (the mixer's shortcuts)."""
    return level_specs(st.sampled_from([0, WEIGHT_ONE]) | st.integers(0, WEIGHT_ONE), 4)


@settings(max_examples=30, deadline=None)
@given(shortcut_levels(), st.sampled_from([1, 2, 4, 16]), st.integers(0, 2**32 - 1))
def test_shortcuts_follow_the_reference(levels, slot_bits: int, seed: int) -> None:
    """Random batches of 1 to 32 windows over a few colours, levels that start idle
    (weights 0) or whole (4096), slots that collide and are taken over: every step's
    tables, and the weights at the end, are the plain reference's."""
    rng = np.random.default_rng(seed)
    mixer, reference = MatchMixer(levels, slot_bits), ReferenceMatch(levels, slot_bits)
    colours = rng.choice(512, rng.integers(1, 5), replace=False)
    for _ in range(8):
        batch = int(rng.choice([1, 2, 5, 32]))
        tables = _model_tables(rng, batch, int(colours[0]) if rng.random() < 0.5 else None)
        template = rng.choice([*colours, NONE], (batch, mixer.size))
        symbols = np.where(rng.random(batch) < 0.7, colours[0], rng.choice(colours, batch))
        table, step = mixer.tables(tables, template)
        want = reference.step(tables.tolist(), template.tolist(), symbols.tolist())
        assert table.tolist() == want
        mixer.update(step, symbols)
    assert [level.weights.tolist() for level in mixer._levels] == reference.weights


def test_an_empty_step_changes_nothing() -> None:
    mixer = MatchMixer((LevelSpec("pattern", 4), LevelSpec("values", 3, symbols=True)), 4)
    table, step = mixer.tables(np.ones((0, 512), np.int64), np.zeros((0, mixer.size), np.int64))
    assert table.shape == (0, 512)
    before = [lv.weights.tolist() + lv.tags.tolist() for lv in mixer._levels]
    mixer.update(step, np.zeros(0, np.int64))
    assert [lv.weights.tolist() + lv.tags.tolist() for lv in mixer._levels] == before
