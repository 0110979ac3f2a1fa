"""A dataset's index: one entry per image, and a reader that any hostile index leaves whole.

An index entry says where an image lives (shard, offset, length, prev_crc) and repeats
its record's header. `IndexEntry` refuses any field out of what a shard can hold before
anything is read: an offset past 2^48, a length beyond the largest record frame
(`format.access.MAX_RECORD_SPAN`), a side, width or height the format cannot store.

The JSON Lines reader takes an index as it finds it: opened as a regular file without
following links (`files.open_regular`), read a line at a time with a line-length limit
(a line with no end costs at most MAX_INDEX_LINE bytes), strict UTF-8, integers of at
most 20 digits, nesting errors caught: every malformed line is one ShardIndexError
naming the file and line. A key listed twice is refused by every reader (`find_entry`
reads the whole index for that reason), so a decoy entry placed before the real one
cannot be served.

Standard library only: `dataset get` needs nothing beyond the codec's run time.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from igpt_codec.datasets.files import DatasetFileError, open_regular, read_regular, write_atomic
from igpt_codec.format.access import MAX_RECORD_SPAN, MIN_RECORD_SPAN, header_crc
from igpt_codec.format.errors import CodecError
from igpt_codec.format.records import MAX_DIMENSION, MAX_MODE_LEN, MAX_SIDE

SHARDS_DIR = "shards"
INDEX_JSONL = "index.jsonl"
INDEX_PARQUET = "index.parquet"
MANIFEST = "dataset.json"
SHARD_SUFFIX = ".igpt"
DATASET_FORMAT = "igpt-dataset-1"
"""The `format` field of dataset.json: the layout of shards.py, index fields as IndexEntry."""

MAX_KEY_BYTES = 4096
"""A key's UTF-8 length limit (PATH_MAX on Linux): any relative path fits."""
MAX_INDEX_LINE = 1 << 16
"""An index line's byte limit: a longest key escaped to JSON (at most 6 bytes a
character for control characters, far less in practice) plus the other fields fits."""
MAX_MANIFEST = 1 << 28
"""dataset.json's byte limit when read for a skipped input's reason."""
MAX_OFFSET = 1 << 48
MAX_RECORDS = 1 << 32
_MAX_DIGITS = 20
"""Digits of an index integer: u64 needs 20; a longer one is refused before int() runs."""


class ShardIndexError(CodecError):
    """An index entry that is malformed, names no shard, or disagrees with its record."""


class KeyNotFoundError(CodecError):
    """The key is not in the dataset's index."""


def show_key(key: str) -> str:
    """A key for a one-line message: its repr, cut to 80 characters."""
    text = repr(key)
    return text if len(text) <= 80 else text[:77] + "..."


