"""What a dataset job leaves behind: its reports, the index files and the manifest.

Ray-free driver code, called by `datasets.runner` once every worker row is in: the
index is written from those rows (never from the files found), as JSON Lines and as
Parquet, with `dataset.json` recording counts, the model and every skipped input with
its reason (which `dataset get` quotes for a skipped key). Files are written through
`files.write_atomic` (0666 less the umask, like Parquet's own writer).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from igpt_codec.datasets.files import write_atomic
from igpt_codec.datasets.index import (
    DATASET_FORMAT,
    INDEX_JSONL,
    INDEX_PARQUET,
    MANIFEST,
    SHARDS_DIR,
    IndexEntry,
    write_index_jsonl,
)
from igpt_codec.datasets.workers import ENTRY_FIELDS, INT_FIELDS, DatasetError


@dataclass
class CompressReport:
    """What a compression job wrote; `skipped` lists (key, reason) of unreadable inputs."""

    out_dir: Path
    images: int
    tokens: int
    shards: int
    stream_bytes: int
    seconds: float
    skipped: list[tuple[str, str]] = field(default_factory=list)

    @property
    def bits_per_token(self) -> float:
        return 8 * self.stream_bytes / self.tokens if self.tokens else 0.0


@dataclass
class DecompressReport:
    """What a decompression job wrote: one file per image under `out_dir`."""

    out_dir: Path
    images: int
    tokens: int
    shards: int
    seconds: float


# --- driver ------------------------------------------------------------------------------------


def finish_compress(
    staging: Path,
    target: Path,
    entries: dict[str, IndexEntry],
    skipped: list[tuple[str, str]],
    size: int,
    fingerprint: bytes,
) -> CompressReport:
    """Index (JSON Lines and Parquet), manifest, and removal of unreferenced files."""
    if not entries:
        raise DatasetError("no image could be read: nothing to write")
    ordered = [entries[key] for key in sorted(entries)]
    shard_dir = staging / SHARDS_DIR
    referenced = {entry.shard for entry in ordered}
    for path in shard_dir.iterdir():
        if path.name not in referenced:  # a killed worker's temporary file, a lost batch
            path.unlink()
    missing = [name for name in sorted(referenced) if not (shard_dir / name).is_file()]
    if missing:
        raise DatasetError(f"shard {missing[0]} is in the index but was not written")
    write_index_jsonl(staging / INDEX_JSONL, ordered)
    write_parquet(staging / INDEX_PARQUET, ordered)
    stream_bytes = sum((shard_dir / name).stat().st_size for name in referenced)
    tokens = sum(entry.side**2 for entry in ordered)
    manifest = {
        "format": DATASET_FORMAT,
        "images": len(ordered),
        "tokens": tokens,
        "shards": len(referenced),
        "stream_bytes": stream_bytes,
        "size": size,
        "fingerprint": fingerprint.hex(),
        "index": [INDEX_JSONL, INDEX_PARQUET],
        "skipped": [{"key": key, "error": error} for key, error in skipped],
    }
    write_atomic(staging / MANIFEST, (json.dumps(manifest, indent=2) + "\n").encode())
    return CompressReport(
        out_dir=target,
        images=len(ordered),
        tokens=tokens,
        shards=len(referenced),
        stream_bytes=stream_bytes,
        seconds=0.0,
        skipped=skipped,
    )


def write_parquet(path: Path, entries: list[IndexEntry]) -> None:
    """The same index as a Parquet table (what Ray Data and Arrow read without parsing)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table(
        {
            name: pa.array(
                [getattr(entry, name) for entry in entries],
                pa.int64() if name in INT_FIELDS else pa.string(),
            )
            for name in ENTRY_FIELDS
        }
    )
    temp = path.with_name(f".{path.name}.partial")
    pq.write_table(table, temp)
    os.replace(temp, path)


def remove_partials(root: Path) -> None:
    """Temporary files a killed worker left behind (its retry wrote the real file)."""
    for path in root.rglob(".*.partial"):
        path.unlink()
