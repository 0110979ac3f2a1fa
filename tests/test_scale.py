"""Datasets on Ray Data (igpt_codec.datasets.runner): a local 2-CPU Ray the tests start.

200 photos from the shared training set go through `compress_dataset` (2 actors) and
`decompress_dataset`; every image must come back token for token as the single-machine
tokenizer makes it, and records must be byte-identical to `igpt_codec.compress`'s. Then: 10
random keys by index reading only their records' bytes; an unreadable image skipped (or
failing the job); an actor killed mid-run, retried by Ray with no record lost or doubled.
Hostile inputs (issue 26): links to /dev/zero, FIFOs and oversized files are skipped
with a reason; a shard that is not a shard fails the job with its cause; SIGTERM leaves
no staging directory; -q leaves stderr empty.
Sizes are small (16x16) to keep the module within about two minutes.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import igpt_codec
from igpt_codec.api import resolve_bundle, tokenize
from igpt_codec.cli.dataset import dataset
from igpt_codec.datasets.shards import INDEX_JSONL, get_image, load_index, read_record
from igpt_codec.datasets.workers import MAX_INPUT_BYTES
from igpt_codec.format import unpack_stream
from igpt_codec.format.access import iter_record_spans

ray = pytest.importorskip("ray")
pytest.importorskip("ray.data")

from igpt_codec.datasets import DatasetError, compress_dataset, decompress_dataset  # noqa: E402

SIZE = 16
IMAGES = 200
WORKER_TITLE = "MapWorker(MapBatches(CompressWorker))"


class CountingFile:
    def __init__(self, handle) -> None:
        self._handle = handle
        self.bytes_read = 0

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._handle.seek(offset, whence)

    def read(self, n: int = -1) -> bytes:
        data = self._handle.read(n)
        self.bytes_read += len(data)
        return data


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray with 2 CPUs, shared by this module's jobs (the runner uses it as is)."""
    if ray.is_initialized():
        ray.shutdown()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def _link_tree(photos: list[Path], root: Path, common: Path) -> dict[str, Path]:
    """Symlink photos under root keeping their paths below `common`; key -> original."""
    keys = {}
    for photo in photos:
        key = photo.relative_to(common).as_posix()
        link = root / key
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(photo)
        keys[key] = photo
    return keys


@pytest.fixture(scope="module")
def photo_tree(photo_paths, tmp_path_factory):
    if len(photo_paths) < IMAGES:
        pytest.skip(f"need {IMAGES} shared photos, found {len(photo_paths)}")
    root = tmp_path_factory.mktemp("photos")
    chosen = random.Random(14).sample(photo_paths, IMAGES)
    common = Path(os.path.commonpath(chosen))
    keys = _link_tree(chosen, root, common)
    (root / "broken").mkdir()
    (root / "broken" / "not-an-image.png").write_bytes(b"\x89PNG\r\n\x1a\nthis is not a png")
    (root / "notes.txt").write_text("not listed: no image suffix")
    return root, keys


@pytest.fixture(scope="module")
def reference_tokens(photo_tree):
    """The single-machine tokenizer's tokens for every key (what compress codes)."""
    _, keys = photo_tree
    bundle = resolve_bundle(None)
    ordered = sorted(keys)
    images = tokenize([str(keys[key]) for key in ordered], bundle, SIZE)
    return {key: image.tokens for key, image in zip(ordered, images, strict=True)}


@pytest.fixture(scope="module")
def compressed(local_ray, photo_tree, tmp_path_factory):
    root, _ = photo_tree
    out = tmp_path_factory.mktemp("datasets") / "photos-ds"
    report = compress_dataset(root, out, size=SIZE, shard_images=32, actors=2, quiet=True)
    return out, report


def test_compress_and_decompress_200_images_token_for_token(
    compressed, photo_tree, reference_tokens, tmp_path
):
    out, report = compressed
    _, keys = photo_tree
    assert report.skipped == [("broken/not-an-image.png", "not an image Pillow can read")]
    assert report.images == IMAGES and report.tokens == IMAGES * SIZE * SIZE
    index = load_index(out)
    assert sorted(index) == sorted(keys)
    shard_files = sorted(p.name for p in (out / "shards").iterdir())
    assert shard_files == sorted({entry.shard for entry in index.values()})
    assert report.shards == len(shard_files) >= IMAGES // 32
    # no record twice, none missing: each shard holds exactly its index entries
    for name in shard_files:
        spans = list(iter_record_spans((out / "shards" / name).read_bytes()))
        listed = sorted(e.offset for e in index.values() if e.shard == name)
        assert [span.offset for span in spans] == listed

    decoded_dir = tmp_path / "decoded"
    result = decompress_dataset(out, decoded_dir, output="npy", actors=2, quiet=True)
    assert result.images == IMAGES and result.tokens == IMAGES * SIZE * SIZE
    for key, tokens in reference_tokens.items():
        got = np.load(decoded_dir / Path(key).with_suffix(".npy"))
        assert got.shape == (SIZE, SIZE)
        assert np.array_equal(got.reshape(-1), tokens), key
    assert not list(decoded_dir.rglob(".*"))  # no temporary files left


