"""Tokens <-> records: the model step loop that drives the range coder both ways.

Encoder and decoder share one loop (`_run_batch`): step t feeds token t-1 (SOS
at t = 0), the model returns float32 probabilities for token t, and
`quantize_probs` turns them into the integer table both sides code with. The
decoder recomputes every table from the tokens it has decoded so far; nothing
but the coded bits is stored.

Batching: images of the same side are run together, because a batch of B costs
far less than B single runs. fp32 bundles are batch-invariant (FINDINGS.md), so
the decoder may group records differently from the encoder. Bundles that are
not (int8 dynamic quantization) are coded one image per batch, and the decoder
reproduces whatever grouping the headers record.

The model's ideal bits (-log2 of each coded token's float probability, in
float64) are summed for reporting only; they never reach the coder.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import islice
from typing import TYPE_CHECKING, TypeVar

import numpy as np

from codec.coder import RangeDecoder, RangeEncoder
from codec.freq import FREQ_BITS, cumulative, quantize_probs
from codec.model import SOS, TokenModel
from codec.palette import MAX_SIDE, PALETTE_SIZE
from format.container import token_crc
from format.errors import InvalidFieldError, ModelMismatchError, TokenChecksumError
from format.records import Record, RecordHeader

if TYPE_CHECKING:
    from codec.bundle import Bundle

MAX_BATCH = 16
"""Largest model batch. On iGPT-S the cost per image stops falling near batch 8, where the
KV-cache copies make each step bandwidth-bound (FINDINGS.md); more only adds memory."""

DECODE_WINDOW = 4 * MAX_BATCH
"""Records a streaming decoder reads ahead to form batches; bounds memory and latency."""

Progress = Callable[[int, int | None], None]
"""progress(tokens_done, tokens_total or None when the total is not known yet)."""

_T = TypeVar("_T")

_MIN_PROB = np.float64(2.0**-149)
"""Smallest float32 subnormal: an underflowed probability still reports finite bits."""


@dataclass(frozen=True)
class TokenImage:
    """One image as palette tokens, with the geometry the container records."""

    tokens: np.ndarray
    side: int
    width: int
    height: int
    mode: str


@dataclass(frozen=True)
class EncodedImage:
    """A coded record and the model's ideal cost of its tokens, in bits (reporting only)."""

    record: Record
    ideal_bits: float


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
    images: Sequence[TokenImage],
    bundle: Bundle,
    *,
    threads: int | None = None,
    max_batch: int = MAX_BATCH,
    freq_bits: int = FREQ_BITS,
    progress: Progress | None = None,
) -> Iterator[EncodedImage]:
    """Code each image into a record; yields in input order as soon as a prefix is done."""
    for image in images:
        _check_tokens(image, bundle)
    if not bundle.batch_invariant:
        max_batch = 1
    counter = _Counter(sum(image.side**2 for image in images), progress)
    model = TokenModel(bundle, threads=threads)

    def run() -> Iterator[tuple[int, EncodedImage]]:
        for batch in plan_batches([image.side for image in images], max_batch):
            members = [images[i] for i in batch]
            encoded = _encode_batch(model, bundle, members, freq_bits, counter)
            yield from zip(batch, encoded, strict=True)

    return _in_order(run())


def decode(
    records: Iterable[Record],
    bundle: Bundle,
    *,
    threads: int | None = None,
    max_batch: int = MAX_BATCH,
    progress: Progress | None = None,
) -> Iterator[TokenImage]:
    """Decode records in order, checking fingerprints first and token CRCs after.

    A sequence is checked whole before any model work and batched as a whole; a
    lazy iterable (a pipe) is read DECODE_WINDOW records at a time.
    """
    total = None
    window = DECODE_WINDOW
    if isinstance(records, Sequence):
        for index, record in enumerate(records):
            _check_record(record, index, bundle)
        total = sum(record.header.token_count for record in records)
        window = max(1, len(records))
    counter = _Counter(total, progress)
    batches = (
        _window_batches(records, max_batch, window)
        if bundle.batch_invariant
        else _recorded_batches(records)
    )
    models: list[TokenModel] = []

    def run() -> Iterator[tuple[int, TokenImage]]:
        for indices, batch in batches:
            for index, record in zip(indices, batch, strict=True):
                _check_record(record, index, bundle)
            if not models:
                models.append(TokenModel(bundle, threads=threads))
            decoded = _decode_batch(models[0], indices, batch, counter)
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
        self.done += n
        if self._progress is not None:
            self._progress(self.done, self.total)


def _check_tokens(image: TokenImage, bundle: Bundle) -> None:
    check_side(image.side, bundle)
    tokens = image.tokens
    if tokens.shape != (image.side**2,) or not np.issubdtype(tokens.dtype, np.integer):
        raise ValueError(
            f"expected {image.side**2} integer tokens, got {tokens.dtype} {tokens.shape}"
        )
    if tokens.size and not 0 <= int(tokens.min()) <= int(tokens.max()) < PALETTE_SIZE:
        raise ValueError(f"tokens must be 0..{PALETTE_SIZE - 1}")


def _check_record(record: Record, index: int, bundle: Bundle) -> None:
    head = record.header
    if head.fingerprint != bundle.fingerprint:
        raise ModelMismatchError(
            f"record {index} was coded with model {head.fingerprint.hex()}, "
            f"but the bundle at hand is {bundle.fingerprint.hex()}"
        )
    if head.token_count > bundle.n_positions:
        raise InvalidFieldError(
            f"record {index} has {head.token_count} tokens; the model has only "
            f"{bundle.n_positions} positions"
        )


