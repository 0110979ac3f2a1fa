"""Hostile datasets, no Ray (issue 26, findings 4, 6, 7, 9; issue 25's dataset items).

Every hostile input is built here from SPEC.md and docs/scale.md alone, small and fast:
shards and indexes that are links (to a foreign file, to /dev/zero), FIFOs, devices;
index lines with huge numbers, deep nesting, bad UTF-8, decoy duplicates; another
dataset's index laid over this one's shard. Each must give one line naming the problem,
quote nothing read from a foreign file, and finish promptly (a FIFO must not hang).

Long: one test per hostile index or shard input of issue 26.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import stat
import threading
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import igpt_codec
from igpt_codec.api import resolve_bundle
from igpt_codec.cli.dataset import dataset
from igpt_codec.datasets.files import write_atomic
from igpt_codec.datasets.shards import (
    INDEX_JSONL,
    MANIFEST,
    IndexEntry,
    KeyNotFoundError,
    ShardIndexError,
    decode_shard,
    encode_shard,
    find_entry,
    iter_index,
    load_index,
    load_record,
    write_index_jsonl,
    write_shard,
)
from igpt_codec.format.errors import CodecError

FOREIGN = b"root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n" * 4
"""Stands in for /etc/passwd: a file that is not a shard, whose bytes must not leak."""


@pytest.fixture(scope="module")
def bundle():
    return resolve_bundle(None)


def _pictures(count: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (12 + i, 10, 3), dtype=np.uint8) for i in range(count)]


def _make(root: Path, bundle, keys: list[str], seed: int, side: int = 4) -> list[IndexEntry]:
    images = igpt_codec.api.tokenize(_pictures(len(keys), seed), bundle, side)
    shard = encode_shard(list(zip(keys, images, strict=True)), bundle)
    root.mkdir(parents=True, exist_ok=True)
    write_shard(root, shard)
    write_index_jsonl(root / INDEX_JSONL, shard.entries)
    return shard.entries


@pytest.fixture()
def ds(tmp_path, bundle) -> tuple[Path, list[IndexEntry]]:
    root = tmp_path / "ds"
    root.mkdir()
    return root, _make(root, bundle, ["a.png", "sub/img03.jpg", "c.png"], seed=1)


def _get(*args: str):
    return CliRunner().invoke(dataset, ["get", *map(str, args)])


def _one_line_error(result, *needles: str) -> str:
    """The command failed with exactly one 'error:' line and no traceback."""
    assert result.exit_code == 1, (result.exit_code, result.output, result.exception)
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert "Traceback" not in result.output
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def _leaks(message: str) -> bool:
    """Whether a message quotes bytes of FOREIGN: as text, as a stored CRC (any u32 read
    from it, either byte order), or as a repr of bytes."""
    words = {FOREIGN[i : i + 4] for i in range(len(FOREIGN) - 3)}
    hexes = {f"{int.from_bytes(w, order):#010x}" for w in words for order in ("little", "big")}
    return (
        "stored" in message
        or any(h in message for h in hexes)
        or "root:" in message
        or "b'" in message
    )


# --- finding 4: shards and index files that are not plain files ---------------------------


def test_a_shard_linked_to_a_foreign_file_leaks_nothing(ds, tmp_path):
    root, entries = ds
    foreign = tmp_path / "passwd"
    foreign.write_bytes(FOREIGN)
    shard = root / "shards" / entries[1].shard
    shard.unlink()
    shard.symlink_to(foreign)
    line = _one_line_error(_get(root, "sub/img03.jpg", "-o", tmp_path / "o.png"), "symbolic link")
    assert not _leaks(line)


def test_a_shard_that_is_a_foreign_file_leaks_nothing(ds, tmp_path):
    """A copy, not a link: the record check fails, and the message says the index does
    not match the shard without the stored CRC or bytes (the "stored 0x6c6f6e2f"
    oracle). Every entry's offset is tried."""
    root, entries = ds
    (root / "shards" / entries[0].shard).write_bytes(FOREIGN)
    for entry in entries:
        result = _get(root, entry.key, "-o", tmp_path / "o.png")
        assert not _leaks(_one_line_error(result, "does not match"))
    with pytest.raises(ShardIndexError) as caught:
        decode_shard(root, entries, None)  # type: ignore[arg-type]  # refused before decoding
    assert "does not match" in str(caught.value) and not _leaks(str(caught.value))


