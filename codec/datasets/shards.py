"""Sharded datasets: many images in a few ordinary streams, and an index to find each one.

A dataset directory holds

    shards/NAME.igpt   ordinary format-2 streams, one kind-1 record per image, no names
    index.jsonl        one JSON object per image: key -> shard, offset, length, prev_crc, ...
    dataset.json       what was written (counts, size, model, skipped inputs)

Keys (the path relative to the input root, or an id column) live in the index only,
never in a shard: a shard stays a plain stream any `decompress` reads, and a key is
free text of any length. Every shard is the encoding of one batch of input, named by a
hash of its keys, side and model, and written to a temporary file that is renamed into
place: a batch coded twice (a retried worker) gives the same name and the same bytes,
so retries neither duplicate nor lose records. The index is assembled from what the
workers return, never from the files found on disk.

Random access (`read_record`): an index entry gives the record's byte offset and length
in its shard and `prev_crc`, the chained CRC of the record before it (format/SPEC.md,
"Random access (index)"), so one record is read and checked alone, exactly as a
front-to-back reader would check it, and decoded with the model its fingerprint names.

The index is JSON Lines: single-machine random access needs nothing beyond the standard
library (the codec's run time has no pyarrow), a line is a record (appendable, greppable,
diffable), and Ray Data, pandas, pyarrow and DuckDB all read JSON Lines natively. The
Ray runner (`scale/`) writes the same table as `index.parquet` too, for cluster jobs
that join or filter it; `iter_index` reads either.

No Ray here: this module is the codec and format logic, usable on one machine.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from igpt_codec.format.access import header_crc, iter_record_spans, parse_record_frame
from igpt_codec.format.container import StreamWriter
from igpt_codec.format.errors import CodecError, FormatError, TruncatedError
from igpt_codec.format.records import Record

if TYPE_CHECKING:
    from igpt_codec.api import DecodedImage, ModelSpec
    from igpt_codec.pipelines.stream import TokenImage
    from igpt_codec.runtime.bundle import Bundle

SHARDS_DIR = "shards"
INDEX_JSONL = "index.jsonl"
INDEX_PARQUET = "index.parquet"
MANIFEST = "dataset.json"
SHARD_SUFFIX = ".igpt"
DATASET_FORMAT = "igpt-dataset-1"
"""The `format` field of dataset.json: the layout above, index fields as IndexEntry."""


class ShardIndexError(CodecError):
    """An index entry that is malformed, names no shard, or disagrees with its record."""


class KeyNotFoundError(CodecError):
    """The key is not in the dataset's index."""


