"""Tokens <-> records: the model drives the range coder both ways.

The model gives an integer frequency table for every token; the coder codes the
token under it. The decoder recomputes every table from the tokens it has
decoded so far; nothing but the coded bits is stored.

Exact bundles (the default) output the tables themselves, and their numbers do
not depend on how the work is cut: the encoder runs each image in one call
(whole sequence), the decoder token by token with the KV cache, in batches of
any grouping. Float32 bundles (kept for measurement) give probabilities that
`quantize_probs` turns into tables; both sides step token by token, and the
files decode only where the floats round the same way.

The decoder also re-encodes what it decodes and requires the payload to be the
encoder's own output byte for byte, so each token sequence has exactly one
payload (the format is canonical), and checks the record's 16-bit token check.
The model's ideal bits (-log2 of each coded token's share of its table) are
summed for reporting only.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import islice
from typing import TYPE_CHECKING, TypeVar

import numpy as np

from igpt_codec.core.coder import RangeDecoder, RangeEncoder
from igpt_codec.core.freq import FREQ_BITS, cumulative, quantize_probs
from igpt_codec.core.palette import MAX_SIDE, PALETTE_SIZE
from igpt_codec.format.container import token_check
from igpt_codec.format.errors import (
    DecodeLimitError,
    InvalidFieldError,
    ModelMismatchError,
    PayloadError,
    TokenChecksumError,
)
from igpt_codec.format.records import (
    CODING_ADAPTIVE,
    CODING_EXACT,
    CODING_FLOAT32,
    FullImageRecord,
    Record,
    RecordHeader,
)
from igpt_codec.pipelines.fullres import FullImage, decode_full, encode_full, grid_of, make_header
from igpt_codec.runtime.contract import SOS
from igpt_codec.runtime.exact_runner import ExactTokenModel
from igpt_codec.runtime.float_runner import TokenModel
from igpt_codec.runtime.positions import positions

if TYPE_CHECKING:
    from igpt_codec.runtime.bundle import Bundle

MAX_BATCH = 16
"""Largest decoder batch. Batch 16 decodes ~4x faster per token than batch 1 with the
default model (docs/runtime-notes.md); more only adds memory."""

DECODE_WINDOW = 4 * MAX_BATCH
"""Records a streaming decoder reads ahead to form batches; bounds memory and latency."""

Progress = Callable[[int, int | None], None]
"""progress(tokens_done, tokens_total or None when the total is not known yet)."""

_T = TypeVar("_T")


@dataclass(frozen=True)
class DecodeLimits:
    """Work a stream may ask of the decoder, as zstd bounds its window.

    A record costs the model one step per token whatever its size in bytes (an empty
    payload decodes to a whole image), so a server that decodes untrusted streams sets
    these. The defaults are far above any honest single file (65,536 images of 32x32)
    and still bound a hostile one to about three hours of one core.
    """

    max_images: int = 1 << 16
    max_tokens: int = 1 << 26


@dataclass(frozen=True)
class TokenImage:
    """One image as palette tokens, with the geometry the container records."""

    tokens: np.ndarray
    side: int
    width: int
    height: int
    mode: str
    name: str | None = None
    """The original file name, stored only when asked (compress --names)."""


AnyImage = TokenImage | FullImage
"""A thumbnail (side x side tokens) or a full-resolution palette image."""
AnyRecord = Record | FullImageRecord


@dataclass(frozen=True)
class EncodedImage:
    """A coded record and the model's ideal cost of its tokens, in bits (reporting only)."""

    record: AnyRecord
    ideal_bits: float

    @property
    def payload_bytes(self) -> int:
        if isinstance(self.record, FullImageRecord):
            return sum(len(segment.payload) for segment in self.record.segments)
        return len(self.record.payload)


def token_count(image: AnyImage) -> int:
    return int(image.tokens.size)


FULL_CODINGS = frozenset({CODING_EXACT, CODING_ADAPTIVE})
"""Codings a full-resolution image may have: plain exact tables (the first full-resolution
files) or exact tables refined by adaptive context mixing (what the encoder writes)."""


def coding_of(bundle: Bundle) -> int:
    """The record coding value of a bundle's profile."""
    return CODING_EXACT if bundle.exact else CODING_FLOAT32


def check_side(side: int, bundle: Bundle) -> None:
    """A side the tokenizer can produce and the model has positions for."""
    if not 1 <= side <= MAX_SIDE:
        raise ValueError(f"size must be 1..{MAX_SIDE}, got {side}")
    if side * side > bundle.n_positions:
        raise ValueError(
            f"size {side} needs {side * side} positions; the model has {bundle.n_positions}"
        )


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