def _finishes(function, seconds: float = 20.0) -> BaseException | None:
    """Run `function` in a daemon thread; fail if it has not returned after `seconds`."""
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            function()
            outcome.append(None)
        except BaseException as exc:  # handed back to the test
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert outcome, f"still running after {seconds} s (a FIFO open blocks for ever)"
    return outcome[0]


def _release(fifo: Path) -> None:
    """Unblock a reader stuck opening `fifo` (old code), so no thread stays behind."""
    try:
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        os.close(fd)
    except OSError:
        pass


def test_a_fifo_shard_or_index_is_refused_at_once(ds):
    root, entries = ds
    shard = root / "shards" / entries[0].shard
    shard.unlink()
    os.mkfifo(shard)
    try:
        error = _finishes(lambda: load_record(root, entries[0]))
        assert isinstance(error, ShardIndexError) and "FIFO" in str(error)
        error = _finishes(lambda: decode_shard(root, entries, None))  # the Ray decompress path
        assert isinstance(error, ShardIndexError) and "FIFO" in str(error)
    finally:
        _release(shard)
    index = root / INDEX_JSONL
    index.unlink()
    os.mkfifo(index)
    try:
        error = _finishes(lambda: find_entry(root, "a.png"))
        assert isinstance(error, ShardIndexError) and "FIFO" in str(error)
    finally:
        _release(index)


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="needs /dev/zero")
def test_dev_zero_as_shard_or_index_reads_nothing(ds, tmp_path):
    """A shard or index linked to /dev/zero: refused as a link, before any read (the old
    reader read `length` bytes of zeros, or the index until memory ran out)."""
    root, entries = ds
    shard = root / "shards" / entries[0].shard
    shard.unlink()
    shard.symlink_to("/dev/zero")
    _one_line_error(_get(root, "a.png", "-o", tmp_path / "o.png"), "symbolic link")
    index = root / INDEX_JSONL
    index.unlink()
    index.symlink_to("/dev/zero")
    error = _finishes(lambda: find_entry(root, "a.png"))
    assert isinstance(error, ShardIndexError) and "symbolic link" in str(error)


def test_length_beyond_the_largest_frame_is_refused_before_reading(ds):
    _, entries = ds
    row = json.loads(entries[1].to_json())
    for length in (1 << 30, 1 << 40):
        with pytest.raises(ShardIndexError, match="length must be"):
            IndexEntry.from_dict({**row, "length": length})


def test_an_endless_index_line_costs_one_line_limit(ds):
    root, _ = ds
    (root / INDEX_JSONL).write_bytes(b'{"key": "' + b"x" * (1 << 20))  # 1 MiB, no newline
    with pytest.raises(ShardIndexError, match="longer than"):
        find_entry(root, "x")


# --- finding 6: every malformed index line is one line, never a traceback -----------------


def _index_with(root: Path, line: bytes) -> None:
    (root / INDEX_JSONL).write_bytes(line + b"\n")


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"offset": 1 << 63}, "offset must be"),
        ({"offset": (1 << 64) + 5}, "offset must be"),
        ({"length": 1 << 40}, "length must be"),
        ({"record": 1 << 63}, "record must be"),
        ({"width": 1 << 60}, "width must be"),
        ({"key": "k\ud800"}, "not valid text"),
    ],
)
def test_out_of_range_fields_are_one_line(ds, tmp_path, change, needle):
    root, entries = ds
    row = {**json.loads(entries[1].to_json()), **change}
    _index_with(root, json.dumps(row).encode())
    key = change.get("key", entries[1].key)
    _one_line_error(_get(root, key, "-o", tmp_path / "o.png"), needle)


def test_malformed_lines_are_one_line(ds, tmp_path):
    root, entries = ds
    row = json.loads(entries[1].to_json())
    text = json.dumps(row)
    cases = [
        (text.replace(str(row["offset"]), "9" * 5000).encode(), "digits"),
        (b"[" * 100_000 + b"]" * 100_000, "longer than"),
        (b"[" * 30_000 + b"]" * 30_000, "nested too deeply"),
        (text.encode().replace(b"sub/img03", b"sub/\xff\xfeimg03"), "not UTF-8"),
        (b"\x00\x01\x02", "not JSON"),
        (b"[1, 2]", "must be an object"),
        (text.replace('"mode"', '"mood"').encode(), "lacks the field 'mode'"),
        (text.replace(f'"offset": {row["offset"]}', '"offset": 1.5').encode(), "offset"),
    ]
    for line, needle in cases:
        _index_with(root, line)
        _one_line_error(_get(root, "sub/img03.jpg", "-o", tmp_path / "o.png"), needle)


