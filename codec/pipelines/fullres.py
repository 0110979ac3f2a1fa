"""Full-resolution palette images <-> records (kinds 3 and 4), window by window.

The photo keeps its own size: every pixel becomes a palette token, and the image is
cut into the model's grid x grid windows (igpt_codec.format.tiling). Each band of windows sees
`context_rows` already coded rows above it, fed to the model but not coded, so a
band's first coded row is predicted from the real pixels above it. All windows of a
band's group (igpt_codec.format.tiling) are independent of each other, so

- the encoder runs each window in one whole-sequence call (exact profile: the tables
  equal the decoder's step-by-step ones bit for bit), several windows per call;
- the decoder steps every window of a group together, one cell at a time, with the
  KV cache: the group is its batch. The known rows above are fed in one call first.

The groups at one position of every band form a chain; each chain's tokens go into one
segment record (or, in the first full-resolution files, each band's group into its own).

Only exact bundles code full-resolution images: their tables are the same on every
machine, and a whole-sequence encoder is what makes a photo's million tokens
affordable to encode.
"""

from __future__ import annotations

import dataclasses
import math
import threading
from collections.abc import Callable, Sequence

import numpy as np

from igpt_codec.core.coder import RangeDecoder, RangeEncoder
from igpt_codec.core.freq import cumulative
from igpt_codec.core.mixers import STAGES_OF, Chain, chain_for, mixer_for
from igpt_codec.format.container import SegmentCheck, segment_payload_limit
from igpt_codec.format.errors import LengthOutOfRangeError, PayloadError, TokenChecksumError
from igpt_codec.format.records import (
    LINEAR_CODINGS,
    FullImageHeader,
    FullImageRecord,
    Segment,
)
from igpt_codec.format.tiling import Band, Tiling, fill_padding
from igpt_codec.pipelines.limits import KNOWN_ROWS_CHUNK, PARALLEL_CHAINS
from igpt_codec.pipelines.parallel import (
    Cancel,
    PixelProgress,
    Progress,
    Report,
    run_parallel,
    use_processes,
)
from igpt_codec.pipelines.types import FullImage
from igpt_codec.runtime.contract import SOS, VOCAB
from igpt_codec.runtime.exact_runner import ExactTokenModel
from igpt_codec.runtime.ring_cache import stacked

CONTEXT_ROWS = 4
"""Rows above each band fed but not coded. Chosen by measurement (docs/full-resolution.md):
more context codes the band's first rows better but feeds more cells per coded pixel."""

SEGMENT_WINDOWS = 32
"""Most windows per group (the decoder's batch): larger batches stop paying
off past about 32 windows (docs/full-resolution.md)."""

PLAN_BITS_PER_TOKEN = 9
"""Bits per token the layout planner assumes for a chain segment: log2 of the palette's 512
colours, what a model no better than uniform costs (photos code at 3-5 bits/token). A chain
whose widest segment would pass the payload cap at this rate is written one record per band
instead (`plan_layout`); a chain that passes the cap anyway is re-encoded that way."""

PLAN_SLACK_BYTES = 16
"""Bytes the planner keeps free in a segment for the coder's flush (at most 8)."""

ENCODE_CALL_WINDOWS = 4
ENCODE_CHUNK = 64
"""Windows per encoder call, and tokens per graph call within it (ExactTokenModel.run's
chunk; a span bundle's S = 128 otherwise). Each token of a chunk of c scores S + c slots,
so a batch of windows in chunks of 64 wastes fewer scores while the batch pays the
per-call cost (session 26, default model, 1 thread, whole windows, the same tables):
25.2 us a token at 1 window in chunks of 128 (before), 23.0 at 3 windows, 20.9-21.0 at
4 windows in chunks of 64, 21.7-21.9 at 6. Before the span bundles (whole 1,024-token
calls) one window was fastest and smallest (8 windows: 30.1 s against 22.1 s on a 481 x
321 photo, and 967 MB peak against 365 MB): the attention triangle grew with the batch.
A chunked call's intermediates do not: 4 windows hold 16 MB of tables per call."""

