"""What a stream may ask of the decoder (DecodeLimits), and the budget that charges
each record against it from its header, before any model work or allocation for it.

Why work and not bytes: a record costs the model one step per token whatever its size
(an empty payload decodes to a whole image), and a full-resolution header chooses what
each token costs: windows per segment set the decoder's batch (a step of 1 window costs
about 3.7x a 32-window step per token), context rows are cells fed but not coded. So a
full-resolution image is charged *work*, model cells fed weighted by the batch overhead
(`full_image_work`), and the header's layout fields are held to what this codec's
encoder writes unless the caller opts in. docs/hardening.md has the measured costs.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from igpt_codec.format.classical import ClassicalImageHeader
from igpt_codec.format.errors import DecodeLimitError
from igpt_codec.format.records import CODING_MATCH, FullImageHeader, RecordHeader

ENV_MAX_PIXELS = "IGPT_CODEC_MAX_PIXELS"
"""Environment variable read for DecodeLimits.max_pixels's default (scripts, servers)."""
ENV_MAX_WORK = "IGPT_CODEC_MAX_WORK"
"""Environment variable read for DecodeLimits.max_work's default."""
ENV_MAX_MEMORY = "IGPT_CODEC_MAX_MEMORY"
"""Environment variable read for DecodeLimits.max_memory's default (bytes)."""

DEFAULT_MAX_PIXELS = 1 << 24
"""16.8 MP per full-resolution image (4096 x 4096): about 35 CPU-minutes of decoding."""
DEFAULT_MAX_WORK = 1 << 24
"""Work units per stream (`full_image_work`); an honest photo costs about 1.1-1.3 units
per pixel, so this admits a 13 MP photo, and bounds the worst forged layout to the
figure docs/hardening.md measures."""
DEFAULT_MAX_MEMORY = 1 << 31
"""Estimated peak bytes of one full-resolution decode (`full_image_memory`): 2 GiB."""

ENCODER_SEGMENT_WINDOWS = 32
"""Most windows per segment this codec's encoder writes (fullres.SEGMENT_WINDOWS)."""
ENCODER_CONTEXT_ROWS = 4
"""Most context rows this codec's encoder writes (fullres.CONTEXT_ROWS)."""

STEP_OVERHEAD = 3
"""A decoder step's fixed cost, in windows: a step of a group costs about (3 + windows)
cells' work. Measured per token, 418 us at 1 window against 147-193 us at 16-32 (issue
26: 559 and 150); per work unit 72-117 us across every layout tried (docs/hardening.md)."""

PARALLEL_CHAINS = 2
"""The encoder's default: each band is cut into at least this many groups (when it has
that many windows), so two decoder threads can work side by side: group i of every band
depends only on group i of the band above (a chain). Kept here rather than in fullres.py
so that the stream dispatch has it without importing the full-resolution coder."""

KNOWN_ROWS_CHUNK = 1
"""Windows per call when the decoder feeds a band's known rows (their caches are stacked
after). One call for the whole group made the decode's peak memory grow with the group:
measured peak RSS of a 2048 x 64 decode at 32 windows per segment, 680 MB with one call,
265 MB one window at a time, at the same CPU per token (docs/hardening.md)."""


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"{name} must be a positive integer, got {raw!r}")
    return value


@dataclass(frozen=True)
class DecodeLimits:
    """Work a stream may ask of the decoder, as zstd bounds its window.

    A server that decodes untrusted streams sets these; the defaults admit any file this
    codec's encoder writes up to about 13 MP and bound a hostile one to the figures in
    docs/hardening.md (CPU time and peak memory). max_pixels, max_work and max_memory
    default to the environment variables IGPT_CODEC_MAX_PIXELS, IGPT_CODEC_MAX_WORK and
    IGPT_CODEC_MAX_MEMORY when set.

    - max_images, max_tokens: records and tokens per stream (thumbnails and full images).
    - max_pixels: width x height of one full-resolution image.
    - max_work: full-resolution work per stream (full_image_work: model cells fed,
      weighted by the decoder's per-step overhead).
    - max_memory: estimated peak bytes of one full-resolution decode (full_image_memory);
      the decoder runs fewer workers when that fits, and refuses when one does not.
    - max_segment_windows, max_context_rows: the layout fields a header may give; the
      defaults are what this codec's encoder writes, the format allows 255 and 24.
    """

    max_images: int = 1 << 16
    max_tokens: int = 1 << 26
    max_pixels: int = field(default_factory=lambda: _env_int(ENV_MAX_PIXELS, DEFAULT_MAX_PIXELS))
    max_work: int = field(default_factory=lambda: _env_int(ENV_MAX_WORK, DEFAULT_MAX_WORK))
    max_memory: int = field(default_factory=lambda: _env_int(ENV_MAX_MEMORY, DEFAULT_MAX_MEMORY))
    max_segment_windows: int = ENCODER_SEGMENT_WINDOWS
    max_context_rows: int = ENCODER_CONTEXT_ROWS