@pytest.mark.parametrize("key", ["/", ".", ".."])
def test_a_key_with_no_base_name_needs_an_output(ds, tmp_path, key):
    root, entries = ds
    row = {**json.loads(entries[1].to_json()), "key": key}
    _index_with(root, json.dumps(row).encode())
    os.chdir(tmp_path)  # the default output would land here
    _one_line_error(_get(root, key), "give -o")
    out = tmp_path / "fine.png"
    result = _get(root, key, "-o", out, "-q")
    assert result.exit_code == 0 and out.is_file(), result.output


# --- finding 7: duplicate keys ------------------------------------------------------------


def test_a_decoy_listed_first_is_refused_by_get(tmp_path, bundle):
    """Another shard's entry placed first under the victim's key: `dataset get` used to
    return the decoy; every reader now refuses the key listed twice."""
    root = tmp_path / "ds"
    real = _make(root, bundle, ["victim.png", "other.png"], seed=2)
    decoy = _make(root, bundle, ["decoy.png"], seed=3)[0]
    decoy = IndexEntry.from_dict({**json.loads(decoy.to_json()), "key": "victim.png"})
    write_index_jsonl(root / INDEX_JSONL, [decoy, *real])
    _one_line_error(_get(root, "victim.png", "-o", tmp_path / "v.png"), "listed twice")
    with pytest.raises(ShardIndexError, match="listed twice"):
        load_index(root)
    assert not (tmp_path / "v.png").exists()


# --- issue 25: another dataset's index over this shard; why a key is missing -------------


def test_another_datasets_index_says_it_does_not_match(tmp_path, bundle):
    """Dataset B's index, renamed onto A's shard: the record read at B's offsets is not
    B's record. The old message was a 'record length ... exceeds ... truncated' from the
    frame parser; now it names the mismatch."""
    a, b = tmp_path / "a", tmp_path / "b"
    mine = _make(a, bundle, [f"m{i}" for i in range(6)], seed=4, side=5)
    theirs = _make(b, bundle, [f"t{i}" for i in range(6)], seed=5, side=3)
    laid = [
        IndexEntry.from_dict({**json.loads(e.to_json()), "shard": mine[0].shard}) for e in theirs
    ]
    write_index_jsonl(a / INDEX_JSONL, laid)
    for entry in laid:
        line = _one_line_error(_get(a, entry.key, "-o", tmp_path / "o.png"), "does not match")
        assert "exceeds" not in line and "truncated" not in line
    with pytest.raises(ShardIndexError, match="does not match"):
        decode_shard(a, laid, bundle)


def test_a_missing_key_says_why(ds, tmp_path):
    root, _ = ds
    manifest = {"skipped": [{"key": "broken.jpg", "error": "cannot identify image file"}]}
    (root / MANIFEST).write_text(json.dumps(manifest))
    line = _one_line_error(_get(root, "broken.jpg", "-o", tmp_path / "o.png"))
    assert "skipped when the dataset was made (cannot identify image file)" in line
    line = _one_line_error(_get(root, "img03.jpg", "-o", tmp_path / "o.png"))
    assert "did you mean 'sub/img03.jpg'?" in line
    with pytest.raises(KeyNotFoundError, match=r"no image with key 'zzz' in the index$"):
        find_entry(root, "zzz")


def test_get_quiet_stdout_and_summary(ds, tmp_path):
    root, _ = ds
    loud = _get(root, "sub/img03.jpg", "-o", tmp_path / "one.png")
    assert loud.exit_code == 0
    assert "sub/img03.jpg: 4x4 from the 4x4 thumbnail" in loud.stderr
    quiet = _get(root, "sub/img03.jpg", "-c", "-q")
    assert quiet.exit_code == 0 and quiet.stderr == ""
    assert (
        quiet.stdout_bytes.startswith(b"\x89PNG")
        and quiet.stdout_bytes == (tmp_path / "one.png").read_bytes()
    )
    both = _get(root, "sub/img03.jpg", "-c", "-o", tmp_path / "two.png")
    _one_line_error(both, "exclude")


