"""Sharded datasets: many images in a few ordinary streams, and an index to find each one.

A dataset directory holds

    shards/NAME.igpt   ordinary format-2 streams, one kind-1 record per image, no names
    index.jsonl        one JSON object per image: key -> shard, offset, length, prev_crc, ...
    dataset.json       what was written (counts, size, model, skipped inputs)

Keys (the path relative to the input root, or an id column) live in the index only,
never in a shard: a shard stays a plain stream any `decompress` reads, and a key is
free text of up to 4,096 UTF-8 bytes. The index itself (IndexEntry, its reader and
writer) is `datasets.index`; this module re-exports its names. Every shard is the
encoding of one batch of input, named by a hash of its keys, side and model, and
written to a temporary file that is renamed into place: a batch coded twice (a retried
worker) gives the same name and the same bytes, so retries neither duplicate nor lose
records. The index is assembled from what the
workers return, never from the files found on disk.

Random access (`read_record`): an index entry gives the record's byte offset and length
in its shard and `prev_crc`, the chained CRC of the record before it (format/SPEC.md,
"Random access (index)"), so one record is read and checked alone, exactly as a
front-to-back reader would check it, and decoded with the model its fingerprint names.

The index is JSON Lines: single-machine random access needs nothing beyond the standard
library (the codec's run time has no pyarrow), a line is a record (appendable, greppable,
diffable), and Ray Data, pandas, pyarrow and DuckDB all read JSON Lines natively. The
Ray runner (`datasets.runner`) writes the same table as `index.parquet` too, for cluster jobs
that join or filter it; `iter_index` reads either.

Shards are opened as regular files without following links (`datasets.files`), and
an index that does not describe the shard it names (another dataset's index, a file
that is not a shard) is an IndexMismatchError whose message quotes nothing read from
the file.

No Ray here: this module is the codec and format logic, usable on one machine.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from igpt_codec.datasets.files import DatasetFileError, make_dirs_under, open_regular, write_atomic
from igpt_codec.datasets.index import (
    DATASET_FORMAT,
    INDEX_JSONL,
    INDEX_PARQUET,
    MANIFEST,
    SHARD_SUFFIX,
    SHARDS_DIR,
    IndexEntry,
    KeyNotFoundError,
    ShardIndexError,
    check_shard_name,
    find_entry,
    index_path,
    iter_index,
    load_index,
    shard_path,
    show_key,
    write_index_jsonl,
)
from igpt_codec.format.access import (
    MAX_RECORD_SPAN,
    MIN_RECORD_SPAN,
    iter_record_spans,
    parse_record_frame,
)
from igpt_codec.format.container import StreamWriter
from igpt_codec.format.errors import (
    BadMagicError,
    ChecksumError,
    FormatError,
    LengthOutOfRangeError,
    TruncatedError,
    UnsupportedVersionError,
)
from igpt_codec.format.records import Record

if TYPE_CHECKING:
    from igpt_codec.api import DecodedImage, ModelSpec
    from igpt_codec.pipelines.stream import TokenImage
    from igpt_codec.runtime.bundle import Bundle

__all__ = [
    "DATASET_FORMAT",
    "INDEX_JSONL",
    "INDEX_PARQUET",
    "MANIFEST",
    "SHARDS_DIR",
    "SHARD_SUFFIX",
    "IndexEntry",
    "IndexMismatchError",
    "KeyNotFoundError",
    "Shard",
    "ShardIndexError",
    "check_shard_name",
    "decode_entry",
    "decode_shard",
    "encode_shard",
    "find_entry",
    "get_image",
    "index_path",
    "iter_index",
    "load_index",
    "load_record",
    "read_record",
    "shard_name",
    "shard_path",
    "write_atomic",
    "write_index_jsonl",
    "write_shard",
]


class IndexMismatchError(ShardIndexError):
    """The bytes an index entry points at are not its record: another dataset's index, a
    damaged shard, or a file that is not a shard. The message says so without quoting
    anything read from the file (no stored CRC, no bytes)."""


_WHY = (
    (ChecksumError, "CRC mismatch"),
    (TruncatedError, "cut short"),
    (LengthOutOfRangeError, "its frame has another length"),
    (BadMagicError, "not an igpt stream"),
    (UnsupportedVersionError, "not a format-2 stream"),
)


def _why(exc: FormatError) -> str:
    """A fixed phrase for a format error: the error's own message may quote the file."""
    for kind, phrase in _WHY:
        if isinstance(exc, kind):
            return phrase
    return "not a valid record"