def _window_batches(
    records: Iterable[Record], max_batch: int, window: int
) -> Iterator[tuple[list[int], list[Record]]]:
    """Batches of same-side, same-scale records, never spanning a window of the stream."""
    iterator = iter(records)
    start = 0
    while chunk := list(islice(iterator, window)):
        keys = [(record.header.side, record.header.freq_bits) for record in chunk]
        for batch in plan_batches(keys, max_batch):
            yield [start + i for i in batch], [chunk[i] for i in batch]
        start += len(chunk)


def _recorded_batches(records: Iterable[Record]) -> Iterator[tuple[list[int], list[Record]]]:
    """The encoder's own grouping, from each header's batch size and index.

    Needed where the floats depend on the batch (not batch-invariant bundles):
    only the very same rows in the very same order reproduce the tables.
    """
    indices: list[int] = []
    batch: list[Record] = []
    for index, record in enumerate(records):
        head = record.header
        if batch:
            first = batch[0].header
            if (head.batch_index, head.batch_size, head.side, head.freq_bits) != (
                len(batch),
                first.batch_size,
                first.side,
                first.freq_bits,
            ):
                raise InvalidFieldError(
                    f"record {index} breaks the batch of {first.batch_size} that record "
                    f"{indices[0]} starts; this model must decode batches exactly as coded"
                )
        elif head.batch_index != 0:
            raise InvalidFieldError(
                f"record {index} is row {head.batch_index} of a batch whose first rows are missing"
            )
        indices.append(index)
        batch.append(record)
        if len(batch) == head.batch_size:
            yield indices, batch
            indices, batch = [], []
    if batch:
        raise InvalidFieldError(
            f"the stream ends inside the batch of {batch[0].header.batch_size} "
            f"that record {indices[0]} starts"
        )


def _run_batch(
    model: TokenModel,
    rows: int,
    steps: int,
    freq_bits: int,
    choose: Callable[[int, np.ndarray, np.ndarray], np.ndarray],
    counter: _Counter,
) -> None:
    """The shared step loop; `choose(t, probs, cum)` codes or decodes token t of every row.

    Step t feeds token t-1 (SOS first) and gets the distribution of token t, so
    side^2 steps cover side^2 tokens and the last token is never fed.
    """
    state = model.start(rows)
    feed = np.full(rows, SOS, dtype=np.int64)
    for t in range(steps):
        probs, state = model.step(feed, state)
        if probs.shape != (rows, PALETTE_SIZE):
            raise AssertionError(f"model returned {probs.shape}, expected ({rows}, 512)")
        cum = cumulative(quantize_probs(probs, freq_bits))
        feed = choose(t, probs, cum)
        counter.advance(rows)


def _encode_batch(
    model: TokenModel,
    bundle: Bundle,
    members: list[TokenImage],
    freq_bits: int,
    counter: _Counter,
) -> list[EncodedImage]:
    rows = len(members)
    side = members[0].side
    tokens = np.stack([member.tokens.astype(np.int64) for member in members])
    encoders = [RangeEncoder() for _ in members]
    ideal = np.zeros(rows, dtype=np.float64)
    row_index = np.arange(rows)

    def code(t: int, probs: np.ndarray, cum: np.ndarray) -> np.ndarray:
        column = tokens[:, t]
        for encoder, table, symbol in zip(encoders, cum, column.tolist(), strict=True):
            encoder.encode_symbol(table, symbol)
        chosen = probs[row_index, column].astype(np.float64)
        ideal[:] -= np.log2(np.maximum(chosen, _MIN_PROB))
        return column

    _run_batch(model, rows, side * side, freq_bits, code, counter)
    encoded = []
    for row, (member, encoder) in enumerate(zip(members, encoders, strict=True)):
        payload, padding_bits = encoder.finish()
        header = RecordHeader(
            fingerprint=bundle.fingerprint,
            width=member.width,
            height=member.height,
            mode=member.mode,
            side=side,
            token_count=side * side,
            freq_bits=freq_bits,
            batch_size=rows,
            batch_index=row,
        )
        record = Record(header, payload, padding_bits, token_crc(member.tokens))
        encoded.append(EncodedImage(record, float(ideal[row])))
    return encoded


def _decode_batch(
    model: TokenModel, indices: list[int], batch: list[Record], counter: _Counter
) -> list[TokenImage]:
    head = batch[0].header
    rows = len(batch)
    decoders = [RangeDecoder(record.payload, record.padding_bits) for record in batch]
    tokens = np.zeros((rows, head.token_count), dtype=np.int64)

    def code(t: int, probs: np.ndarray, cum: np.ndarray) -> np.ndarray:
        for row, (decoder, table) in enumerate(zip(decoders, cum, strict=True)):
            tokens[row, t] = decoder.decode_symbol(table)
        return tokens[:, t]

    _run_batch(model, rows, head.token_count, head.freq_bits, code, counter)
    decoded = []
    for index, record, row_tokens in zip(indices, batch, tokens, strict=True):
        if token_crc(row_tokens) != record.token_crc:
            raise TokenChecksumError(
                f"record {index}: decoded tokens do not match the encoder's; the model "
                f"computed different numbers here (other CPU/onnxruntime?)"
            )
        h = record.header
        decoded.append(TokenImage(row_tokens.astype(np.uint16), h.side, h.width, h.height, h.mode))
    return decoded