EXTRA_KEEP = (63, 64)
"""An extra coding (coding 3 beside coding 2) is kept only when its payload is at most 63/64
of the base's: coding 3 decodes in about 1.4-1.5x coding 2's time, so a photo's 0.1-2% is
not worth it, while synthetic images save 9-47% (docs/synthetic.md, "Coding 3 in the
format")."""
EXTRA_DECIDE_BITS = 4096.0
EXTRA_DECIDE_STEPS = 512
"""A chain drops the extras that are not under EXTRA_KEEP of the base's ideal bits at the
first cell step where the base has spent EXTRA_DECIDE_BITS in all (a blank top margin
decides nothing) and the chain has coded EXTRA_DECIDE_STEPS cell steps. On photos that is
half-way through band 0, so coding 3 costs the encoder 512 steps of its levels instead of
every band (41.6% of a photo's encode CPU, measured) or all of band 0 (about 8%, before
session 29). Why the steps: coding 3's levels learn as a band goes down (its longer reach
finds more above), so its ratio to coding 2 falls through band 0; on the 24 MP photo's
chains it was 0.988-0.990 at 4,096 bits (about 150-200 steps of 94 windows: dropped), 0.960
at 512 steps and 0.949-0.953 at the band's end, where coding 3 saves 7.5% of the file
(docs/speed.md, "Session 29")."""


def grid_of(n_positions: int) -> int:
    """The window side of a model with n_positions = grid^2 positions."""
    grid = math.isqrt(n_positions)
    if grid * grid != n_positions:
        raise ValueError(f"the model's {n_positions} positions are not a square grid")
    return grid


def plan_layout(
    width: int,
    height: int,
    grid: int,
    context_rows: int = CONTEXT_ROWS,
    payload_limit: int | None = None,
    segment_windows: int | None = None,
    chains: int = PARALLEL_CHAINS,
) -> tuple[int, bool]:
    """(segment windows, chain segments) of the encoder's layout for a width x height image.

    Windows per segment: at most SEGMENT_WINDOWS, and few enough that each band has
    PARALLEL_CHAINS chains. One segment record per chain when the widest chain's tokens fit
    one record's payload cap at PLAN_BITS_PER_TOKEN (so every image of today's sizes keeps
    its layout); otherwise one record per band and chain, the layout every reader has read
    since the first full-resolution files: a chain of a tall photo (a 6000 x 4000 one at 32
    windows per segment: 4.1M tokens, about 1.8 MB) cannot be one record, while a band's
    group (at most 32 x 32 x 32 tokens, 90 KB at the 22 bits a coding-2 token costs at
    most) always fits. `payload_limit` lowers the cap (tests); `segment_windows` replaces
    the planned windows per segment. `chains`: the chains the planner aims for (fewer when
    the image has fewer window columns, more when a group would pass SEGMENT_WINDOWS): a
    decoder runs one chain per worker, so a file written for N-core decoders asks for N."""
    if chains < 1:
        raise ValueError(f"chains must be at least 1, got {chains}")
    window = min(grid, width)
    columns = math.ceil(width / window)
    windows = segment_windows or min(SEGMENT_WINDOWS, math.ceil(columns / chains))
    context_rows = min(context_rows, grid - 1)
    bands = len(Tiling(width, height, grid, context_rows, windows, True).bands())
    limit = _payload_limit(bands - 1, payload_limit)
    widest = min(windows * window, width) * height
    fits = widest * PLAN_BITS_PER_TOKEN <= (limit - PLAN_SLACK_BYTES) * 8
    return windows, fits


def _payload_limit(band_checks: int, payload_limit: int | None) -> int:
    """The format's cap on a segment's payload, or the caller's lower one."""
    limit = segment_payload_limit(band_checks)
    return limit if payload_limit is None else min(limit, payload_limit)