def full_image_work(header: FullImageHeader) -> int:
    """Work units of decoding one full-resolution image, from its header alone.

    Every band feeds each of its windows rows x window_width cells (context, coded and
    padding alike), one step per cell for a whole group, and a step costs about
    STEP_OVERHEAD windows more than its windows: work = bands x rows x window_width x
    (windows + STEP_OVERHEAD x groups). Computed without listing the bands (a header may
    ask for 65,535 of them).
    """
    tiling = header.tiling
    rows, width = tiling.window_height, tiling.window_width
    columns = math.ceil(header.width / width)
    groups = math.ceil(columns / header.segment_windows)
    return (
        _band_count(header.height, rows, header.context_rows)
        * rows
        * width
        * (columns + STEP_OVERHEAD * groups)
    )


def _band_count(height: int, rows: int, context: int) -> int:
    """len(Tiling.bands()): the first band codes `rows` rows, each later one rows - context
    (the last one, moved up to the bottom edge, fewer)."""
    if height <= rows:
        return 1
    return 1 + math.ceil((height - rows) / (rows - context))


MATCH_STATE_BYTES = 21_921_792
"""Coding 3's state per chain: MatchMixer(DEFAULT_LEVELS).memory_bytes (a test holds the two
equal; the core's levels are allocated only by a decode that needs them)."""

WORKER_PROCESS_BYTES = 16 << 20
"""What a forked worker (pipelines/parallel.py) holds beyond its chain's state: the pages of
the parent's heap it touches and its own allocator's arenas (measured on a 768 x 512 decode
with 2 workers: 21 MiB of PSS above the same decode in threads). Each also writes its
columns into its own copy of the image, counted beside it."""


def full_image_memory(header: FullImageHeader, cache_bytes_per_cell: int, workers: int) -> int:
    """Estimated peak bytes of decoding one full-resolution image with `workers` workers.

    The image (uint16) and, per worker, its group's windows: each window's KV cache
    (cache_bytes_per_cell x its cells, rounded up to the cache's chunks, twice for the
    copy made when it grows), its cells and tables (int64), and the adaptive mixer's
    count tables (3 levels of 16 MB), and with coding 3 its longer-reach levels' slot
    tables (MATCH_STATE_BYTES, 21 MB, fixed whatever the image). The known-rows call is
    cut into KNOWN_ROWS_CHUNK windows, whose cost the cache term already covers. Measured
    with the default model (2,304 cache bytes per cell): 118 MB peak RSS at 1 window,
    265 MB at 32, about 4.7 MB per window, which the cache term (2 x 2.4 MB) matches; the
    rest is the process. A worker may be a forked process (pipelines/parallel.py): each is
    charged its own copy of the image and WORKER_PROCESS_BYTES, whether or not it forks.
    """
    tiling = header.tiling
    cells = tiling.window_height * tiling.window_width
    windows = min(header.segment_windows, math.ceil(header.width / tiling.window_width))
    per_window = 2 * cache_bytes_per_cell * (cells + 64) + 8 * cells + 4 * 513 * 8
    image = 2 * header.width * header.height
    per_worker = windows * per_window + 3 * (16 << 20) + image + WORKER_PROCESS_BYTES
    if header.coding == CODING_MATCH:
        per_worker += MATCH_STATE_BYTES
    return image + workers * per_worker