@dataclass(frozen=True)
class Shard:
    """One coded shard in memory: its file name, its stream and an entry per record."""

    name: str
    data: bytes
    entries: list[IndexEntry]


def shard_name(keys: Sequence[str], side: int, fingerprint: bytes) -> str:
    """A shard's name from what determines its content: keys in order, side and model.

    The same batch coded again (a retried worker) gets the same name, so its file is
    replaced by identical bytes instead of a second copy being added.
    """
    digest = hashlib.sha256()
    digest.update(f"{DATASET_FORMAT}\0{side}\0{fingerprint.hex()}\0".encode())
    for key in keys:
        raw = key.encode("utf-8")
        digest.update(len(raw).to_bytes(4, "little") + raw)
    return digest.hexdigest()[:20] + SHARD_SUFFIX


def encode_shard(
    items: Sequence[tuple[str, TokenImage]], bundle: Bundle, *, threads: int | None = 1
) -> Shard:
    """Code keyed token images into one stream (input order) and index every record.

    The records are plain kind-1 thumbnails without names (keys stay in the index). The
    finished stream is walked once with the container's reader to find each record's
    offset, length and prev_crc, which also proves it reads back. `threads`: onnxruntime
    intra-op threads (1: one core per worker, the Ray default). Raises ValueError for an
    empty batch or duplicated keys.
    """
    from igpt_codec.pipelines.stream import encode

    if not items:
        raise ValueError("a shard needs at least one image")
    keys = [key for key, _ in items]
    if len(set(keys)) != len(keys):
        raise ValueError("a shard's keys must be distinct")
    images = [image for _, image in items]
    sides = {image.side for image in images}
    side = images[0].side if len(sides) == 1 else 0
    name = shard_name(keys, side, bundle.fingerprint)
    buffer = io.BytesIO()
    with StreamWriter(buffer) as writer:
        for encoded in encode(images, bundle, threads=threads):
            writer.write_record(encoded.record)
    data = buffer.getvalue()
    spans = [span for span in iter_record_spans(data) if span.record is not None]
    if len(spans) != len(keys):  # a bug, not bad input: every image is one record
        raise AssertionError(f"shard {name}: {len(spans)} records for {len(keys)} images")
    entries = []
    for key, span in zip(keys, spans, strict=True):
        head = span.record.header  # type: ignore[union-attr]
        entries.append(
            IndexEntry(
                key=key,
                shard=name,
                record=span.index,
                offset=span.offset,
                length=span.length,
                prev_crc=span.prev_crc,
                side=head.side,
                fingerprint=head.fingerprint.hex(),
                width=head.width,
                height=head.height,
                mode=head.mode,
            )
        )
    return Shard(name, data, entries)


def write_shard(root: str | os.PathLike[str], shard: Shard) -> Path:
    """Write a shard into ROOT/shards/ atomically; returns its path. ROOT must exist: a
    job's worker must not recreate a staging directory the driver removed."""
    directory = make_dirs_under(root, SHARDS_DIR)
    path = directory / check_shard_name(shard.name)
    write_atomic(path, shard.data)
    return path


# --- random access ---------------------------------------------------------------------------


def read_record(fileobj: BinaryIO, entry: IndexEntry) -> Record:
    """The entry's record from a binary file open on its shard: one seek, then exactly
    `entry.length` bytes (at most MAX_RECORD_SPAN, checked before reading), checked alone
    (record CRC chained from `entry.prev_crc`).

    Raises IndexMismatchError when the bytes are not that record (wrong offset, shard,
    prev_crc, another dataset's index, a damaged shard), without quoting what was read;
    ShardIndexError when the record disagrees with the entry's side or size.
    """
    if not MIN_RECORD_SPAN <= entry.length <= MAX_RECORD_SPAN:  # IndexEntry checks it; be sure
        raise ShardIndexError(f"index entry {show_key(entry.key)}: length out of range")
    where = (
        f"{entry.shard}: the index does not match the shard: no record of "
        f"{show_key(entry.key)} at offset {entry.offset} ({entry.length} bytes)"
    )
    fileobj.seek(entry.offset)
    parts = []
    got = 0
    while got < entry.length:
        chunk = fileobj.read(entry.length - got)
        if not chunk:
            break
        parts.append(chunk)
        got += len(chunk)
    data = b"".join(parts)
    if len(data) < entry.length:
        raise IndexMismatchError(f"{where}: the shard ends first")
    try:
        record, _ = parse_record_frame(
            data, fingerprint=entry.fingerprint_bytes, prev_crc=entry.prev_crc, offset=entry.offset
        )
    except FormatError as exc:
        raise IndexMismatchError(f"{where}: {_why(exc)}") from None
    head = record.header
    if (head.side, head.width, head.height, head.mode) != (
        entry.side,
        entry.width,
        entry.height,
        entry.mode,
    ):
        raise ShardIndexError(
            f"{entry.shard}: the record of {show_key(entry.key)} is {head.side}x{head.side} "
            f"of a {head.width}x{head.height} {head.mode} image; the index says {entry.side}x"
            f"{entry.side} of {entry.width}x{entry.height} {entry.mode}"
        )
    return record