def test_records_equal_single_machine_codec(compressed, photo_tree):
    """The Ray job's records are `igpt_codec.compress`'s own, byte for byte (a sample)."""
    out, _ = compressed
    _, keys = photo_tree
    index = load_index(out)
    for key in random.Random(3).sample(sorted(keys), 5):
        alone = unpack_stream(igpt_codec.compress(str(keys[key]), size=SIZE))[0]
        entry = index[key]
        with open(out / "shards" / entry.shard, "rb") as handle:
            assert read_record(handle, entry) == alone


def test_ten_random_keys_read_only_their_records(compressed, reference_tokens):
    out, _ = compressed
    index = load_index(out)
    total_read = 0
    chosen = random.Random(10).sample(sorted(index), 10)
    for key in chosen:
        entry = index[key]
        path = out / "shards" / entry.shard
        with open(path, "rb") as handle:
            counting = CountingFile(handle)
            record = read_record(counting, entry)
        assert counting.bytes_read == entry.length < path.stat().st_size
        total_read += counting.bytes_read
        image = igpt_codec.decode_records([record])[0]
        assert np.array_equal(image.tokens, reference_tokens[key])
    assert total_read == sum(index[key].length for key in chosen)


def test_fail_mode_names_the_key_and_writes_nothing(local_ray, photo_tree, tmp_path):
    _, keys = photo_tree
    small = tmp_path / "small"
    some = sorted(keys)[:6]
    _link_tree(
        [keys[key] for key in some], small, Path(os.path.commonpath([keys[k] for k in some]))
    )
    (small / "bad.jpg").write_bytes(b"\xff\xd8\xff garbage")
    out = tmp_path / "out"
    with pytest.raises(DatasetError, match=r"bad\.jpg: .*--on-error fail"):
        compress_dataset(small, out, size=4, shard_images=4, on_error="fail", quiet=True)
    assert sorted(os.listdir(tmp_path)) == ["small"]  # no dataset, no staging directory
    result = CliRunner().invoke(
        dataset, ["compress", str(small), str(out), "--size", "4", "--on-error", "fail", "-q"]
    )
    assert result.exit_code == 1
    assert result.output.strip().startswith("error: bad.jpg: not")
    assert len(result.output.strip().splitlines()) == 1
    result = CliRunner().invoke(dataset, ["compress", str(small), str(out), "--size", "4", "-q"])
    assert result.exit_code == 0, result.output
    assert "skipped bad.jpg: not" in result.output
    index = load_index(out)
    assert len(index) == len(some)
    # the whole dataset back as PNGs through the command line, equal to one-key access
    pngs = tmp_path / "pngs"
    result = CliRunner().invoke(dataset, ["decompress", str(out), str(pngs), "-q"])
    assert result.exit_code == 0, result.output
    for key in index:
        with Image.open(pngs / Path(key).with_suffix(".png")) as im:
            assert np.array_equal(np.asarray(im), np.asarray(get_image(out, key).image))
    again = CliRunner().invoke(dataset, ["decompress", str(out), str(pngs), "-q"])
    assert again.exit_code == 1 and "not empty" in again.output


