"""Thumbnail records (kind 1) <-> tokens: the model drives the range coder both ways.

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

from typing import TYPE_CHECKING

import numpy as np

from igpt_codec.core.coder import RangeDecoder, RangeEncoder
from igpt_codec.core.freq import FREQ_BITS, cumulative, quantize_probs
from igpt_codec.core.palette import MAX_SIDE, PALETTE_SIZE
from igpt_codec.format.container import token_check
from igpt_codec.format.errors import PayloadError, TokenChecksumError
from igpt_codec.format.records import CODING_EXACT, CODING_FLOAT32, Record, RecordHeader
from igpt_codec.pipelines.types import EncodedImage, TokenCounter, TokenImage
from igpt_codec.runtime.contract import SOS
from igpt_codec.runtime.exact_runner import ExactTokenModel
from igpt_codec.runtime.float_runner import TokenModel
from igpt_codec.runtime.positions import positions

if TYPE_CHECKING:
    from igpt_codec.runtime.bundle import Bundle


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


def check_tokens(image: TokenImage, bundle: Bundle) -> None:
    """A thumbnail the encoder can code: a valid side and side^2 palette tokens."""
    check_side(image.side, bundle)
    tokens = image.tokens
    if tokens.shape != (image.side**2,) or not np.issubdtype(tokens.dtype, np.integer):
        raise ValueError(
            f"expected {image.side**2} integer tokens, got {tokens.dtype} {tokens.shape}"
        )
    if tokens.size and not 0 <= int(tokens.min()) <= int(tokens.max()) < PALETTE_SIZE:
        raise ValueError(f"tokens must be 0..{PALETTE_SIZE - 1}")


def record_header(bundle: Bundle, image: TokenImage) -> RecordHeader:
    return RecordHeader(
        fingerprint=bundle.fingerprint,
        width=image.width,
        height=image.height,
        mode=image.mode,
        side=image.side,
        token_count=image.side**2,
        coding=coding_of(bundle),
    )


def code_row(encoder: RangeEncoder, cum: np.ndarray, tokens: np.ndarray) -> float:
    """Code tokens[t] under the table cum[t] for every t; returns the ideal bits."""
    for table, symbol in zip(cum, tokens.tolist(), strict=True):
        encoder.encode_symbol(table, symbol)
    chosen = cum[np.arange(len(tokens)), tokens + 1] - cum[np.arange(len(tokens)), tokens]
    return float(-np.log2(chosen / cum[:, -1].astype(np.float64)).sum())


def encode_exact(
    model: ExactTokenModel, bundle: Bundle, image: TokenImage, counter: TokenCounter
) -> EncodedImage:
    """One image from one whole-sequence call: SOS + all tokens but the last."""
    tokens = image.tokens.astype(np.int64)
    ids = np.concatenate([[SOS], tokens[:-1]])[None, :]
    pos = positions(image.side, bundle.position_layout, bundle.n_positions)[None, :]
    freqs, _ = model.run(ids, pos, model.start(1), keep_cache=False)
    encoder = RangeEncoder()
    ideal = code_row(encoder, cumulative(freqs[0]), tokens)
    counter.advance(tokens.size)
    payload, _ = encoder.finish()
    header = record_header(bundle, image)
    record = Record(header, payload, token_check(tokens, header), image.name)
    return EncodedImage(record, ideal)


def encode_float(
    model: TokenModel, bundle: Bundle, members: list[TokenImage], counter: TokenCounter
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
        ideal = code_row(encoder, cum, row_tokens)
        payload, _ = encoder.finish()
        header = record_header(bundle, member)
        record = Record(header, payload, token_check(row_tokens, header), member.name)
        encoded.append(EncodedImage(record, ideal))
    return encoded


def decode_batch(
    model: ExactTokenModel | TokenModel,
    bundle: Bundle,
    indices: list[int],
    batch: list[Record],
    counter: TokenCounter,
) -> list[TokenImage]:
    """Token by token with the KV cache; every row also re-encodes what it decodes."""
    head = batch[0].header
    rows, steps = len(batch), head.token_count
    decoders = [RangeDecoder(record.payload) for record in batch]
    shadows = [RangeEncoder() for _ in batch]
    tokens = np.zeros((rows, steps), dtype=np.int64)
    pos = positions(head.side, bundle.position_layout, bundle.n_positions)
    state = model.start(rows)
    stepper = model.stepper(state) if bundle.exact else None  # type: ignore[union-attr]
    feed = np.full((rows, 1), SOS, dtype=np.int64)
    # One cumulative table, refilled every step: both profiles' tables are integers
    # summing below 2^32, so int64 prefix sums are exact.
    cum = np.zeros((rows, PALETTE_SIZE + 1), np.int64)
    coders = list(zip(decoders, shadows, cum, strict=True))
    for t in range(steps):
        if stepper is not None:
            table = stepper.step(feed[:, 0], int(pos[t]))
        else:
            probs, state = model.step(feed[:, 0], state)
            table = quantize_probs(probs, FREQ_BITS)
        np.cumsum(table, 1, np.int64, cum[:, 1:])
        column = tokens[:, t]
        for row, (decoder, shadow, table) in enumerate(coders):
            column[row] = decoder.decode_symbol_into(table, shadow)
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