def _open_shard(root: str | os.PathLike[str], entry: IndexEntry) -> tuple[BinaryIO, int]:
    """The entry's shard as a regular file, links refused (`files.open_regular`)."""
    try:
        return open_regular(shard_path(root, entry), "shard")
    except DatasetFileError as exc:
        raise ShardIndexError(str(exc)) from None


def load_record(root: str | os.PathLike[str], entry: IndexEntry) -> Record:
    """The entry's record, read from ROOT/shards/SHARD with `read_record`."""
    handle, size = _open_shard(root, entry)
    with handle:
        if entry.offset + entry.length > size:
            raise IndexMismatchError(
                f"{entry.shard}: the index does not match the shard: the record of "
                f"{show_key(entry.key)} would end at byte {entry.offset + entry.length}, "
                f"the shard has {size}"
            )
        return read_record(handle, entry)


def decode_entry(
    root: str | os.PathLike[str],
    entry: IndexEntry,
    model: ModelSpec = None,
    threads: int | None = None,
) -> DecodedImage:
    """Decode one image by its index entry, reading only its record's bytes."""
    from igpt_codec.api import decode_records

    (image,) = decode_records([load_record(root, entry)], model=model, threads=threads)
    return image


def get_image(
    root: str | os.PathLike[str], key: str, model: ModelSpec = None, threads: int | None = None
) -> DecodedImage:
    """Decode the image stored under `key` (index lookup, then one record)."""
    return decode_entry(root, find_entry(root, key), model=model, threads=threads)


# --- whole shards ----------------------------------------------------------------------------


def decode_shard(
    root: str | os.PathLike[str],
    entries: Sequence[IndexEntry],
    bundle: Bundle,
    *,
    threads: int | None = 1,
) -> list[tuple[IndexEntry, TokenImage]]:
    """Decode every record of one shard (read whole, every stream check) and pair each
    with its index entry; the shard's records and the entries must match one to one.

    Decoding a whole shard batches its records (up to 16 per model call), several times
    faster per token than decoding them one by one.
    """
    from igpt_codec.pipelines.stream import decode

    if not entries:
        return []
    names = {entry.shard for entry in entries}
    if len(names) != 1:
        raise ShardIndexError(f"decode_shard takes the entries of one shard, got {len(names)}")
    handle, size = _open_shard(root, entries[0])
    with handle:
        # A shard holds exactly its entries' records after a 12-byte file header: the
        # size is known before reading, so a large or foreign file is refused unread.
        expected = 12 + sum(entry.length for entry in entries)
        if size != expected:
            raise IndexMismatchError(
                f"{entries[0].shard}: the index does not match the shard: its {len(entries)} "
                f"records take {expected} bytes, the shard has {size}"
            )
        data = handle.read(expected + 1)
    try:
        spans = [span for span in iter_record_spans(data) if span.record is not None]
    except FormatError as exc:
        raise IndexMismatchError(
            f"{entries[0].shard}: the index does not match the shard: {_why(exc)}"
        ) from None
    by_offset = {entry.offset: entry for entry in entries}
    if len(by_offset) != len(entries) or sorted(by_offset) != [span.offset for span in spans]:
        raise IndexMismatchError(
            f"{entries[0].shard}: the index does not match the shard: it lists "
            f"{len(entries)} records, the shard holds {len(spans)} at other offsets"
        )
    ordered = [by_offset[span.offset] for span in spans]
    for entry, span in zip(ordered, spans, strict=True):
        if (entry.length, entry.prev_crc) != (span.length, span.prev_crc):
            raise IndexMismatchError(
                f"{entry.shard}: the index does not match the shard: the entry of "
                f"{show_key(entry.key)} differs from its record"
            )
    records = [span.record for span in spans]
    decoded = decode(records, bundle, threads=threads)  # type: ignore[arg-type]
    return list(zip(ordered, decoded, strict=True))