def encode(
    images: Sequence[AnyImage],
    bundle: Bundle,
    *,
    threads: int | None = None,
    max_batch: int = MAX_BATCH,
    progress: Progress | None = None,
) -> Iterator[EncodedImage]:
    """Code each image into a record; yields in input order as soon as each is done.

    Exact bundles code every image from one whole-sequence call (its tables equal the
    decoder's token-by-token ones bit for bit); float bundles step token by token.
    Full-resolution images (FullImage) need an exact bundle; each is coded window by
    window (igpt_codec.pipelines.fullres).
    """
    for image in images:
        _check_tokens(image, bundle)
    counter = _Counter(sum(token_count(image) for image in images), progress)
    if bundle.exact:
        models: dict = {}

        def thumbnail_model() -> ExactTokenModel:
            if "thumbnail" not in models:
                models["thumbnail"] = ExactTokenModel(bundle, threads=threads)
            return models["thumbnail"]

        return (
            _encode_full(
                _full_model(bundle, threads, models), bundle, image, counter, full_workers(threads)
            )
            if isinstance(image, FullImage)
            else _encode_exact(thumbnail_model(), bundle, image, counter)
            for image in images
        )
    float_model = TokenModel(bundle, threads=threads)

    def run() -> Iterator[tuple[int, EncodedImage]]:
        for batch in plan_batches([image.side for image in images], max_batch):
            members = [images[i] for i in batch]
            yield from zip(batch, _encode_float(float_model, bundle, members, counter), strict=True)

    return _in_order(run())


def decode(
    records: Iterable[AnyRecord],
    bundle: Bundle,
    *,
    threads: int | None = None,
    max_batch: int = MAX_BATCH,
    progress: Progress | None = None,
    limits: DecodeLimits | None = None,
) -> Iterator[TokenImage]:
    """Decode records in order: fingerprint, coding and limits first, token checks after.

    A sequence is checked whole before any model work and batched as a whole; a lazy
    iterable (a pipe) is read DECODE_WINDOW records at a time. Raises ModelMismatchError,
    DecodeLimitError, InvalidFieldError, PayloadError (non-canonical payload) and
    TokenChecksumError (decoded tokens fail the record's check).
    """
    limits = limits or DecodeLimits()
    total = None
    window = DECODE_WINDOW
    budget = _Budget(limits)
    if isinstance(records, Sequence):
        for index, record in enumerate(records):
            _check_record(record, index, bundle)
            budget.charge(record, index)
        total = sum(record.header.token_count for record in records)
        window = max(1, len(records))
        budget = _Budget(limits, charged=True)
    counter = _Counter(total, progress)
    models: list[ExactTokenModel | TokenModel] = []
    full_models: dict = {}

    def run() -> Iterator[tuple[int, TokenImage]]:
        for indices, batch in _window_batches(records, max_batch, window):
            for index, record in zip(indices, batch, strict=True):
                _check_record(record, index, bundle)
                budget.charge(record, index)
            if isinstance(batch[0], FullImageRecord):
                model = _full_model(bundle, threads, full_models)
                workers = full_workers(threads)
                yield indices[0], _decode_full(model, indices[0], batch[0], counter, workers)
                continue
            if not models:
                kind = ExactTokenModel if bundle.exact else TokenModel
                models.append(kind(bundle, threads=threads))
            decoded = _decode_batch(models[0], bundle, indices, batch, counter)
            yield from zip(indices, decoded, strict=True)

    return _in_order(run())


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


class _Counter:
    """Tokens done across batches, reported through the optional callback."""

    def __init__(self, total: int | None, progress: Progress | None) -> None:
        self.total = total
        self.done = 0
        self._progress = progress

    def advance(self, n: int) -> None:
        self.advance_to(self.done + n)

    def advance_to(self, done: int) -> None:
        self.done = done
        if self._progress is not None:
            self._progress(self.done, self.total)