def test_parquet_input_with_id_column(local_ray, photo_tree, reference_tokens, tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    _, keys = photo_tree
    some = sorted(keys)[:12]
    table = pa.table(
        {
            "id": [*range(100, 100 + len(some)), 999],
            "jpeg": [keys[key].read_bytes() for key in some] + [b"nope"],
        }
    )
    pq.write_table(table, tmp_path / "photos.parquet")
    out = tmp_path / "from-parquet"
    report = compress_dataset(
        tmp_path / "photos.parquet",
        out,
        size=SIZE,
        id_column="id",
        bytes_column="jpeg",
        shard_images=5,
        quiet=True,
    )
    assert report.skipped == [("999", "not an image Pillow can read")]
    index = load_index(out)
    assert sorted(index) == sorted(str(100 + i) for i in range(len(some)))
    for i, key in enumerate(some):
        image = get_image(out, str(100 + i))
        assert np.array_equal(image.tokens, reference_tokens[key])


def _worker_pids() -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                title = handle.read().decode(errors="replace")
        except OSError:
            continue
        if WORKER_TITLE in title:
            pids.append(int(entry))
    return pids


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the actor process through /proc")
def test_killed_actor_is_retried_without_lost_or_doubled_records(
    local_ray, photo_tree, reference_tokens, tmp_path
):
    """SIGKILL one actor once the job has written its first shards: Ray restarts it and
    retries its batch; the dataset has every record exactly once."""
    photos_root, _ = photo_tree
    out = tmp_path / "killed-ds"
    killed: list[tuple[int, int]] = []
    stop = threading.Event()

    def killer() -> None:
        while not stop.is_set():
            staged = list(tmp_path.glob(".killed-ds.*.partial/shards/*.igpt"))
            pids = _worker_pids()
            if len(staged) >= 2 and pids:
                os.kill(pids[0], signal.SIGKILL)
                killed.append((pids[0], len(staged)))
                return
            time.sleep(0.05)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    try:
        report = compress_dataset(photos_root, out, size=SIZE, shard_images=8, actors=2, quiet=True)
    finally:
        stop.set()
        thread.join()
    assert killed, "the job ended before an actor could be killed"
    total_shards = report.shards
    assert killed[0][1] < total_shards  # killed mid-run
    index = load_index(out)
    assert sorted(index) == sorted(reference_tokens)
    assert (out / INDEX_JSONL).read_text().count("\n") == IMAGES
    names = sorted(p.name for p in (out / "shards").iterdir())
    assert names == sorted({e.shard for e in index.values()})  # no orphan, no temp file
    for name in names:
        spans = list(iter_record_spans((out / "shards" / name).read_bytes()))
        assert [s.offset for s in spans] == sorted(
            e.offset for e in index.values() if e.shard == name
        )
    for key in random.Random(5).sample(sorted(index), 8):
        with open(out / "shards" / index[key].shard, "rb") as handle:
            record = read_record(handle, index[key])
        assert np.array_equal(igpt_codec.decode_records([record])[0].tokens, reference_tokens[key])


def _small_tree(root: Path, count: int) -> Path:
    root.mkdir()
    rng = np.random.default_rng(26)
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, (20, 16, 3), dtype=np.uint8)).save(root / f"{i}.png")
    return root


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="needs /dev/zero")
def test_hostile_inputs_are_skipped_not_retried(local_ray, tmp_path):
    """Before: the /dev/zero link raised MemoryError in the actor and Ray retried it
    without limit; the FIFO hung the job. Now both, and a file over the input limit,
    are skipped keys with their reasons, and the rest is coded."""
    src = _small_tree(tmp_path / "src", 3)
    (src / "zero.png").symlink_to("/dev/zero")
    os.mkfifo(src / "fifo.png")
    with open(src / "huge.png", "wb") as handle:
        handle.truncate(MAX_INPUT_BYTES + 1)
    start = time.perf_counter()
    report = compress_dataset(src, tmp_path / "out", size=4, shard_images=3, quiet=True)
    reasons = dict(report.skipped)
    assert sorted(reasons) == ["fifo.png", "huge.png", "zero.png"]
    assert "a FIFO" in reasons["fifo.png"] and "a device" in reasons["zero.png"]
    assert "exceeds the limit" in reasons["huge.png"]
    assert report.images == 3 and time.perf_counter() - start < 120


def test_a_shard_that_is_not_a_shard_fails_with_its_cause(local_ray, compressed, tmp_path):
    """A shard replaced by another file (/etc/passwd in the audit): before, the job
    reported Ray's retry advice; now the cause, in one line, quoting nothing of the file."""
    out, _ = compressed
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    victim = sorted((copy / "shards").iterdir())[0]
    victim.write_bytes(b"root:x:0:0:root:/root:/bin/bash\n" * 20)
    with pytest.raises(DatasetError, match="does not match") as caught:
        decompress_dataset(copy, tmp_path / "decoded", actors=2, quiet=True)
    message = str(caught.value)
    assert len(message.splitlines()) == 1 and "root" not in message and "retr" not in message
    assert sorted(os.listdir(tmp_path)) == ["copy"]  # no output, no staging directory


@pytest.mark.skipif(not hasattr(signal, "SIGTERM"), reason="POSIX signals")
def test_quiet_run_and_sigterm_through_the_command_line(tmp_path):
    """A quiet job prints nothing (Ray's core_worker 'max_restarts > 0' line included);
    SIGTERM mid-job exits 143 with one line and leaves no .OUT.*.partial behind."""
    src = _small_tree(tmp_path / "src", 40)
    command = [sys.executable, "-m", "igpt_codec", "dataset", "compress", str(src)]
    done = subprocess.run(
        [*command, str(tmp_path / "quiet"), "--size", "4", "--shard-images", "20", "-q"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == "" and done.stdout == ""
    options = ["--size", "12", "--shard-images", "2", "--actors", "1", "-q"]
    job = subprocess.Popen(  # SIGTERM at its default even where this run ignores it
        [*command, str(tmp_path / "OUT"), *options],
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGTERM, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 240
    while not list(tmp_path.glob(".OUT.*.partial/shards/*.igpt")):
        assert job.poll() is None and time.monotonic() < deadline, "no shard was staged"
        time.sleep(0.1)
    job.send_signal(signal.SIGTERM)
    sent = time.monotonic()
    _, stderr = job.communicate(timeout=120)
    assert job.returncode == 128 + signal.SIGTERM, stderr
    assert stderr.strip().splitlines() == ["error: stopped by SIGTERM"]
    assert time.monotonic() - sent < 30
    assert sorted(os.listdir(tmp_path)) == ["quiet", "src"]