def make_header(
    image: FullImage,
    fingerprint: bytes,
    grid: int,
    coding: int,
    context_rows: int = CONTEXT_ROWS,
    segment_windows: int | None = None,
    chain_segments: bool | None = None,
    band_checks: bool | None = None,
    payload_limit: int | None = None,
    chains: int = PARALLEL_CHAINS,
    linear_levels: bool | None = None,
) -> FullImageHeader:
    """The header the encoder writes. segment_windows and chain_segments None: the planned
    layout (`plan_layout`: one segment record per chain, what writers use since 2026-12,
    unless a chain is too long for one record; then one per band and chain, as the first
    full-resolution files). band_checks None: with chain segments, whenever the image has
    more than one band (a check per band but the last, one byte each: a damaged chain fails
    after one band's decoding, not at its end; docs/hardening.md has the cost). `chains`:
    see plan_layout. linear_levels None: whenever the coding has levels (codings 2 and 3:
    the same bits as their rounded levels within a few bytes a photo, about half their
    arithmetic; docs/speed.md, "Session 27")."""
    segment_windows, fits = plan_layout(
        image.width, image.height, grid, context_rows, payload_limit, segment_windows, chains
    )
    if chain_segments is None:
        chain_segments = fits
    header = FullImageHeader(
        fingerprint=fingerprint,
        width=image.width,
        height=image.height,
        mode=image.mode,
        grid=grid,
        context_rows=min(context_rows, grid - 1),
        segment_windows=segment_windows,
        coding=coding,
        chain_segments=chain_segments,
        linear_levels=coding in LINEAR_CODINGS if linear_levels is None else linear_levels,
    )
    if band_checks is None:
        band_checks = chain_segments and len(header.tiling.bands()) > 1
    return dataclasses.replace(header, band_checks=band_checks) if band_checks else header


def _group_windows(
    tiling: Tiling, image: np.ndarray, band: Band, columns: list[int]
) -> tuple[np.ndarray, np.ndarray]:
    """Cells [windows, rows * window_width] and their coded mask, for one band's group."""
    cells = np.stack([tiling.window_tokens(image, band, c).reshape(-1) for c in columns])
    mask = np.stack([tiling.coded_mask(band, c).reshape(-1) for c in columns])
    return cells.astype(np.int64), mask


