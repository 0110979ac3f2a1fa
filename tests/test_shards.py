"""Shards and random access without Ray: codec/datasets/shards.py and format/access.py.

A shard is an ordinary stream; the index gives each record's offset, length and the
chained CRC before it, so one record is read (and checked) alone. These tests count the
bytes a lookup reads, corrupt every part an entry names, and check the records are the
single-machine codec's own, byte for byte.
"""

from __future__ import annotations

import dataclasses
import io
import json
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

import igpt_codec
from igpt_codec.api import resolve_bundle
from igpt_codec.cli.dataset import dataset
from igpt_codec.datasets.shards import (
    INDEX_JSONL,
    IndexEntry,
    IndexMismatchError,
    KeyNotFoundError,
    ShardIndexError,
    decode_entry,
    decode_shard,
    encode_shard,
    find_entry,
    get_image,
    iter_index,
    load_index,
    read_record,
    shard_name,
    write_index_jsonl,
    write_shard,
)
from igpt_codec.format import ChecksumError, FormatError, StreamWriter, unpack_stream
from igpt_codec.format.access import header_crc, iter_record_spans, parse_record_frame
from igpt_codec.format.errors import InvalidFieldError, LengthOutOfRangeError
from igpt_codec.pipelines.stream import TokenImage

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bundle():
    return resolve_bundle(None)


class CountingFile:
    """A binary file that counts the bytes its read() calls return."""

    def __init__(self, handle: io.BufferedReader) -> None:
        self._handle = handle
        self.bytes_read = 0
        self.reads = 0

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._handle.seek(offset, whence)

    def read(self, n: int = -1) -> bytes:
        data = self._handle.read(n)
        self.bytes_read += len(data)
        self.reads += 1
        return data


def _arrays(count: int, seed: int = 0) -> list[np.ndarray]:
    """Small RGB pictures with structure (gradients plus noise), not flat colour."""
    rng = np.random.default_rng(seed)
    pictures = []
    for i in range(count):
        h, w = 20 + 3 * i, 30 - i
        y, x = np.mgrid[0:h, 0:w]
        base = np.stack([x * 8, y * 8, (x + y) * 4], axis=-1) + rng.integers(0, 40, (h, w, 3))
        pictures.append(np.clip(base, 0, 255).astype(np.uint8))
    return pictures


def _token_images(bundle, pictures: list[np.ndarray], size: int) -> list[TokenImage]:
    return igpt_codec.api.tokenize(pictures, bundle, size)


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory, bundle):
    """Two shards (6 and 3 images, sizes 8 and 6) and their index."""
    root = tmp_path_factory.mktemp("dataset")
    pictures = _arrays(9)
    entries = []
    first = [(f"dir/a{i}.png", t) for i, t in enumerate(_token_images(bundle, pictures[:6], 8))]
    second = [(f"b{i}", t) for i, t in enumerate(_token_images(bundle, pictures[6:], 6))]
    for items in (first, second):
        shard = encode_shard(items, bundle)
        write_shard(root, shard)
        entries += shard.entries
    write_index_jsonl(root / INDEX_JSONL, sorted(entries, key=lambda e: e.key))
    tokens = {key: image.tokens for key, image in first + second}
    return root, pictures, tokens


def test_every_record_reads_alone_counting_bytes(dataset_dir, bundle):
    root, _, tokens = dataset_dir
    index = load_index(root)
    assert len(index) == 9
    for key, entry in index.items():
        path = root / "shards" / entry.shard
        with open(path, "rb") as handle:
            counting = CountingFile(handle)
            record = read_record(counting, entry)
        assert counting.bytes_read == entry.length
        assert entry.length < path.stat().st_size - 12  # never the whole shard
        assert record.header.side == entry.side
        decoded = decode_entry(root, entry)
        assert np.array_equal(decoded.tokens, tokens[key])


def test_records_are_the_single_machine_codecs(dataset_dir, bundle):
    """A shard's record is exactly what `igpt_codec.compress` writes for the image alone."""
    root, pictures, _ = dataset_dir
    index = load_index(root)
    for i in (0, 5):
        alone = unpack_stream(igpt_codec.compress(pictures[i], size=8))[0]
        entry = index[f"dir/a{i}.png"]
        with open(root / "shards" / entry.shard, "rb") as handle:
            assert read_record(handle, entry) == alone


def test_get_image_by_key_and_missing_key(dataset_dir):
    root, _, tokens = dataset_dir
    image = get_image(root, "b2")
    assert image.side == 6 and np.array_equal(image.tokens, tokens["b2"])
    with pytest.raises(KeyNotFoundError, match="'nope'"):
        get_image(root, "nope")
    assert find_entry(root, "dir/a3.png").record == 3


