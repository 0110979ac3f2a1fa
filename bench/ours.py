"""Our codec on the benchmark thumbnails, through the public API as a user calls it.

Each image is compressed alone (a whole stream: file header, one record, end
marker), and all of them once more into a single stream, which is then decoded
and checked token for token. The shared stream gives the marginal cost of one
more image (its record alone); the single-image streams give what a user pays
for one file. An exact bundle must give byte-identical payloads alone and in
the stream (its tables do not depend on batching); a float bundle is checked too,
where a difference means batching changed the model's floats on this machine. A
last model pass (bench.ideal) splits the payload's distance from the model's ideal
into frequency quantization (float bundles only) and range coding.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bench.data import Thumbnail
from bench.ideal import ideal_bits
from bench.timing import timed
from igpt_codec import api
from igpt_codec.format.container import pack_stream, unpack_stream
from igpt_codec.format.records import Record
from igpt_codec.pipelines.stream import MAX_BATCH
from igpt_codec.runtime.bundle import Bundle


@dataclass
class OursResult:
    """Per-image costs and the shared-stream run, ready for results.json."""

    per_image: list[dict[str, Any]]
    shared_stream: dict[str, Any]
    notes: list[str] = field(default_factory=list)


def record_cost(record: Record) -> int:
    """Bytes one more record adds to a stream: the frame around and including its payload.

    Measured with the container writer itself (a stream of the record twice minus
    a stream of it once), so it stays right if the layout changes.
    """
    return len(pack_stream([record, record])) - len(pack_stream([record]))


def compress_alone(
    thumbnail: Thumbnail, bundle: Bundle, size: int, threads: int
) -> tuple[dict[str, Any], Record]:
    buffer = io.BytesIO()
    images = [thumbnail.loaded]
    summary, seconds = timed(
        lambda: api.compress_to(buffer, images, model=bundle, size=size, threads=threads)
    )
    (record,) = unpack_stream(buffer.getvalue())
    row = {
        "name": thumbnail.name,
        "tokens": summary.tokens,
        "alone_stream_bytes": summary.stream_bytes,
        "payload_bytes": summary.payload_bytes,
        "ideal_bits": summary.ideal_bits,
        "alone_encode_seconds": seconds,
    }
    return row, record


LOG_EVERY = 10
Log = Callable[[str], None]


def compress_each(
    thumbnails: list[Thumbnail], bundle: Bundle, size: int, threads: int, log: Log | None
) -> tuple[list[dict[str, Any]], list[Record]]:
    rows, records = [], []
    for done, thumbnail in enumerate(thumbnails, 1):
        row, record = compress_alone(thumbnail, bundle, size, threads)
        rows.append(row)
        records.append(record)
        if log is not None and (done % LOG_EVERY == 0 or done == len(thumbnails)):
            log(f"  compressed alone {done}/{len(thumbnails)}")
    return rows, records


def shared_stream(
    thumbnails: list[Thumbnail], bundle: Bundle, size: int, threads: int
) -> tuple[dict[str, Any], list[Record]]:
    """All images in one stream through the API, decoded again and compared."""
    buffer = io.BytesIO()
    loaded = [t.loaded for t in thumbnails]
    summary, encode_seconds = timed(
        lambda: api.compress_to(buffer, loaded, model=bundle, size=size, threads=threads)
    )
    stream = buffer.getvalue()
    records = unpack_stream(stream)
    decoded, decode_seconds = timed(lambda: api.decompress(stream, model=bundle, threads=threads))
    lossless = all(
        np.array_equal(item.tokens, t.tokens.tokens)
        for item, t in zip(decoded, thumbnails, strict=True)
    )
    result = {
        "images": len(records),
        "tokens": summary.tokens,
        "stream_bytes": len(stream),
        "payload_bytes": summary.payload_bytes,
        "ideal_bits": summary.ideal_bits,
        "profile": bundle.profile,
        "encode_batch": 1 if bundle.exact else min(MAX_BATCH, len(records)),
        "decode_batch": min(MAX_BATCH, len(records)),
        "threads": threads,
        "encode_seconds": encode_seconds,
        "decode_seconds": decode_seconds,
        "encode_tokens_per_s": summary.tokens / encode_seconds,
        "decode_tokens_per_s": summary.tokens / decode_seconds,
        "decoded_losslessly": lossless,
    }
    return result, records


def run_ours(
    thumbnails: list[Thumbnail], bundle: Bundle, size: int, threads: int, log: Log | None = None
) -> OursResult:
    """Alone streams, the shared stream (timed, decoded, verified), then the ideal pass."""
    rows, alone_records = compress_each(thumbnails, bundle, size, threads, log)
    shared, records = shared_stream(thumbnails, bundle, size, threads)
    ideals, shared["ideal_pass_seconds"] = timed(
        lambda: ideal_bits([t.tokens for t in thumbnails], bundle, threads)
    )
    notes = [] if shared["decoded_losslessly"] else ["the shared stream did NOT decode losslessly"]
    same_payloads = 0
    for row, alone, record, ideal in zip(rows, alone_records, records, ideals, strict=True):
        row["record_bytes"] = record_cost(record)
        row["payload_identical_alone_vs_shared"] = alone.payload == record.payload
        row["table_ideal_bits"] = ideal.table_bits
        row["float_ideal_bits_rerun"] = ideal.float_bits
        same_payloads += alone.payload == record.payload
    shared["payloads_identical_alone_vs_shared"] = same_payloads
    if same_payloads != len(rows):
        why = (
            "an exact bundle's tables must not depend on batching"
            if bundle.exact
            else ("the float profile's batched floats differ on this machine")
        )
        notes.append(
            f"only {same_payloads} of {len(rows)} payloads are identical alone and batched ({why})"
        )
    drift = max(abs(r["float_ideal_bits_rerun"] - r["ideal_bits"]) for r in rows)
    if drift > 1e-6 * max(r["ideal_bits"] for r in rows):
        notes.append(f"the ideal-bits rerun differs from the encoder's by up to {drift:.3g} bits")
    return OursResult(rows, shared, notes)