def _coding_order(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(window, cell) of every coded token, cell-major: the order both sides code in."""
    cell_idx, window_idx = np.nonzero(mask.T)
    return window_idx, cell_idx


class _SegmentTooLong(Exception):
    """A segment's payload passed its cap (internal: encode_full re-plans the layout)."""


def encode_full(
    model: ExactTokenModel,
    image: FullImage,
    header: FullImageHeader,
    progress: Progress | None = None,
    workers: int = 1,
    payload_limit: int | None = None,
    codings: Sequence[int] | None = None,
    sizes: dict[int, int | None] | None = None,
    early_judgment: bool = True,
    meanwhile: Callable[[], None] | None = None,
) -> tuple[FullImageRecord, float]:
    """Code a full-resolution image; returns the record and the model's ideal bits.

    The groups at one position of every band form a chain (they share the adaptive
    coding's state, and only they depend on each other), so `workers` threads code the
    chains side by side; onnxruntime releases the GIL while it runs, and each call uses
    the session's own threads.

    `codings` (None: the header's alone): codings coded side by side in one pass over the
    model; the record kept is the base's unless an extra's payload is at most EXTRA_KEEP
    (63/64) of it, then the smallest (its header says which; on a tie, the coding of fewer
    mixer stages, which decodes faster). Each coding's mixer is a prefix of the next one's
    (core/mixers.py), so coding 3 costs its own levels only, not a second run of the model
    or of coding 2. The first is the *base*: it decides the layout, as a lone coding does;
    the others are extras, dropped (for the whole image) as soon as one of their segments
    passes the payload cap, or, with `early_judgment`, when a chain finds them not under
    EXTRA_KEEP of the base's bits at the first cell step where the base has spent
    EXTRA_DECIDE_BITS and the chain has coded EXTRA_DECIDE_STEPS steps (on photos, half-way
    through band 0: the extra's levels then cost 512 steps, not the image). Either
    depends on one chain's own tokens, never on which thread got there first: the record
    is the same whatever `workers` is. Benchmarks that compare the codings' sizes turn
    `early_judgment` off.

    A chain segment whose payload would pass the format's cap (MAX_PAYLOAD, and the frame
    with its band checks within MAX_FRAME; `payload_limit` lowers it, for tests) is not an
    error: the chains stop as soon as the base's passes it, and the image is coded again
    one record per band and chain (the returned record's header says so), which every
    reader reads. `plan_layout` makes that rare: it happens only where tokens cost more
    than PLAN_BITS_PER_TOKEN.

    `sizes`, when given, receives each coding's payload bytes in the layout written (None
    for a coding dropped on the way): what benchmarks compare. `meanwhile`: work of the
    caller's that the main thread does while the chain workers run (run_parallel), once.
    """
    codings = _codings(header, codings)
    progress = _monotonic(progress)
    report = PixelProgress(progress, header.token_count)
    try:
        return _encode_layout(
            model,
            image,
            header,
            report,
            workers,
            payload_limit,
            codings,
            sizes,
            early_judgment,
            meanwhile,
        )
    except _SegmentTooLong as exc:
        if not header.chain_segments:
            raise LengthOutOfRangeError(str(exc)) from None
    per_band = dataclasses.replace(header, chain_segments=False, band_checks=False)
    report = PixelProgress(progress, header.token_count)
    try:
        return _encode_layout(
            model, image, per_band, report, workers, payload_limit, codings, sizes, early_judgment
        )
    except _SegmentTooLong as exc:
        raise LengthOutOfRangeError(str(exc)) from None


def _codings(header: FullImageHeader, codings: Sequence[int] | None) -> tuple[int, ...]:
    """The codings to code side by side, checked: known full-resolution codings, no repeats."""
    chosen = (header.coding,) if codings is None else tuple(codings)
    if not chosen or len(set(chosen)) != len(chosen):
        raise ValueError(f"codings must be distinct and at least one, got {chosen}")
    unknown = [coding for coding in chosen if coding not in STAGES_OF]
    if unknown:
        raise ValueError(f"coding {unknown[0]} does not code full-resolution images")
    return chosen


def _with_coding(header: FullImageHeader, coding: int) -> FullImageHeader:
    """The header of one of the codings coded side by side: LINEAR applies to the codings
    with levels, so coding 0 beside them has it clear."""
    linear = header.linear_levels and coding in LINEAR_CODINGS
    return dataclasses.replace(header, coding=coding, linear_levels=linear)


def _monotonic(progress: Progress | None) -> Progress | None:
    """The progress callback, never going back (a re-encode starts counting again)."""
    if progress is None:
        return None
    high = [0]

    def report(done: int, total: int) -> None:
        if done > high[0]:
            high[0] = done
            progress(done, total)

    return report


@dataclasses.dataclass
class _Candidate:
    """One coding's side of a chain being coded: its segment being written, its records."""

    header: FullImageHeader
    coded: dict[int, Segment] = dataclasses.field(default_factory=dict)
    ideal: float = 0.0
    encoder: RangeEncoder | None = None
    check: SegmentCheck | None = None
    band_checks: list[int] = dataclasses.field(default_factory=list)
    segment_bits: float = 0.0

    def start(self, number: int) -> None:
        self.encoder, self.check = RangeEncoder(), SegmentCheck(self.header, number)
        self.band_checks, self.segment_bits = [], 0.0


def _encode_layout(
    model: ExactTokenModel,
    image: FullImage,
    header: FullImageHeader,
    report: PixelProgress,
    workers: int,
    payload_limit: int | None,
    codings: tuple[int, ...],
    sizes: dict[int, int | None] | None = None,
    early_judgment: bool = True,
    meanwhile: Callable[[], None] | None = None,
) -> tuple[FullImageRecord, float]:
    """encode_full in the header's layout; _SegmentTooLong as soon as a segment of the base
    coding passes its cap (every chain stops at its next band)."""
    tiling = header.tiling
    positions = tiling.cell_positions()
    bands, groups = tiling.bands(), tiling.segments()
    limit = _payload_limit(header.band_check_count, payload_limit)
    cancel = Cancel()
    base = codings[0]
    # Extras out of the running: a chain that drops one adds it here, so the chains in
    # threads stop coding it; forked chains see only their own drops and report them.
    dropped: set[int] = set()
    lock = threading.Lock()

    def too_long(number: int, size: float) -> _SegmentTooLong:
        return _SegmentTooLong(
            f"segment {number} of a {header.width}x{header.height} image needs {size:.0f} "
            f"payload bytes, over the limit of {limit}"
        )

    def drop(coding: int, number: int, size: float) -> None:
        if coding == base:
            raise too_long(number, size)
        with lock:
            dropped.add(coding)

    def chain(group: int, report: Report) -> tuple[dict[int, _Candidate], set[int]]:
        sides = {c: _Candidate(_with_coding(header, c)) for c in codings}
        mixer = chain_for(max(STAGES_OF[c] for c in codings), header.linear_levels)
        # This chain's judgment of the extras (none to make: None).
        judge = _Judge(base, codings) if len(codings) > 1 and early_judgment else None
        for number, segment_bands in _chain_segments(tiling, bands, group):
            for side in sides.values():
                side.start(number)
            for band in segment_bands:
                if cancel.is_set():
                    return sides, set()  # another chain failed; its error is raised
                # The coder's output tracks the ideal bits within a few bytes: stop early.
                for coding, side in sides.items():
                    if coding not in dropped and side.segment_bits / 8 > limit + PLAN_SLACK_BYTES:
                        drop(coding, number, side.segment_bits / 8)
                live = {c: STAGES_OF[c] for c in codings if c not in dropped}
                judging = None if judge is None or judge.decided else judge
                symbols, intervals = _band_intervals(
                    model,
                    tiling,
                    image.tokens,
                    band,
                    groups[group],
                    positions,
                    mixer,
                    live,
                    judging,
                )
                for coding, (low, width, total) in intervals.items():
                    side = sides[coding]
                    side.encoder.encode_intervals(
                        low.tolist(), (low + width).tolist(), total.tolist()
                    )
                    bits = float(-np.log2(width / total).sum())
                    side.ideal += bits
                    side.segment_bits += bits
                    side.check.add(symbols)
                    side.band_checks.append(side.check.band_value)
                report(len(symbols))
                if judging is not None and judging.decided:
                    with lock:
                        dropped.update(judging.dropped)
            for coding, side in sides.items():
                if coding in dropped or side.encoder is None or side.check is None:
                    continue
                # Every band's check but the last: the segment's own token check follows it.
                kept = tuple(side.band_checks[: header.band_check_count])
                payload = side.encoder.finish()[0]
                if len(payload) > limit:
                    drop(coding, number, len(payload))
                    continue
                side.coded[number] = Segment(payload, side.check.value, kept)
        for side in sides.values():  # what a forked chain sends back: its records and bits
            side.encoder = side.check = None
        return sides, set(dropped)

    forked = use_processes(workers, len(groups), header.token_count)
    if forked:
        _ = model.session  # opened once, before the forks: every child inherits it
    results = run_parallel(
        chain, range(len(groups)), workers, cancel, report.add, forked, meanwhile
    )
    chains = [sides for sides, _ in results]
    dropped.update(*(drops for _, drops in results))
    payloads = {
        coding: sum(
            len(segment.payload) for sides in chains for segment in sides[coding].coded.values()
        )
        for coding in codings
        if coding not in dropped
    }
    if sizes is not None:
        sizes.clear()
        sizes.update({coding: payloads.get(coding) for coding in codings})
    # The base, unless an extra saves enough to pay for its slower decode (EXTRA_KEEP).
    kept = [c for c in payloads if c == base or _worth_keeping(payloads[c], payloads[base])]
    best = min(kept, key=lambda coding: (payloads[coding], STAGES_OF[coding]))
    coded = {n: segment for sides in chains for n, segment in sides[best].coded.items()}
    segments = tuple(coded[number] for number in range(tiling.record_count))
    chosen = _with_coding(header, best)
    return FullImageRecord(chosen, segments, image.name), sum(s[best].ideal for s in chains)


def _worth_keeping(extra: float, base: float) -> bool:
    """Whether an extra coding's size (bytes or bits) saves enough against the base's."""
    return extra * EXTRA_KEEP[1] <= base * EXTRA_KEEP[0]


def _chain_segments(tiling: Tiling, bands: list[Band], group: int) -> list[tuple[int, list[Band]]]:
    """The segment records of one chain, in coding order, each with the bands it holds: one
    record for the whole chain with chain segments, one per band without."""
    if tiling.chain_segments:
        return [(tiling.segment_index(0, group), bands)]
    return [(tiling.segment_index(b, group), [band]) for b, band in enumerate(bands)]


def _band_intervals(
    model: ExactTokenModel,
    tiling: Tiling,
    tokens: np.ndarray,
    band: Band,
    columns: list[int],
    positions: np.ndarray,
    mixer: Chain | None,
    codings: dict[int, int],
    judge: _Judge | None = None,
) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    """One band of one chain: whole-window calls, then its symbols in cell-major order and
    each coding's coder intervals [3, n] (low, width, total). `codings` maps each coding
    to code to the mixer stages it runs (core/mixers.STAGES_OF); those a `judge` drops on
    the way have no intervals."""
    cells_per_window = band.rows * tiling.window_width
    pos = positions[:cells_per_window]
    cells, mask = _group_windows(tiling, tokens, band, columns)
    mixed = mixer is not None and any(codings.values())
    tables = np.zeros((len(columns), cells_per_window, VOCAB), np.int32) if mixed else None
    # Without the mixer only each cell's own interval is kept (low, width, total), not its
    # whole table: a segment's tables would be 32 windows x 1,024 cells x 513 int64 (134
    # MB). The mixer needs whole tables, in cell order: int32, 64 MB for 32 windows.
    shape = (3, len(columns), cells_per_window)
    intervals = {coding: np.zeros(shape, np.int64) for coding in codings}
    for start in range(0, len(columns), ENCODE_CALL_WINDOWS):
        chunk = cells[start : start + ENCODE_CALL_WINDOWS]
        ids = np.concatenate([np.full((len(chunk), 1), SOS), chunk[:, :-1]], axis=1)
        into = None if tables is None else tables[start : start + len(chunk)]
        freqs, _ = model.run(
            ids, np.broadcast_to(pos, ids.shape), model.start(len(chunk)), False, ENCODE_CHUNK, into
        )
        if tables is not None:
            continue
        cum = cumulative(freqs)
        low = np.take_along_axis(cum, chunk[..., None], axis=2)[..., 0]
        high = np.take_along_axis(cum, chunk[..., None] + 1, axis=2)[..., 0]
        intervals[next(iter(codings))][:, start : start + len(chunk)] = (
            low,
            high - low,
            cum[..., -1],
        )
    if tables is not None and mixer is not None:
        live = dict(codings)
        _mix_intervals(mixer, tables, cells, mask, tiling.window_width, intervals, live, judge)
        intervals = {coding: intervals[coding] for coding in live}
    windows, cell_idx = _coding_order(mask)
    coded = {coding: out[:, windows, cell_idx] for coding, out in intervals.items()}
    return cells[windows, cell_idx], coded


class _Judge:
    """The early judgment of a chain's extra codings, made at the first cell step where the
    base has spent EXTRA_DECIDE_BITS and the chain has coded EXTRA_DECIDE_STEPS steps in all
    (its earlier bands included), not at the end of that band: on a photo that is half of
    band 0, so coding 3's levels, about 0.7 ms a step, run for half the steps they did. It
    depends on the chain's own tokens only, like the rest of a chain."""

    def __init__(self, base: int, codings: Sequence[int]) -> None:
        self.base = base
        self.bits = dict.fromkeys(codings, 0.0)  # each coding's bits so far in the chain
        self.steps = 0  # the chain's cell steps so far
        self.dropped: set[int] = set()
        self.decided = False

    def add(self, coding: int, width: np.ndarray, total: np.ndarray) -> None:
        self.bits[coding] += float(-np.log2(width / total).sum())

    def decide(self) -> bool:
        """After each cell step: True once the base has spent enough bits and steps; the
        extras not worth keeping are then dropped."""
        self.steps += 1
        base = self.bits[self.base]
        if base >= EXTRA_DECIDE_BITS and self.steps >= EXTRA_DECIDE_STEPS:
            self.decided = True
            extras = {c: bits for c, bits in self.bits.items() if c != self.base}
            self.dropped = {c for c, bits in extras.items() if not _worth_keeping(bits, base)}
        return self.decided


def _mix_intervals(
    mixer: Chain,
    tables: np.ndarray,
    cells: np.ndarray,
    mask: np.ndarray,
    width: int,
    intervals: dict[int, np.ndarray],
    codings: dict[int, int],
    judge: _Judge | None = None,
) -> None:
    """Each coded cell's interval under each coding's tables (the model's, or a stage's
    output), stepping cells in the order the decoder does (all windows of a cell, then the
    next cell); the mixer runs only the stages some coding needs. With a `judge`, its
    extras are judged at the first step where the base has spent enough; those it drops
    stop there: their intervals are left unfinished and they leave `codings`."""
    stages = max(codings.values())
    every = mask.all(axis=0).tolist()
    picks: dict[int, np.ndarray] = {}
    for cell in np.flatnonzero(mask.any(axis=0)).tolist():
        # int64 and contiguous at once: what every stage and the sums below read fastest.
        if every[cell]:  # the common case: plain slices, no gathers
            live, where = None, slice(None)
            model_table, symbols = tables[:, cell].astype(np.int64), cells[:, cell]
        else:
            live = where = np.flatnonzero(mask[:, cell])
            model_table, symbols = tables[live, cell].astype(np.int64), cells[live, cell]
        outs, steps = mixer.stage_tables(model_table, cells, cell, width, live, stages)
        pick = picks.get(len(symbols))
        if pick is None:
            pick = picks[len(symbols)] = np.arange(len(symbols))
        for coding, stage in codings.items():
            table = outs[stage - 1] if stage else model_table
            cum = np.cumsum(table, axis=1, dtype=np.int64)
            chosen = table[pick, symbols]
            total = cum[:, -1]
            out = intervals[coding]
            out[0, where, cell] = cum[pick, symbols] - chosen
            out[1, where, cell] = chosen
            out[2, where, cell] = total
            if judge is not None:
                judge.add(coding, chosen, total)
        mixer.update(steps, symbols)
        if judge is not None and judge.decide():
            for coding in judge.dropped:
                del codings[coding]
            stages = max(codings.values())
            judge = None


def decode_full(
    model: ExactTokenModel,
    record: FullImageRecord,
    index: int,
    progress: Progress | None = None,
    workers: int = 1,
) -> FullImage:
    """Decode a full-resolution image band by band; every band's group is one batch.

    A window's context comes only from the window above it (no left context), so the
    groups at one position of every band form an independent chain: with `workers`
    threads each decodes its own chains, band after band, side by side. The decoder
    re-encodes what it decodes (the payload must be the encoder's canonical output) and
    checks each segment's token check, as for thumbnails.
    """
    header = record.header
    tiling = header.tiling
    positions = tiling.cell_positions()
    image = np.zeros((header.height, header.width), dtype=np.uint16)
    groups = tiling.segments()
    bands = tiling.bands()
    report = PixelProgress(progress, header.token_count)
    cancel = Cancel()

    def chain(group: int, report: Report) -> np.ndarray:
        """Decode one chain into `image`; returns its columns (a forked chain's pixels are
        its own copy's, sent back)."""
        mixer = mixer_for(header.coding, header.linear_levels)
        for number, segment_bands in _chain_segments(tiling, bands, group):
            reader = _SegmentReader(header, record.segments[number], number, index)
            for band_number, band in enumerate(segment_bands):
                if cancel.is_set():
                    return image[:, :0]
                try:
                    symbols = _decode_band(
                        model,
                        tiling,
                        image,
                        band,
                        groups[group],
                        positions,
                        reader.decoder,
                        reader.shadow,
                        mixer,
                        cancel,
                    )
                except PayloadError as exc:
                    raise PayloadError(f"{reader.where}: {exc}") from None
                if symbols is None:  # cancelled
                    return image[:, :0]
                reader.check.add(symbols)
                reader.band_done(band_number)
                report(len(symbols))
            reader.finish()
        return image[:, slabs[group]]

    slabs = [_chain_columns(tiling, group) for group in groups]
    forked = use_processes(workers, len(groups), header.token_count)
    if forked:  # opened once, before the forks: every child inherits them
        _ = model.session, model.step_session
    try:
        columns = run_parallel(chain, range(len(groups)), workers, cancel, report.add, forked)
    finally:
        cancel.set()
    if forked:
        for slab, pixels in zip(slabs, columns, strict=True):
            image[:, slab] = pixels
    return FullImage(image, header.mode, record.name)


def _chain_columns(tiling: Tiling, group: list[int]) -> slice:
    """The image columns a chain's windows code (its groups' window columns, contiguous)."""
    return slice(tiling.columns[group[0]], tiling.columns[group[-1]] + tiling.real_width(group[-1]))


class _SegmentReader:
    """One segment record being decoded: its range decoder, the shadow encoder that must
    give back its payload byte for byte, and its running token check. Errors name the
    record and the segment."""

    def __init__(self, header: FullImageHeader, segment: Segment, number: int, index: int) -> None:
        self.segment = segment
        self.where = f"record {index}, segment {number}"
        self.decoder = RangeDecoder(segment.payload)
        self.shadow = RangeEncoder()
        self.check = SegmentCheck(header, number)

    def band_done(self, band: int) -> None:
        """After each band but the last of a segment with band checks: the tokens so far
        must match the band's check, so a damaged or forged chain stops here, after one
        band's work, not at the chain's end."""
        checks = self.segment.band_checks
        if band < len(checks) and self.check.band_value != checks[band]:
            raise TokenChecksumError(
                f"{self.where}: the decoded tokens fail band {band}'s check: the record is "
                "damaged, or the model computes other numbers than the encoder's"
            )

    def finish(self) -> None:
        """The segment's end: the payload must be canonical and the token check match."""
        if self.shadow.finish()[0] != self.segment.payload:
            raise PayloadError(
                f"{self.where}: a segment's payload is not the encoder's canonical output for "
                "the tokens it decodes to (bytes changed or appended)"
            )
        if self.check.value != self.segment.token_check:
            raise TokenChecksumError(
                f"{self.where}: the decoded tokens fail the token check: the record is "
                "damaged, or the model computes other numbers than the encoder's"
            )


def _decode_band(
    model: ExactTokenModel,
    tiling: Tiling,
    image: np.ndarray,
    band: Band,
    columns: list[int],
    positions: np.ndarray,
    decoder: RangeDecoder,
    shadow: RangeEncoder,
    mixer: Chain | None,
    cancel: Cancel | None = None,
) -> np.ndarray | None:
    """Decode one band of one chain into `image` (its rows above are already there) from
    its segment's decoder, re-encoding every symbol into `shadow`; returns the decoded
    tokens in coding order, or None when `cancel` was set meanwhile."""
    width = tiling.window_width
    n_cells = band.rows * width
    batch = len(columns)
    cells, mask = _group_windows(tiling, image, band, columns)
    real = [tiling.real_width(c) for c in columns]
    first = band.known * width
    # The windows that code each column (all but the narrow last column's padding).
    live_by_col = [[w for w in range(batch) if col < real[w]] for col in range(width)]
    narrow = [w for w in range(batch) if real[w] < width]
    # SOS and the known rows but their last token fed at once, KNOWN_ROWS_CHUNK windows per
    # call (a call's memory grows with its batch); that last token (SOS in a band without
    # known rows) is the whole group's first step, whose tables are the first coded cell's.
    # Why not all of them in the calls: with a span of 128, SOS and 4 known rows of 32 are
    # 129 tokens: a chunk of 128 and a call of one token for every window, where one step
    # of the group does (a 768 x 512 photo: 456 graph calls fewer, 38 group steps more; the
    # same tables, as the exact graph's do not depend on how a sequence is cut).
    ids = np.concatenate([np.full((batch, 1), SOS), cells[:, :first]], axis=1)
    if first:
        states = []
        for start in range(0, batch, KNOWN_ROWS_CHUNK):
            chunk = ids[start : start + KNOWN_ROWS_CHUNK, :first]
            pos = np.broadcast_to(positions[:first], chunk.shape)
            states.append(model.run(chunk, pos, model.start(len(chunk)))[1])
        state = states[0] if len(states) == 1 else stacked(states)
        del states
    else:
        state = model.start(batch)
    stepper = model.stepper(state)
    tables = stepper.step(ids[:, first], positions[first])
    cum = np.zeros((batch, VOCAB + 1), np.int64)  # a whole step's tables, refilled per cell
    for cell in range(first, n_cells):
        if cancel is not None and cancel.is_set():
            return None
        col = cell % width
        live = live_by_col[col]
        every = len(live) == batch
        table = tables if every else tables[live]
        if mixer is not None and live:
            table, step = mixer.tables(table, cells, cell, width, None if every else live)
        if every:
            np.cumsum(table, 1, np.int64, cum[:, 1:])
            symbols = decoder.decode_rows_into(cum, shadow)
            cells[:, cell] = symbols
        elif live:
            symbols = decoder.decode_rows_into(cumulative(table), shadow)
            cells[live, cell] = symbols
        if live and mixer is not None:
            mixer.update(step, symbols)
        for w in narrow:
            if col == real[w] - 1:  # the row's last real token: its padding follows it
                fill_padding(cells[w, cell - col : cell - col + width], real[w])
        if cell + 1 < n_cells:
            tables = stepper.step(cells[:, cell], positions[cell + 1])
    coded_rows = slice(band.top + band.known, band.top + band.rows)
    for w, c in enumerate(columns):
        x0 = tiling.columns[c]
        block = cells[w].reshape(band.rows, width)[band.known :, : real[w]]
        image[coded_rows, x0 : x0 + real[w]] = block
    order = _coding_order(mask)
    return cells[order]