def test_decode_shard_matches_entries(dataset_dir, bundle):
    root, _, tokens = dataset_dir
    index = load_index(root)
    by_shard: dict[str, list[IndexEntry]] = {}
    for entry in index.values():
        by_shard.setdefault(entry.shard, []).append(entry)
    assert sorted(len(v) for v in by_shard.values()) == [3, 6]
    for members in by_shard.values():
        pairs = decode_shard(root, members[::-1], bundle)  # any order in, shard order out
        assert [entry.record for entry, _ in pairs] == list(range(len(members)))
        for entry, image in pairs:
            assert np.array_equal(image.tokens, tokens[entry.key])
        with pytest.raises(ShardIndexError):
            decode_shard(root, members[:-1], bundle)


def _with(entry: IndexEntry, **changes) -> IndexEntry:
    row = json.loads(entry.to_json())
    row.update(changes)
    return IndexEntry.from_dict(row)


def test_wrong_entries_are_refused(dataset_dir):
    root, _, _ = dataset_dir
    index = load_index(root)
    entry = index["dir/a2.png"]
    other = index["dir/a3.png"]
    path = root / "shards" / entry.shard
    cases = [
        (_with(entry, prev_crc=entry.prev_crc ^ 1), IndexMismatchError),
        (_with(entry, offset=other.offset, length=other.length), IndexMismatchError),
        (_with(entry, length=entry.length + 1), IndexMismatchError),
        (_with(entry, length=entry.length - 1), IndexMismatchError),
        (_with(entry, offset=entry.offset + 1), IndexMismatchError),
        (_with(entry, width=entry.width + 1), ShardIndexError),
    ]
    for bad, error in cases:
        with open(path, "rb") as handle, pytest.raises(error):
            read_record(handle, bad)


def test_index_entry_validation(dataset_dir):
    root, _, _ = dataset_dir
    entry = next(iter(load_index(root).values()))
    assert IndexEntry.from_dict(json.loads(entry.to_json())) == entry
    first = next(e for e in load_index(root).values() if e.record == 0)
    with pytest.raises(ShardIndexError, match="first record"):
        _with(first, prev_crc=first.prev_crc ^ 1)
    for shard in ("../x.igpt", "a/b.igpt", ".igpt", "x.png", ".hidden.igpt"):
        with pytest.raises(ShardIndexError):
            _with(entry, shard=shard)
    with pytest.raises(ShardIndexError):
        _with(entry, fingerprint="zz")
    with pytest.raises(ShardIndexError, match="lacks"):
        IndexEntry.from_dict({"key": "k"})
    bad_index = root.parent / "bad.jsonl"
    bad_index.write_text('{"key": 1}\nnot json\n')
    with pytest.raises(ShardIndexError):
        list(iter_index(bad_index))


def test_shards_are_deterministic(bundle):
    """A batch coded twice (a retried worker) gives the same name and bytes."""
    items = list(zip(["x", "y", "z"], _token_images(bundle, _arrays(3, seed=7), 5), strict=True))
    a, b = encode_shard(items, bundle), encode_shard(items, bundle, threads=2)
    assert a.name == b.name and a.data == b.data and a.entries == b.entries
    assert shard_name(["x", "y"], 5, bundle.fingerprint) != shard_name(
        ["y", "x"], 5, bundle.fingerprint
    )
    with pytest.raises(ValueError):
        encode_shard(items + items[:1], bundle)