# --- finding 9: file modes ----------------------------------------------------------------


def test_index_and_shards_get_the_umask_mode(tmp_path, bundle):
    old = os.umask(0o022)
    try:
        root = tmp_path / "ds"
        entries = _make(root, bundle, ["x.png"], seed=6)
        write_atomic(tmp_path / "plain", b"data")
    finally:
        os.umask(old)
    for path in (root / INDEX_JSONL, root / "shards" / entries[0].shard, tmp_path / "plain"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path
    assert not list(tmp_path.rglob("*.partial"))


# --- property: any index line, any entry over a real shard -> one CodecError or a record --


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_any_mutated_index_line_is_an_entry_or_one_error(tmp_path_factory, data):
    """Byte flips, insertions and cuts of a valid line: the reader returns an entry or
    raises ShardIndexError, never another exception."""
    row = {
        "key": "sub/img03.jpg",
        "shard": "c269b89826850a4ed8ec.igpt",
        "record": 1,
        "offset": 41,
        "length": 27,
        "prev_crc": 845158614,
        "side": 4,
        "fingerprint": "31a033f09ae0fc74",
        "width": 10,
        "height": 13,
        "mode": "RGB",
    }
    line = bytearray(json.dumps(row).encode())
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(line)))
        action = data.draw(st.sampled_from(["flip", "insert", "cut", "digits"]))
        if action == "flip" and at < len(line):
            line[at] ^= data.draw(st.integers(1, 255))
        elif action == "insert":
            line[at:at] = data.draw(st.binary(min_size=1, max_size=8))
        elif action == "cut":
            del line[at : at + data.draw(st.integers(1, 8))]
        else:
            line[at:at] = b"9" * data.draw(st.integers(1, 30))
    path = tmp_path_factory.mktemp("fuzz") / INDEX_JSONL
    path.write_bytes(bytes(line) + b"\n")
    with contextlib.suppress(ShardIndexError):
        list(iter_index(path))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_any_entry_over_a_real_shard_reads_its_record_or_one_error(tmp_path_factory, bundle, data):
    """Offsets, lengths and prev_crc drawn at random over a real shard: read_record
    returns a record only when the entry is right, else a CodecError quoting no CRC."""
    root = tmp_path_factory.mktemp("ds")
    entries = _make(root, bundle, ["a", "b", "c", "d"], seed=9)
    size = (root / "shards" / entries[0].shard).stat().st_size
    base = data.draw(st.sampled_from(entries))
    offset = data.draw(st.integers(12, size + 4))
    length = data.draw(st.integers(5, size + 8))
    prev = data.draw(st.sampled_from([base.prev_crc, *(e.prev_crc for e in entries), 0]))
    try:
        entry = IndexEntry.from_dict(
            {**json.loads(base.to_json()), "offset": offset, "length": length, "prev_crc": prev}
        )
        record = load_record(root, entry)
    except CodecError as exc:
        assert "stored" not in str(exc) and "0x" not in str(exc)
    else:
        right = next(e for e in entries if e.offset == offset)
        assert (length, prev) == (right.length, right.prev_crc)
        assert record.header.side == right.side


def test_original_size_of_a_forged_record_is_bounded(tmp_path, bundle):
    """A 4x4 record claiming a 65535x65535 original: `get --original-size` would upscale
    to 12.9 GB; it is refused at Pillow's bomb limit instead, before decoding."""
    root = tmp_path / "ds"
    (image,) = igpt_codec.api.tokenize([np.zeros((6, 6, 3), np.uint8)], bundle, 4)
    forged = dataclasses.replace(image, width=65535, height=65535)
    shard = encode_shard([("big.png", forged)], bundle)
    root.mkdir(parents=True, exist_ok=True)
    write_shard(root, shard)
    write_index_jsonl(root / INDEX_JSONL, shard.entries)
    result = _get(root, "big.png", "--original-size", "-o", tmp_path / "big-out.png")
    _one_line_error(result, "exceeds Pillow's limit")
    assert _get(root, "big.png", "-q", "-o", tmp_path / "small.png").exit_code == 0