class _Budget:
    """Images and tokens charged against DecodeLimits before any model work on them."""

    def __init__(self, limits: DecodeLimits, charged: bool = False) -> None:
        self.limits = limits
        self.charged = charged
        self.images = 0
        self.tokens = 0

    def charge(self, record: AnyRecord, index: int) -> None:
        if self.charged:
            return
        self.images += 1
        self.tokens += record.header.token_count
        if self.images > self.limits.max_images:
            raise DecodeLimitError(
                f"record {index}: the stream holds more than {self.limits.max_images} images "
                "(the decoder's limit; raise DecodeLimits.max_images to decode it)"
            )
        if self.tokens > self.limits.max_tokens:
            raise DecodeLimitError(
                f"record {index}: the stream holds more than {self.limits.max_tokens} tokens "
                "(the decoder's limit; raise DecodeLimits.max_tokens to decode it)"
            )


def _check_tokens(image: AnyImage, bundle: Bundle) -> None:
    if isinstance(image, FullImage):
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
        return
    check_side(image.side, bundle)
    tokens = image.tokens
    if tokens.shape != (image.side**2,) or not np.issubdtype(tokens.dtype, np.integer):
        raise ValueError(
            f"expected {image.side**2} integer tokens, got {tokens.dtype} {tokens.shape}"
        )
    if tokens.size and not 0 <= int(tokens.min()) <= int(tokens.max()) < PALETTE_SIZE:
        raise ValueError(f"tokens must be 0..{PALETTE_SIZE - 1}")