def test_index_parquet_reads_like_jsonl(dataset_dir, tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    root, _, _ = dataset_dir
    entries = list(iter_index(root / INDEX_JSONL))
    table = pa.Table.from_pylist([json.loads(e.to_json()) for e in entries])
    pq.write_table(table, tmp_path / "index.parquet")
    assert list(iter_index(tmp_path / "index.parquet")) == entries


# --- format/access.py --------------------------------------------------------------------


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    sides=st.lists(st.integers(1, 6), min_size=1, max_size=6),
    seed=st.integers(0, 2**32 - 1),
    data=st.data(),
)
def test_spans_index_any_stream(bundle, sides, seed, data):
    """Every record of any stream parses alone from its span; any changed byte fails."""
    rng = np.random.default_rng(seed)
    images = [
        TokenImage(rng.integers(0, 512, side * side).astype(np.uint16), side, 40, 30, "RGB")
        for side in sides
    ]
    shard = encode_shard([(f"k{i}", im) for i, im in enumerate(images)], bundle)
    spans = list(iter_record_spans(shard.data))
    assert [s.offset for s in spans] == [e.offset for e in shard.entries]
    assert spans[0].prev_crc == header_crc(bundle.fingerprint)
    assert spans[-1].final and not any(s.final for s in spans[:-1])
    assert sum(s.length for s in spans) == len(shard.data) - 12
    for span, image in zip(spans, images, strict=True):
        frame = shard.data[span.offset : span.offset + span.length]
        record, final = parse_record_frame(
            frame, fingerprint=bundle.fingerprint, prev_crc=span.prev_crc, offset=span.offset
        )
        assert record == span.record and final == span.final
        assert record.header.side == image.side
        # chain: this record's stored CRC is the next one's prev_crc
        assert int.from_bytes(frame[-4:], "little") == zlib.crc32(frame[:-4], span.prev_crc)
    span = data.draw(st.sampled_from(spans))
    frame = bytearray(shard.data[span.offset : span.offset + span.length])
    position = data.draw(st.integers(0, len(frame) - 1))
    frame[position] ^= data.draw(st.integers(1, 255))
    with pytest.raises(FormatError):
        parse_record_frame(bytes(frame), fingerprint=bundle.fingerprint, prev_crc=span.prev_crc)


def test_parse_record_frame_edges(bundle):
    items = list(zip(["p", "q"], _token_images(bundle, _arrays(2, seed=3), 4), strict=True))
    shard = encode_shard(items, bundle)
    first, last = list(iter_record_spans(shard.data))
    frame = shard.data[first.offset : first.offset + first.length]
    fp = bundle.fingerprint
    with pytest.raises(LengthOutOfRangeError):  # more bytes than the frame's length says
        parse_record_frame(frame + b"\x00", fingerprint=fp, prev_crc=first.prev_crc)
    tail = shard.data[last.offset :]
    with pytest.raises(ChecksumError):  # bytes appended to a final record fail its CRC
        parse_record_frame(tail + b"\x01", fingerprint=fp, prev_crc=last.prev_crc)
    with pytest.raises(FormatError):
        parse_record_frame(frame[:3], fingerprint=fp, prev_crc=first.prev_crc)
    with pytest.raises(InvalidFieldError):
        parse_record_frame(frame, fingerprint=fp[:4], prev_crc=first.prev_crc)
    with pytest.raises(InvalidFieldError):
        parse_record_frame(frame, fingerprint=fp, prev_crc=-1)


def test_name_records_are_not_images(bundle):
    """A stream written with names: the name record's span has no image, and its frame
    parsed alone is refused as an image."""
    data = igpt_codec.compress(_arrays(1), size=4)
    stream = io.BytesIO()
    record = unpack_stream(data)[0]
    with StreamWriter(stream) as writer:
        writer.write_record(dataclasses.replace(record, name="photo.png"))
    spans = list(iter_record_spans(stream.getvalue()))
    assert spans[0].record is None and spans[1].record == dataclasses.replace(record, name=None)
    raw = stream.getvalue()
    with pytest.raises(InvalidFieldError, match="name record"):
        parse_record_frame(
            raw[spans[0].offset : spans[0].offset + spans[0].length],
            fingerprint=bundle.fingerprint,
            prev_crc=spans[0].prev_crc,
        )


# --- command line ---------------------------------------------------------------------------


def test_cli_get(dataset_dir, tmp_path):
    root, _, _ = dataset_dir
    runner = CliRunner()
    out = tmp_path / "one.png"
    result = runner.invoke(dataset, ["get", str(root), "dir/a1.png", "-o", str(out)])
    assert result.exit_code == 0, result.output
    with Image.open(out) as im:
        assert im.size == (8, 8)
    again = runner.invoke(dataset, ["get", str(root), "dir/a1.png", "-o", str(out)])
    assert again.exit_code == 1 and "already exists" in again.output
    missing = runner.invoke(dataset, ["get", str(root), "nope", "-o", str(tmp_path / "n.png")])
    assert missing.exit_code == 1
    assert missing.output.strip().splitlines() == [
        f"error: {root}: no image with key 'nope' in the index"
    ]
    assert not (tmp_path / "n.png").exists()


def test_dataset_cli_imports_neither_ray_nor_onnxruntime():
    """Registering the group costs nothing: Ray only inside compress/decompress."""
    code = (
        "import sys, igpt_codec.cli.dataset, igpt_codec.datasets.shards, igpt_codec.format.access; "
        "print(sorted(m for m in ('ray', 'onnxruntime', 'torch', 'pyarrow') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"