class Budget:
    """Images, tokens and work of one stream, charged against DecodeLimits from each
    record's header, exactly once per record, before any model work or allocation for it.
    Raises DecodeLimitError naming the record, what it asks and the limit to raise."""

    def __init__(self, limits: DecodeLimits) -> None:
        self.limits = limits
        self.images = 0
        self.tokens = 0
        self.work = 0

    def charge(
        self, header: RecordHeader | FullImageHeader | ClassicalImageHeader, index: int
    ) -> None:
        limits = self.limits
        self.images += 1
        self.tokens += header.token_count
        if self.images > limits.max_images:
            raise DecodeLimitError(
                f"record {index}: the stream holds more than {limits.max_images} images "
                "(the decoder's limit; raise DecodeLimits.max_images to decode it)"
            )
        if self.tokens > limits.max_tokens:
            raise DecodeLimitError(
                f"record {index}: the stream holds more than {limits.max_tokens} tokens "
                "(the decoder's limit; raise DecodeLimits.max_tokens to decode it)"
            )
        if isinstance(header, FullImageHeader):
            self._charge_full(header, index)
        elif not isinstance(header, RecordHeader) and header.token_count > limits.max_pixels:
            # A classical (PNG/WebP) image costs no model work, but its pixels are still
            # allocated whole by Pillow: the same cap per image.
            raise DecodeLimitError(
                f"record {index}: a {header.width}x{header.height} image has "
                f"{header.token_count} pixels, more than the decoder's limit of "
                f"{limits.max_pixels} (raise DecodeLimits.max_pixels or {ENV_MAX_PIXELS})"
            )

    def _charge_full(self, header: FullImageHeader, index: int) -> None:
        check_image_header(header, self.limits, f"record {index}: ")
        self.work += full_image_work(header)
        if self.work > self.limits.max_work:
            raise DecodeLimitError(
                f"record {index}: a {header.width}x{header.height} image brings the stream's "
                f"decoding work to {self.work} units, more than the decoder's limit of "
                f"{self.limits.max_work} (raise DecodeLimits.max_work or {ENV_MAX_WORK})"
            )


def check_image_header(header: FullImageHeader, limits: DecodeLimits, where: str = "") -> None:
    """What one full-resolution header may ask on its own: its layout fields, its pixels,
    its tokens and its work. The stream reader calls it as it parses the header, before
    reading the image's segment records (SPEC.md: the charge happens at the record's
    header), and the Budget again with the stream's totals. `where` prefixes the message."""
    size = f"{where}a {header.width}x{header.height} image"
    if header.segment_windows > limits.max_segment_windows:
        raise DecodeLimitError(
            f"{size} asks for {header.segment_windows} windows per segment; this codec "
            f"writes at most {limits.max_segment_windows} (raise "
            "DecodeLimits.max_segment_windows to decode it)"
        )
    if header.context_rows > limits.max_context_rows:
        raise DecodeLimitError(
            f"{size} asks for {header.context_rows} context rows; this codec writes at "
            f"most {limits.max_context_rows} (raise DecodeLimits.max_context_rows to "
            "decode it)"
        )
    if header.token_count > limits.max_pixels:
        raise DecodeLimitError(
            f"{size} has {header.token_count} pixels, more than the decoder's limit of "
            f"{limits.max_pixels} (raise DecodeLimits.max_pixels or {ENV_MAX_PIXELS})"
        )
    if header.token_count > limits.max_tokens:
        raise DecodeLimitError(
            f"{size} holds more than {limits.max_tokens} tokens (the decoder's limit; "
            "raise DecodeLimits.max_tokens to decode it)"
        )
    work = full_image_work(header)
    if work > limits.max_work:
        raise DecodeLimitError(
            f"{size} asks for {work} units of decoding work, more than the decoder's limit "
            f"of {limits.max_work} (raise DecodeLimits.max_work or {ENV_MAX_WORK})"
        )


def workers_within(
    header: FullImageHeader,
    cache_bytes_per_cell: int,
    workers: int,
    limits: DecodeLimits,
    index: int,
) -> int:
    """The most workers, up to `workers`, whose estimated peak memory fits
    limits.max_memory; DecodeLimitError naming the image's size when one does not fit."""
    for count in range(max(1, workers), 0, -1):
        if full_image_memory(header, cache_bytes_per_cell, count) <= limits.max_memory:
            return count
    need = full_image_memory(header, cache_bytes_per_cell, 1)
    raise DecodeLimitError(
        f"record {index}: a {header.width}x{header.height} image with "
        f"{header.segment_windows} windows per segment needs about {need >> 20} MiB to "
        f"decode, more than the decoder's limit of {limits.max_memory >> 20} MiB (raise "
        f"DecodeLimits.max_memory or {ENV_MAX_MEMORY})"
    )


class WorkTally:
    """The full-resolution work of records as a decoder takes them, for a caller that
    splits one stream into several decode calls (concatenated streams under different
    models) and must carry `max_work` across them, as it carries images and tokens."""

    def __init__(self) -> None:
        self.total = 0

    def watch(self, records: Iterable[Any]) -> Iterable[Any]:
        """`records` as they were (a sequence stays one), counted as they are taken."""
        if isinstance(records, Sequence):
            self.total += sum(_work_of(record) for record in records)
            return records
        return self._counted(records)

    def _counted(self, records: Iterable[Any]) -> Iterator[Any]:
        for record in records:
            self.total += _work_of(record)
            yield record


def _work_of(record: Any) -> int:
    header = getattr(record, "header", None)
    return full_image_work(header) if isinstance(header, FullImageHeader) else 0