def _check_record(record: AnyRecord, index: int, bundle: Bundle) -> None:
    head = record.header
    if head.fingerprint != bundle.fingerprint:
        raise ModelMismatchError(
            f"record {index} was coded with model {head.fingerprint.hex()}, "
            f"but the bundle at hand is {bundle.fingerprint.hex()}"
        )
    full = isinstance(record, FullImageRecord)
    # A full-resolution image's coding is the writer's choice among the exact ones.
    allowed = FULL_CODINGS if full and bundle.exact else {coding_of(bundle)}
    if head.coding not in allowed:
        raise ModelMismatchError(
            f"record {index} says coding {head.coding}, but bundle "
            f"{bundle.fingerprint.hex()} is {bundle.profile}"
        )
    if full:
        if not bundle.exact:
            raise InvalidFieldError(
                f"record {index} is a full-resolution image, which only exact bundles code"
            )
        if head.grid != grid_of(bundle.n_positions):
            raise InvalidFieldError(
                f"record {index} was cut into {head.grid}-wide windows; the model's are "
                f"{grid_of(bundle.n_positions)}"
            )
        return
    if head.side > MAX_SIDE or head.token_count > bundle.n_positions:
        raise InvalidFieldError(
            f"record {index} has side {head.side}; the model has only "
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
        keys = [
            ("full", i) if isinstance(record, FullImageRecord) else record.header.side
            for i, record in enumerate(chunk)
        ]
        for batch in plan_batches(keys, max_batch):
            yield [start + i for i in batch], [chunk[i] for i in batch]
        start += len(chunk)


def _header(bundle: Bundle, image: TokenImage) -> RecordHeader:
    return RecordHeader(
        fingerprint=bundle.fingerprint,
        width=image.width,
        height=image.height,
        mode=image.mode,
        side=image.side,
        token_count=image.side**2,
        coding=coding_of(bundle),
    )


def _code_row(encoder: RangeEncoder, cum: np.ndarray, tokens: np.ndarray) -> float:
    """Code tokens[t] under the table cum[t] for every t; returns the ideal bits."""
    for table, symbol in zip(cum, tokens.tolist(), strict=True):
        encoder.encode_symbol(table, symbol)
    chosen = cum[np.arange(len(tokens)), tokens + 1] - cum[np.arange(len(tokens)), tokens]
    return float(-np.log2(chosen / cum[:, -1].astype(np.float64)).sum())


def _encode_exact(
    model: ExactTokenModel, bundle: Bundle, image: TokenImage, counter: _Counter
) -> EncodedImage:
    """One image from one whole-sequence call: SOS + all tokens but the last."""
    tokens = image.tokens.astype(np.int64)
    ids = np.concatenate([[SOS], tokens[:-1]])[None, :]
    pos = positions(image.side, bundle.position_layout, bundle.n_positions)[None, :]
    freqs, _ = model.run(ids, pos, model.start(1), keep_cache=False)
    encoder = RangeEncoder()
    ideal = _code_row(encoder, cumulative(freqs[0]), tokens)
    counter.advance(tokens.size)
    payload, _ = encoder.finish()
    header = _header(bundle, image)
    record = Record(header, payload, token_check(tokens, header), image.name)
    return EncodedImage(record, ideal)


def full_workers(threads: int | None) -> int:
    """Worker threads for a full-resolution image: `threads`, or one per CPU. Each runs the
    model with one onnxruntime thread (independent segments beat intra-op threads on these
    small matrices: docs/full-resolution.md)."""
    return threads if threads is not None else max(1, os.cpu_count() or 1)


def _full_model(bundle: Bundle, threads: int | None, cache: dict) -> ExactTokenModel:
    """One single-threaded session shared by the worker threads (onnxruntime's run is
    thread-safe and releases the GIL)."""
    if "full" not in cache:
        cache["full"] = ExactTokenModel(bundle, threads=1)
    return cache["full"]


def _encode_full(
    model: ExactTokenModel, bundle: Bundle, image: FullImage, counter: _Counter, workers: int
) -> EncodedImage:
    header = make_header(image, bundle.fingerprint, grid_of(bundle.n_positions), CODING_ADAPTIVE)
    start = counter.done
    record, ideal = encode_full(
        model,
        image,
        header,
        progress=lambda done, _total: counter.advance_to(start + done),
        workers=workers,
    )
    return EncodedImage(record, ideal)


def _decode_full(
    model: ExactTokenModel, index: int, record: FullImageRecord, counter: _Counter, workers: int
) -> FullImage:
    start = counter.done
    return decode_full(
        model,
        record,
        index,
        progress=lambda done, _total: counter.advance_to(start + done),
        workers=workers,
    )


def _encode_float(
    model: TokenModel, bundle: Bundle, members: list[TokenImage], counter: _Counter
) -> list[EncodedImage]:
    """Float profile: token by token (its whole-sequence floats differ in the last bits)."""
    rows, steps = len(members), members[0].side ** 2
    tokens = np.stack([member.tokens.astype(np.int64) for member in members])
    tables = np.zeros((rows, steps, PALETTE_SIZE + 1), np.int64)
    state = model.start(rows)
    feed = np.full(rows, SOS, dtype=np.int64)
    for t in range(steps):
        probs, state = model.step(feed, state)
        tables[:, t] = cumulative(quantize_probs(probs, FREQ_BITS))
        feed = tokens[:, t]
        counter.advance(rows)
    encoded = []
    for member, row_tokens, cum in zip(members, tokens, tables, strict=True):
        encoder = RangeEncoder()
        ideal = _code_row(encoder, cum, row_tokens)
        payload, _ = encoder.finish()
        header = _header(bundle, member)
        record = Record(header, payload, token_check(row_tokens, header), member.name)
        encoded.append(EncodedImage(record, ideal))
    return encoded


def _decode_batch(
    model: ExactTokenModel | TokenModel,
    bundle: Bundle,
    indices: list[int],
    batch: list[Record],
    counter: _Counter,
) -> list[TokenImage]:
    """Token by token with the KV cache; every row also re-encodes what it decodes."""
    head = batch[0].header
    rows, steps = len(batch), head.token_count
    decoders = [RangeDecoder(record.payload) for record in batch]
    shadows = [RangeEncoder() for _ in batch]
    tokens = np.zeros((rows, steps), dtype=np.int64)
    pos = positions(head.side, bundle.position_layout, bundle.n_positions)
    state = model.start(rows)
    stepper = model.stepper(state) if bundle.exact else None
    feed = np.full((rows, 1), SOS, dtype=np.int64)
    for t in range(steps):
        if stepper is not None:
            cum = cumulative(stepper.step(feed[:, 0], int(pos[t])))
        else:
            probs, state = model.step(feed[:, 0], state)
            cum = cumulative(quantize_probs(probs, FREQ_BITS))
        for row in range(rows):
            symbol = decoders[row].decode_symbol(cum[row])
            shadows[row].encode_symbol(cum[row], symbol)
            tokens[row, t] = symbol
        feed = tokens[:, t : t + 1]
        counter.advance(rows)
    decoded = []
    for index, record, row_tokens, shadow in zip(indices, batch, tokens, shadows, strict=True):
        if shadow.finish()[0] != record.payload:
            raise PayloadError(
                f"record {index}: the payload is not the encoder's canonical output for the "
                "tokens it decodes to (bytes changed or appended)"
            )
        if token_check(row_tokens, record.header) != record.token_check:
            raise TokenChecksumError(
                f"record {index}: the decoded tokens fail the record's token check: the "
                "record is damaged, or the model computes other numbers than the encoder's"
            )
        h = record.header
        tokens_u16 = row_tokens.astype(np.uint16)
        decoded.append(TokenImage(tokens_u16, h.side, h.width, h.height, h.mode, record.name))
    return decoded