@dataclass(frozen=True)
class IndexEntry:
    """Where one image lives: everything random access needs without reading the shard.

    `offset` and `length` span the record from its head byte through its CRC (the FINAL
    record has no length field in the stream; here it has one). `prev_crc` is the
    chained CRC of the record before it, `header_crc(fingerprint)` for a shard's first.
    `side`, `width`, `height` and `mode` repeat the record's header so a listing needs
    no shard; a record that disagrees with them is refused.
    """

    key: str
    shard: str
    record: int
    offset: int
    length: int
    prev_crc: int
    side: int
    fingerprint: str
    width: int
    height: int
    mode: str

    def __post_init__(self) -> None:
        for name in ("key", "shard", "fingerprint", "mode"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ShardIndexError(f"index entry: {name} must be a non-empty string")
        for name in ("record", "offset", "length", "prev_crc", "side", "width", "height"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ShardIndexError(f"index entry {self.key!r}: {name} must be an integer >= 0")
        if self.prev_crc > 0xFFFFFFFF:
            raise ShardIndexError(f"index entry {self.key!r}: prev_crc must be a u32")
        check_shard_name(self.shard)
        try:
            fingerprint = bytes.fromhex(self.fingerprint)
        except ValueError:
            fingerprint = b""
        if len(fingerprint) != 8:
            raise ShardIndexError(f"index entry {self.key!r}: fingerprint must be 16 hex digits")
        if self.record == 0 and (self.offset != 12 or self.prev_crc != header_crc(fingerprint)):
            raise ShardIndexError(
                f"index entry {self.key!r}: a shard's first record starts at offset 12 and "
                "chains from the CRC of its file header"
            )

    @property
    def fingerprint_bytes(self) -> bytes:
        return bytes.fromhex(self.fingerprint)

    def to_json(self) -> str:
        """One index line (no newline), fields in a fixed order."""
        return json.dumps(asdict(self), ensure_ascii=False, separators=(",", ":"))

    @classmethod
    def from_dict(cls, row: dict[str, Any]) -> IndexEntry:
        """An entry from a parsed index row; extra fields are ignored (newer writers)."""
        try:
            return cls(**{name: row[name] for name in cls.__dataclass_fields__})
        except KeyError as exc:
            raise ShardIndexError(f"index row lacks the field {exc.args[0]!r}") from None
        except TypeError as exc:
            raise ShardIndexError(f"index row is malformed: {exc}") from None


@dataclass(frozen=True)
class Shard:
    """One coded shard in memory: its file name, its stream and an entry per record."""

    name: str
    data: bytes
    entries: list[IndexEntry]


def check_shard_name(name: str) -> str:
    """A shard name is a plain file name ending in .igpt: an index cannot point outside
    the dataset's shards directory."""
    if (
        not isinstance(name, str)
        or not name.endswith(SHARD_SUFFIX)
        or len(name) <= len(SHARD_SUFFIX)
        or any(ch in name for ch in "/\\\0")
        or name.startswith(".")
    ):
        raise ShardIndexError(f"{name!r} is not a shard file name")
    return name


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


def write_atomic(path: Path, data: bytes) -> None:
    """Write `data` to `path` through a temporary file beside it and a rename, so a reader
    (or a worker killed halfway) never leaves or sees a partial file; rewriting the same
    bytes is harmless."""
    path = Path(path)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise


def write_shard(root: str | os.PathLike[str], shard: Shard) -> Path:
    """Write a shard into ROOT/shards/ atomically; returns its path."""
    directory = Path(root) / SHARDS_DIR
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / check_shard_name(shard.name)
    write_atomic(path, shard.data)
    return path


def shard_path(root: str | os.PathLike[str], entry: IndexEntry) -> Path:
    return Path(root) / SHARDS_DIR / check_shard_name(entry.shard)


# --- random access ---------------------------------------------------------------------------


def read_record(fileobj: BinaryIO, entry: IndexEntry) -> Record:
    """The entry's record from a binary file open on its shard: one seek, then exactly
    `entry.length` bytes, checked alone (record CRC chained from `entry.prev_crc`).

    Raises ChecksumError when the bytes are not that record (wrong offset, shard or
    prev_crc), TruncatedError when the shard is shorter, ShardIndexError when the record
    disagrees with the entry's side or size.
    """
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
        raise TruncatedError(
            f"{entry.shard}: the record of {entry.key!r} needs {entry.length} bytes at offset "
            f"{entry.offset}, {len(data)} remain"
        )
    try:
        record, _ = parse_record_frame(
            data, fingerprint=entry.fingerprint_bytes, prev_crc=entry.prev_crc, offset=entry.offset
        )
    except FormatError as exc:
        raise type(exc)(f"{entry.shard}, record of {entry.key!r}: {exc}") from None
    head = record.header
    if (head.side, head.width, head.height, head.mode) != (
        entry.side,
        entry.width,
        entry.height,
        entry.mode,
    ):
        raise ShardIndexError(
            f"{entry.shard}: the record of {entry.key!r} is {head.side}x{head.side} of a "
            f"{head.width}x{head.height} {head.mode} image; the index says {entry.side}x"
            f"{entry.side} of {entry.width}x{entry.height} {entry.mode}"
        )
    return record


def load_record(root: str | os.PathLike[str], entry: IndexEntry) -> Record:
    """The entry's record, read from ROOT/shards/SHARD with `read_record`."""
    with open(shard_path(root, entry), "rb") as handle:
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
    path = shard_path(root, entries[0])
    data = path.read_bytes()
    try:
        spans = [span for span in iter_record_spans(data) if span.record is not None]
    except FormatError as exc:
        raise type(exc)(f"{entries[0].shard}: {exc}") from None
    by_offset = {entry.offset: entry for entry in entries}
    if len(by_offset) != len(entries) or sorted(by_offset) != [span.offset for span in spans]:
        raise ShardIndexError(
            f"{entries[0].shard}: the index lists {len(entries)} records, the shard holds "
            f"{len(spans)} at other offsets"
        )
    ordered = [by_offset[span.offset] for span in spans]
    for entry, span in zip(ordered, spans, strict=True):
        if (entry.length, entry.prev_crc) != (span.length, span.prev_crc):
            raise ShardIndexError(
                f"{entry.shard}: the index entry of {entry.key!r} does not match its record"
            )
    records = [span.record for span in spans]
    decoded = decode(records, bundle, threads=threads)  # type: ignore[arg-type]
    return list(zip(ordered, decoded, strict=True))


# --- the index -------------------------------------------------------------------------------


def write_index_jsonl(path: str | os.PathLike[str], entries: Iterable[IndexEntry]) -> int:
    """Write entries, one JSON object per line, atomically; returns the count."""
    lines = [entry.to_json() + "\n" for entry in entries]
    write_atomic(Path(path), "".join(lines).encode("utf-8"))
    return len(lines)


def index_path(root: str | os.PathLike[str]) -> Path:
    """The dataset's index: index.jsonl, else index.parquet."""
    root = Path(root)
    jsonl = root / INDEX_JSONL
    if jsonl.exists() or not (root / INDEX_PARQUET).exists():
        return jsonl
    return root / INDEX_PARQUET


def iter_index(path: str | os.PathLike[str]) -> Iterator[IndexEntry]:
    """Entries of an index file: JSON Lines (standard library only) or Parquet (pyarrow)."""
    path = Path(path)
    if path.suffix == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError as exc:
            raise ShardIndexError(f"{path}: reading a Parquet index needs pyarrow") from exc
        for batch in pq.ParquetFile(path).iter_batches():
            for row in batch.to_pylist():
                yield IndexEntry.from_dict(row)
        return
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ShardIndexError(f"{path}:{number}: not JSON ({exc.msg})") from None
            if not isinstance(row, dict):
                raise ShardIndexError(f"{path}:{number}: an index line must be an object")
            yield IndexEntry.from_dict(row)


def find_entry(root: str | os.PathLike[str], key: str) -> IndexEntry:
    """The index entry for `key`: one pass over the index, stopping at the key.

    A linear scan keeps the index a plain, appendable file; a service answering many
    lookups loads it once into a dict (or queries index.parquet).
    """
    path = index_path(root)
    if not path.exists():
        raise ShardIndexError(f"{root}: no {INDEX_JSONL} (not a dataset directory?)")
    for entry in iter_index(path):
        if entry.key == key:
            return entry
    raise KeyNotFoundError(f"{root}: no image with key {key!r} in the index")


def load_index(root: str | os.PathLike[str]) -> dict[str, IndexEntry]:
    """The whole index as key -> entry; a key listed twice is an error."""
    result: dict[str, IndexEntry] = {}
    for entry in iter_index(index_path(root)):
        if entry.key in result:
            raise ShardIndexError(f"{root}: key {entry.key!r} is listed twice in the index")
        result[entry.key] = entry
    return result