def _check_key(key: object) -> None:
    if not isinstance(key, str) or not key:
        raise ShardIndexError("index entry: key must be a non-empty string")
    try:
        size = len(key.encode("utf-8"))
    except UnicodeEncodeError:
        raise ShardIndexError(f"index entry {show_key(key)}: key is not valid text") from None
    if size > MAX_KEY_BYTES:
        raise ShardIndexError(f"index entry: a key of {size} bytes exceeds {MAX_KEY_BYTES}")


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
        _check_key(self.key)
        for name in ("shard", "fingerprint", "mode"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ShardIndexError(f"index entry: {name} must be a non-empty string")
        limits = {
            "record": (0, MAX_RECORDS - 1),
            "offset": (12, MAX_OFFSET),
            "length": (MIN_RECORD_SPAN, MAX_RECORD_SPAN),
            "prev_crc": (0, 0xFFFFFFFF),
            "side": (1, MAX_SIDE),
            "width": (1, MAX_DIMENSION),
            "height": (1, MAX_DIMENSION),
        }
        for name, (low, high) in limits.items():
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
                raise ShardIndexError(
                    f"index entry {show_key(self.key)}: {name} must be an integer {low}..{high}"
                )
        if len(self.mode) > MAX_MODE_LEN or not self.mode.isascii():
            raise ShardIndexError(f"index entry {show_key(self.key)}: mode is not an image mode")
        check_shard_name(self.shard)
        try:
            fingerprint = bytes.fromhex(self.fingerprint)
        except ValueError:
            fingerprint = b""
        if len(fingerprint) != 8:
            raise ShardIndexError(
                f"index entry {show_key(self.key)}: fingerprint must be 16 hex digits"
            )
        if self.record == 0 and (self.offset != 12 or self.prev_crc != header_crc(fingerprint)):
            raise ShardIndexError(
                f"index entry {show_key(self.key)}: a shard's first record starts at offset "
                "12 and chains from the CRC of its file header"
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
        except TypeError:
            raise ShardIndexError("index row is malformed") from None


def check_shard_name(name: str) -> str:
    """A shard name is a plain file name ending in .igpt: an index cannot point outside
    the dataset's shards directory."""
    if (
        not isinstance(name, str)
        or not name.endswith(SHARD_SUFFIX)
        or len(name) <= len(SHARD_SUFFIX)
        or len(name) > 255
        or any(ch in name for ch in "/\\\0")
        or name.startswith(".")
    ):
        raise ShardIndexError(f"{show_key(str(name))} is not a shard file name")
    return name


def shard_path(root: str | os.PathLike[str], entry: IndexEntry) -> Path:
    return Path(root) / SHARDS_DIR / check_shard_name(entry.shard)


# --- reading ----------------------------------------------------------------------------------


def _small_int(text: str) -> int:
    if len(text.lstrip("-")) > _MAX_DIGITS:
        raise ValueError(f"an integer of {len(text)} digits")
    return int(text)


def _parse_line(where: str, line: bytes) -> dict[str, Any] | None:
    """One JSON Lines line as a row (None for a blank line); ShardIndexError otherwise."""
    if len(line) > MAX_INDEX_LINE:
        raise ShardIndexError(f"{where}: the line is longer than {MAX_INDEX_LINE} bytes")
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ShardIndexError(f"{where}: not UTF-8 (byte {exc.start + 1} of the line)") from None
    if not text.strip():
        return None
    try:
        row = json.loads(text, parse_int=_small_int)
    except json.JSONDecodeError as exc:
        raise ShardIndexError(f"{where}: not JSON ({exc.msg})") from None
    except RecursionError:
        raise ShardIndexError(f"{where}: JSON nested too deeply") from None
    except ValueError as exc:  # _small_int
        raise ShardIndexError(f"{where}: {exc} (at most {_MAX_DIGITS})") from None
    if not isinstance(row, dict):
        raise ShardIndexError(f"{where}: an index line must be an object")
    return row


def _jsonl_rows(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    try:
        handle, _ = open_regular(path, "index")
    except DatasetFileError as exc:
        raise ShardIndexError(str(exc)) from None
    with handle:
        number = 0
        while True:
            line = handle.readline(MAX_INDEX_LINE + 1)
            if not line:
                return
            number += 1
            row = _parse_line(f"{path}:{number}", line)
            if row is not None:
                yield f"{path}:{number}", row


def _parquet_rows(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    try:
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise ShardIndexError(f"{path}: reading a Parquet index needs pyarrow") from exc
    try:
        handle, _ = open_regular(path, "index")
    except DatasetFileError as exc:
        raise ShardIndexError(str(exc)) from None
    with handle:
        try:
            number = 0
            for batch in pq.ParquetFile(handle).iter_batches():
                for row in batch.to_pylist():
                    number += 1
                    yield f"{path}: row {number}", row
        except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
            raise ShardIndexError(
                f"{path}: not a readable Parquet index ({type(exc).__name__})"
            ) from None


def _rows(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """(where, row) of an index file, each line or row checked for shape only."""
    return _parquet_rows(path) if path.suffix == ".parquet" else _jsonl_rows(path)


def _entry(where: str, row: dict[str, Any]) -> IndexEntry:
    try:
        return IndexEntry.from_dict(row)
    except ShardIndexError as exc:
        raise ShardIndexError(f"{where}: {exc}") from None


def iter_index(path: str | os.PathLike[str]) -> Iterator[IndexEntry]:
    """Entries of an index file: JSON Lines (standard library only) or Parquet (pyarrow)."""
    for where, row in _rows(Path(path)):
        yield _entry(where, row)


def index_path(root: str | os.PathLike[str]) -> Path:
    """The dataset's index: index.jsonl, else index.parquet."""
    root = Path(root)
    jsonl = root / INDEX_JSONL
    if os.path.lexists(jsonl) or not os.path.lexists(root / INDEX_PARQUET):
        return jsonl
    return root / INDEX_PARQUET


def find_entry(root: str | os.PathLike[str], key: str) -> IndexEntry:
    """The index entry for `key`: one pass over the whole index.

    The pass does not stop at the key: a key listed twice is refused here too, so an
    entry placed before the real one (a decoy pointing at another shard) is never
    served. Every line is read as bounded JSON; only the key's own entry is validated
    field by field (a full validation of every line is `load_index`). A service
    answering many lookups loads the index once (`load_index`).
    A missing key's error says why where it can: the input was skipped when the dataset
    was made (dataset.json records the reason), or keys ending in /KEY exist.
    """
    path = index_path(root)
    if not os.path.lexists(path):
        raise ShardIndexError(f"{root}: no {INDEX_JSONL} (not a dataset directory?)")
    found = None
    similar: list[str] = []
    for where, row in _rows(path):
        other = row.get("key")
        if other == key:
            if found is not None:
                raise ShardIndexError(f"{root}: key {show_key(key)} is listed twice in the index")
            found = _entry(where, row)
        elif len(similar) < 3 and isinstance(other, str) and other.endswith("/" + key):
            similar.append(other)
    if found is None:
        message = f"{root}: no image with key {show_key(key)} in the index"
        reason = skipped_reason(root, key)
        if reason:
            message += f": it was skipped when the dataset was made ({reason})"
        elif similar:
            message += f" (did you mean {' or '.join(show_key(k) for k in similar)}?)"
        raise KeyNotFoundError(message)
    return found


def skipped_reason(root: str | os.PathLike[str], key: str) -> str:
    """Why `key` was skipped when the dataset was made, from dataset.json ("" if it was
    not, or the manifest is missing or unreadable: this only adds to an error)."""
    try:
        raw = read_regular(Path(root) / MANIFEST, "manifest", MAX_MANIFEST)
        skipped = json.loads(raw.decode("utf-8"), parse_int=_small_int).get("skipped", [])
        for item in skipped:
            if isinstance(item, dict) and item.get("key") == key:
                reason = item.get("error")
                return " ".join(reason.split())[:300] if isinstance(reason, str) else "no reason"
    except (CodecError, ValueError, RecursionError, AttributeError, TypeError):
        pass
    return ""


def load_index(root: str | os.PathLike[str]) -> dict[str, IndexEntry]:
    """The whole index as key -> entry; a key listed twice is an error."""
    result: dict[str, IndexEntry] = {}
    for entry in iter_index(index_path(root)):
        if entry.key in result:
            raise ShardIndexError(f"{root}: key {show_key(entry.key)} is listed twice in the index")
        result[entry.key] = entry
    return result


def write_index_jsonl(path: str | os.PathLike[str], entries: Iterable[IndexEntry]) -> int:
    """Write entries, one JSON object per line, atomically; returns the count."""
    lines = [entry.to_json() + "\n" for entry in entries]
    write_atomic(Path(path), "".join(lines).encode("utf-8"))
    return len(lines)
