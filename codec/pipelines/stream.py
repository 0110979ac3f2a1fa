"""Stream-level dispatch: images to records and back, each to its own coder.

A thumbnail goes to igpt_codec.pipelines.thumbnail, a full-resolution image to
igpt_codec.pipelines.fullres. Both directions plan the work the same way: the images (or
records) are cut into groups, each coded by one call of its kind's coder, and the results
come back in input order (`_in_order`). Decoding admits every record exactly once
before any model work on it: the model's fingerprint and coding, the geometry the model
can code, and its charge against DecodeLimits (igpt_codec.pipelines.limits).

The names that lived here before the split (TokenImage, DecodeLimits, check_side, ...)
are re-exported, so `igpt_codec.pipelines.stream` still offers them.
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Iterable, Iterator, Sequence
from itertools import islice
from typing import TYPE_CHECKING, TypeVar

import numpy as np

from igpt_codec.core.errors import BundleError
from igpt_codec.core.palette import MAX_SIDE, PALETTE_SIZE
from igpt_codec.format.classical import ClassicalImageRecord
from igpt_codec.format.errors import DecodeLimitError, InvalidFieldError, ModelMismatchError
from igpt_codec.format.records import (
    CODING_ADAPTIVE,
    CODING_EXACT,
    CODING_MATCH,
    FullImageRecord,
    Record,
)
from igpt_codec.pipelines.limits import PARALLEL_CHAINS, Budget, DecodeLimits, workers_within
from igpt_codec.pipelines.thumbnail import (
    check_side,
    check_tokens,
    coding_of,
    decode_batch,
    encode_exact,
    encode_float,
)
from igpt_codec.pipelines.types import (
    AnyImage,
    AnyRecord,
    EncodedImage,
    FullImage,
    Progress,
    TokenCounter,
    TokenImage,
    token_count,
)
from igpt_codec.runtime.exact_runner import ExactTokenModel
from igpt_codec.runtime.float_runner import TokenModel

if TYPE_CHECKING:
    from igpt_codec.runtime.bundle import Bundle

# The full-resolution coder (fullres.py, its mixers, classical.py) is imported where it is
# first used: a thumbnail command never needs it, and importing it cost each compress or
# decompress process about 6 ms (session 30).

__all__ = [
    "DECODE_WINDOW",
    "FULL_CODINGS",
    "MAX_BATCH",
    "AnyImage",
    "AnyRecord",
    "DecodeLimits",
    "EncodedImage",
    "FullImage",
    "Progress",
    "TokenImage",
    "check_chains",
    "check_side",
    "coding_of",
    "decode",
    "encode",
    "full_workers",
    "plan_batches",
    "token_count",
]

MAX_BATCH = 16
"""Largest decoder batch. Batch 16 decodes ~4x faster per token than batch 1 with the
default model (docs/runtime-notes.md); more only adds memory."""

DECODE_WINDOW = 4 * MAX_BATCH
"""Records a streaming decoder reads ahead to form batches; bounds memory and latency."""

FULL_CODINGS = frozenset({CODING_EXACT, CODING_ADAPTIVE, CODING_MATCH})
"""Codings a full-resolution image may have: plain exact tables (the first full-resolution
files), exact tables refined by adaptive context mixing, or those refined again by the
longer-reach levels (the encoder writes the smaller of the last two)."""

FULL_WRITER_CODINGS = (CODING_ADAPTIVE, CODING_MATCH)
"""What the encoder codes a full-resolution image with, side by side (the first decides the
layout; pipelines/fullres.encode_full keeps the smaller record)."""

_T = TypeVar("_T")

# The former private names, kept for bench/profiles.py, which times the coders alone.
_Counter = TokenCounter
_encode_exact = encode_exact
_encode_float = encode_float
_decode_batch = decode_batch


def plan_batches(keys: Sequence[Hashable], max_batch: int) -> list[list[int]]:
    """Indices grouped by key (first appearance first), cut into runs of max_batch."""
    groups: dict[Hashable, list[int]] = {}
    for index, key in enumerate(keys):
        groups.setdefault(key, []).append(index)
    return [
        members[start : start + max_batch]
        for members in groups.values()
        for start in range(0, len(members), max_batch)
    ]


def check_chains(chains: int | None) -> int:
    """The chains a full-resolution image's layout aims for: `chains`, or PARALLEL_CHAINS
    (2) for None. A decoder runs one chain per worker thread, so a file meant for N-core
    decoders asks for N; fewer come out where the image has fewer window columns, more where
    a group would pass SEGMENT_WINDOWS. Raises TypeError for a non-integer (a bool too: it
    is a flag mixed up with a count) and ValueError below 1."""
    if chains is None:
        return PARALLEL_CHAINS
    if isinstance(chains, bool) or not isinstance(chains, int):
        raise TypeError(f"chains must be an integer, not {type(chains).__name__}")
    if chains < 1:
        raise ValueError(f"chains must be at least 1, got {chains}")
    return chains


def full_workers(threads: int | None) -> int:
    """Worker threads for a full-resolution image: `threads`, or one per CPU. Each runs the
    model with one onnxruntime thread (independent segments beat intra-op threads on these
    small matrices: docs/full-resolution.md)."""
    return threads if threads is not None else max(1, os.cpu_count() or 1)


class _Models:
    """The sessions one encode or decode call needs, each made on first use.

    Thumbnails use a session with `threads` intra-op threads (the bundle's profile picks
    exact or float); full-resolution images share one single-threaded session across
    their worker threads (onnxruntime's run is thread-safe and releases the GIL).
    """

    def __init__(self, bundle: Bundle, threads: int | None) -> None:
        self.bundle = bundle
        self.threads = threads
        self._thumbnail: ExactTokenModel | TokenModel | None = None
        self._full: ExactTokenModel | None = None

    def thumbnail(self) -> ExactTokenModel | TokenModel:
        if self._thumbnail is None:
            kind = ExactTokenModel if self.bundle.exact else TokenModel
            self._thumbnail = kind(self.bundle, threads=self.threads)
        return self._thumbnail

    def full(self) -> ExactTokenModel:
        if self._full is None:
            self._full = ExactTokenModel(self.bundle, threads=1)
        return self._full


def _group_key(item: AnyImage | AnyRecord, index: int, exact: bool) -> Hashable:
    """Items with equal keys may share one batch: thumbnails of one side (float encoding
    and all decoding step them together); an exact thumbnail encode and a full-resolution
    image are each a group of their own."""
    if isinstance(item, FullImage | FullImageRecord | ClassicalImageRecord):
        return ("full", index)
    if isinstance(item, TokenImage) and exact:
        return ("one", index)
    return item.side if isinstance(item, TokenImage) else item.header.side


def encode(
    images: Sequence[AnyImage],
    bundle: Bundle,
    *,
    threads: int | None = None,
    max_batch: int = MAX_BATCH,
    progress: Progress | None = None,
    chains: int | None = None,
) -> Iterator[EncodedImage]:
    """Code each image into a record; yields in input order as soon as each is done.

    Exact bundles code every image from one whole-sequence call (its tables equal the
    decoder's token-by-token ones bit for bit); float bundles step token by token, a
    batch of same-side images at a time. Full-resolution images (FullImage) need an
    exact bundle; each is coded window by window (igpt_codec.pipelines.fullres), its
    layout aiming for `chains` independent chains (`check_chains`; None: 2). Thumbnails
    have no chains and ignore it. Every argument is checked before any model work.
    """
    aimed = check_chains(chains)
    for image in images:
        _check_image(image, bundle)
    counter = TokenCounter(sum(token_count(image) for image in images), progress)
    models = _Models(bundle, threads)
    if not bundle.exact:
        models.thumbnail()  # a float bundle's session fails here, not at the first image
    keys = [_group_key(image, i, bundle.exact) for i, image in enumerate(images)]

    def run() -> Iterator[tuple[int, EncodedImage]]:
        for batch in plan_batches(keys, max_batch):
            members = [images[i] for i in batch]
            coded = _encode_group(models, members, counter, threads, aimed)
            yield from zip(batch, coded, strict=True)

    return _in_order(run())


def _encode_group(
    models: _Models,
    members: list[AnyImage],
    counter: TokenCounter,
    threads: int | None,
    chains: int = PARALLEL_CHAINS,
) -> list[EncodedImage]:
    """One planned group: a full-resolution image (its layout aiming for `chains`), one
    exact thumbnail, or a batch of same-side float thumbnails."""
    bundle = models.bundle
    first = members[0]
    if isinstance(first, FullImage):
        workers = full_workers(threads)
        return [_encode_full(models.full(), bundle, first, counter, workers, chains)]
    thumbnails = [member for member in members if isinstance(member, TokenImage)]
    model = models.thumbnail()
    if isinstance(model, ExactTokenModel):
        return [encode_exact(model, bundle, image, counter) for image in thumbnails]
    return encode_float(model, bundle, thumbnails, counter)


def decode(
    records: Iterable[AnyRecord],
    bundle: Bundle,
    *,
    threads: int | None = None,
    max_batch: int = MAX_BATCH,
    progress: Progress | None = None,
    limits: DecodeLimits | None = None,
) -> Iterator[TokenImage | FullImage]:
    """Decode records in order: fingerprint, coding and limits first, token checks after.

    Yields a TokenImage for a thumbnail record and a FullImage for a full-resolution one.
    A sequence is admitted whole before any model work and batched as a whole; a lazy
    iterable (a pipe) is read DECODE_WINDOW records at a time, each window admitted
    before its model work. Raises ModelMismatchError, DecodeLimitError,
    InvalidFieldError, PayloadError (non-canonical payload) and TokenChecksumError
    (decoded tokens fail the record's check).
    """
    budget = Budget(limits or DecodeLimits())
    total = None
    window = DECODE_WINDOW
    admitted_upfront = isinstance(records, Sequence)
    if isinstance(records, Sequence):
        for index, record in enumerate(records):
            _admit(record, index, bundle, budget)
        total = sum(record.header.token_count for record in records)
        window = max(1, len(records))
    counter = TokenCounter(total, progress)
    models = _Models(bundle, threads)

    def run() -> Iterator[tuple[int, TokenImage | FullImage]]:
        for indices, batch in _window_batches(records, max_batch, window):
            if not admitted_upfront:
                for index, record in zip(indices, batch, strict=True):
                    _admit(record, index, bundle, budget)
            decoded = _decode_group(models, indices, batch, counter, threads, budget.limits)
            yield from zip(indices, decoded, strict=True)

    return _in_order(run())


def _decode_group(
    models: _Models,
    indices: list[int],
    batch: list[AnyRecord],
    counter: TokenCounter,
    threads: int | None,
    limits: DecodeLimits,
) -> list[TokenImage] | list[FullImage]:
    """One planned group: a full-resolution image, or a batch of same-side thumbnails."""
    first = batch[0]
    if isinstance(first, ClassicalImageRecord):  # kinds 5 and 6: Pillow, no model step
        from igpt_codec.pipelines.classical import decode_classical

        decoded = decode_classical(first, models.bundle.palette, indices[0])
        counter.advance(first.header.token_count)
        return [decoded]
    if isinstance(first, FullImageRecord):
        return [_decode_full(models, indices[0], first, counter, threads, limits)]
    thumbnails = [record for record in batch if isinstance(record, Record)]
    return decode_batch(models.thumbnail(), models.bundle, indices, thumbnails, counter)


def _in_order(pairs: Iterable[tuple[int, _T]]) -> Iterator[_T]:
    """Items of (index, item) pairs in index order 0, 1, 2, ..., each as soon as it can be."""
    waiting: dict[int, _T] = {}
    next_index = 0
    for index, item in pairs:
        waiting[index] = item
        while next_index in waiting:
            yield waiting.pop(next_index)
            next_index += 1
    if waiting:  # a gap means a batch plan lost an index: a bug, not bad input
        raise AssertionError(f"batches skipped record {next_index}")


def _check_image(image: AnyImage, bundle: Bundle) -> None:
    if not isinstance(image, FullImage):
        check_tokens(image, bundle)
        return
    if not bundle.exact:
        raise ValueError(
            f"full-resolution coding needs an exact bundle; {bundle.fingerprint.hex()} is "
            f"{bundle.profile}"
        )
    tokens = image.tokens
    if tokens.ndim != 2 or not tokens.size or not np.issubdtype(tokens.dtype, np.integer):
        raise ValueError(f"expected [height, width] integer tokens, got {tokens.shape}")
    if not 0 <= int(tokens.min()) <= int(tokens.max()) < PALETTE_SIZE:
        raise ValueError(f"tokens must be 0..{PALETTE_SIZE - 1}")


def _admit(record: AnyRecord, index: int, bundle: Bundle, budget: Budget) -> None:
    """Everything checked of a record before model work on it, once per record: the model
    it was coded with, its coding, a geometry the model can code, then its charge."""
    _check_record(record, index, bundle)
    budget.charge(record.header, index)


def _check_record(record: AnyRecord, index: int, bundle: Bundle) -> None:
    head = record.header
    if head.fingerprint != bundle.fingerprint:
        raise ModelMismatchError(
            f"record {index} was coded with model {head.fingerprint.hex()}, "
            f"but the bundle at hand is {bundle.fingerprint.hex()}"
        )
    if isinstance(record, ClassicalImageRecord):
        return  # a classical file needs only the bundle's palette, whatever its profile
    full = isinstance(record, FullImageRecord)
    # A full-resolution image's coding is the writer's choice among the exact ones.
    allowed = FULL_CODINGS if full and bundle.exact else {coding_of(bundle)}
    if head.coding not in allowed:
        raise ModelMismatchError(
            f"record {index} says coding {head.coding}, but bundle "
            f"{bundle.fingerprint.hex()} is {bundle.profile}"
        )
    if isinstance(record, FullImageRecord):
        from igpt_codec.pipelines.fullres import grid_of

        if not bundle.exact:
            raise InvalidFieldError(
                f"record {index} is a full-resolution image, which only exact bundles code"
            )
        if record.header.grid != grid_of(bundle.n_positions):
            raise InvalidFieldError(
                f"record {index} was cut into {record.header.grid}-wide windows; the model's "
                f"are {grid_of(bundle.n_positions)}"
            )
        return
    if record.header.side > MAX_SIDE or record.header.token_count > bundle.n_positions:
        raise InvalidFieldError(
            f"record {index} has side {record.header.side}; the model has only "
            f"{bundle.n_positions} positions"
        )


def _window_batches(
    records: Iterable[AnyRecord], max_batch: int, window: int
) -> Iterator[tuple[list[int], list[AnyRecord]]]:
    """Batches of same-side thumbnails, never spanning a window of the stream; a
    full-resolution image is a batch of its own (its windows are its batch)."""
    iterator = iter(records)
    start = 0
    while chunk := list(islice(iterator, window)):
        keys = [_group_key(record, i, exact=False) for i, record in enumerate(chunk)]
        for batch in plan_batches(keys, max_batch):
            yield [start + i for i in batch], [chunk[i] for i in batch]
        start += len(chunk)


CLASSICAL_DURING_MODEL_PIXELS = 1 << 22
"""Images up to 4 MP make their classical files while the chain workers run; larger ones after
them, as before: libwebp's lossless encoder holds several hundred MB on a 24 MP image, and a
24 MP compress already peaks at 949 MiB with the two apart (docs/speed.md, "Session 25")."""


def _encode_full(
    model: ExactTokenModel,
    bundle: Bundle,
    image: FullImage,
    counter: TokenCounter,
    workers: int,
    chains: int = PARALLEL_CHAINS,
) -> EncodedImage:
    """One full-resolution image. `chains` only shapes the layout (the header's
    segment_windows says it to every reader); the record is the same whatever `workers`."""
    from igpt_codec.pipelines.classical import ClassicalTrial, keep_smaller
    from igpt_codec.pipelines.fullres import encode_full, grid_of, make_header

    grid = grid_of(bundle.n_positions)
    header = make_header(image, bundle.fingerprint, grid, CODING_ADAPTIVE, chains=chains)
    start = counter.done
    # The guarantee (issue 28): a PNG or WebP record instead when that is smaller. Their
    # cheap files are made while the chain workers run, unless the image is so large that
    # the two peaks together would pass the memory the decoder and encoder aim for.
    trial = ClassicalTrial(image, bundle.palette)
    early = image.width * image.height <= CLASSICAL_DURING_MODEL_PIXELS
    # Codings 2 and 3 side by side in one pass over the model, the smaller kept: coding 3's
    # longer-reach levels win on synthetic images and can only make a photo's file smaller.
    record, ideal = encode_full(
        model,
        image,
        header,
        progress=lambda done, _total: counter.advance_to(start + done),
        workers=workers,
        codings=FULL_WRITER_CODINGS,
        meanwhile=trial.prepare if early else None,
    )
    encoded = EncodedImage(record, ideal)
    return keep_smaller(encoded, image, bundle.fingerprint, bundle.palette, trial)


def _decode_full(
    models: _Models,
    index: int,
    record: FullImageRecord,
    counter: TokenCounter,
    threads: int | None,
    limits: DecodeLimits,
) -> FullImage:
    """One full-resolution image, with as many worker threads as its estimated memory
    allows; running out of memory anyway is reported as the image's size, not as a fault
    of the model."""
    from igpt_codec.pipelines.fullres import decode_full

    header = record.header
    bundle = models.bundle
    cache_bytes = 2 * 4 * bundle.n_layer * bundle.n_head * bundle.head_dim  # float32 K and V
    chains = len(header.tiling.segments())
    workers = workers_within(header, cache_bytes, min(full_workers(threads), chains), limits, index)
    start = counter.done
    try:
        return decode_full(
            models.full(),
            record,
            index,
            progress=lambda done, _total: counter.advance_to(start + done),
            workers=workers,
        )
    except (MemoryError, BundleError) as exc:
        if isinstance(exc, BundleError) and "alloc" not in str(exc).lower():
            raise
        raise DecodeLimitError(
            f"record {index}: a {header.width}x{header.height} image with "
            f"{header.segment_windows} windows per segment and {header.context_rows} context "
            f"rows needs more memory than this machine gave the decoder ({workers} worker "
            "threads); decode it with fewer threads or more memory"
        ) from None
