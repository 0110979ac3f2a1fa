"""The Ray runner's Ray-free parts (issue 26, findings 4, 5 and 9), without starting Ray.

The workers are plain classes Ray instantiates in its actors, so they are called here
directly: a hostile input (a link to /dev/zero, a FIFO, a file over the size limit, a
name that is not UTF-8) must come back as a skipped row with its reason, never as an
exception (which Ray would retry or report as its own failure), and promptly. A shard
that is not a shard must come back as an error row naming the cause. The staging
directory must commit without replacing an output another job wrote meanwhile.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import igpt_codec
from igpt_codec.api import resolve_bundle
from igpt_codec.datasets import runner, staging
from igpt_codec.datasets.shards import INDEX_JSONL, encode_shard, write_index_jsonl, write_shard
from igpt_codec.datasets.staging import Staging, StagingError, rename_noreplace
from igpt_codec.datasets.workers import MAX_INPUT_BYTES, CompressWorker, DecompressWorker

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def worker(tmp_path_factory) -> CompressWorker:
    staged = tmp_path_factory.mktemp("staging")
    return CompressWorker(str(staged), None, 4, 1, "skip", "key", "path")


def _png(path: Path, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (9, 7, 3), dtype=np.uint8)).save(path)
    return path


def _call_with_deadline(function, seconds: float = 30.0):
    out: list = []
    thread = threading.Thread(target=lambda: out.append(function()), daemon=True)
    thread.start()
    thread.join(seconds)
    assert out, f"still running after {seconds} s"
    return out[0]


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="needs /dev/zero")
def test_hostile_inputs_are_skipped_rows_with_reasons(worker, tmp_path):
    """Before: /dev/zero raised MemoryError in the worker (Ray retried it without
    limit), a FIFO hung the job. Now each is a skipped key with its reason."""
    good = _png(tmp_path / "good.png")
    zero = tmp_path / "zero.png"
    zero.symlink_to("/dev/zero")
    fifo = tmp_path / "fifo.png"
    os.mkfifo(fifo)
    huge = tmp_path / "huge.png"
    with open(huge, "wb") as handle:  # sparse: no disk used
        handle.truncate(MAX_INPUT_BYTES + 1)
    keys = ["good.png", "zero.png", "fifo.png", "huge.png", "bad\udcff.png"]
    paths = [str(good), str(zero), str(fifo), str(huge), str(good)]
    batch = {"key": np.array(keys, dtype=object), "path": np.array(paths, dtype=object)}
    try:
        rows = _call_with_deadline(lambda: worker(batch))
    finally:
        with contextlib.suppress(OSError):  # unblock an old reader stuck opening the FIFO
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    errors = dict(zip(rows["key"], rows["error"], strict=True))
    assert errors["good.png"] == ""
    assert "a device" in errors["zero.png"]
    assert "a FIFO" in errors["fifo.png"]
    assert "exceeds the limit" in errors["huge.png"]
    assert "not valid UTF-8" in errors["bad\udcff.png"]
    assert all("\n" not in error for error in errors.values())


def test_a_foreign_shard_is_an_error_row_with_its_cause(tmp_path):
    """Before: decode_shard's FormatError escaped the actor and the job reported Ray's
    retry advice. Now: an error row whose text names the mismatch, no file bytes."""
    bundle = resolve_bundle(None)
    root = tmp_path / "ds"
    images = igpt_codec.api.tokenize([np.zeros((5, 5, 3), np.uint8)] * 2, bundle, 3)
    shard = encode_shard([("a", images[0]), ("b", images[1])], bundle)
    root.mkdir(parents=True, exist_ok=True)
    write_shard(root, shard)
    write_index_jsonl(root / INDEX_JSONL, shard.entries)
    (root / "shards" / shard.name).write_bytes(b"root:x:0:0:root:/root:/bin/bash\n" * 3)
    decoder = DecompressWorker(str(root), str(tmp_path / "out"), None, 1, "png")
    lines = "\n".join(entry.to_json() for entry in shard.entries)
    batch = {"shard": np.array([shard.name], dtype=object), "entries": np.array([lines])}
    rows = decoder(batch)
    assert rows["key"] == [shard.name] and rows["output"] == [""]
    assert "does not match" in rows["error"][0] and "root" not in rows["error"][0]


def test_a_late_worker_never_recreates_a_removed_staging_directory(tmp_path):
    """CI, session 30: a job failed on one shard, the driver removed the staging
    directory, and the other actor (Ray stops actors asynchronously) then wrote its
    images with mkdir(parents=True), bringing `.OUT.*.partial` back. Now a worker
    whose staging root is gone fails and creates nothing, for both job kinds."""
    bundle = resolve_bundle(None)
    root = tmp_path / "ds"
    root.mkdir()
    images = igpt_codec.api.tokenize([np.zeros((5, 5, 3), np.uint8)] * 2, bundle, 3)
    shard = encode_shard([("sub/a.png", images[0]), ("b", images[1])], bundle)
    write_shard(root, shard)
    gone = tmp_path / ".OUT.0123abcd.partial"
    decoder = DecompressWorker(str(root), str(gone), None, 1, "png")
    lines = "\n".join(entry.to_json() for entry in shard.entries)
    batch = {"shard": np.array([shard.name], dtype=object), "entries": np.array([lines])}
    with pytest.raises(FileNotFoundError, match="the job's directory is gone"):
        decoder(batch)
    with pytest.raises(FileNotFoundError, match="the job's directory is gone"):
        write_shard(gone, shard)
    assert sorted(os.listdir(tmp_path)) == ["ds"]
    (tmp_path / "out").mkdir()
    assert DecompressWorker(str(root), str(tmp_path / "out"), None, 1, "png")(batch)["error"] == [
        "",
        "",
    ]
    assert sorted(os.listdir(tmp_path / "out")) == ["b.png", "sub"]


def test_staging_removal_outlasts_a_late_write(tmp_path, monkeypatch):
    """A late worker's file added while rmtree runs makes its last rmdir fail (not
    empty), and one rmtree (before) left the directory; the removal now retries."""
    real = staging.shutil.rmtree
    calls = []

    def rmtree_racing_a_writer(path, ignore_errors=False):
        calls.append(path)
        if len(calls) == 1:  # this pass loses the race: the directory is not empty
            return None
        return real(path, ignore_errors=ignore_errors)

    monkeypatch.setattr(staging.shutil, "rmtree", rmtree_racing_a_writer)
    with pytest.raises(RuntimeError, match="shard failed"), Staging(tmp_path / "OUT", False) as d:
        (d / "sub").mkdir()
        (d / "sub" / "late.png").write_bytes(b"x")
        raise RuntimeError("shard failed")
    assert len(calls) == 2 and os.listdir(tmp_path) == []


def test_retries_are_bounded_by_default():
    assert runner._retry_args(None) == {"max_restarts": 3, "max_task_retries": 3}
    assert runner._retry_args(0) == {"max_restarts": 0, "max_task_retries": 0}


# --- staging: finding 5 --------------------------------------------------------------------


def test_commit_never_replaces_what_another_job_wrote(tmp_path):
    """Job A checks OUT (absent), works; job B fills OUT meanwhile. Before: A's commit
    moved B's OUT aside, put its own in place and deleted B's, exit 0. Now A fails and
    B's files stay."""
    target = tmp_path / "OUT"
    with (
        pytest.raises(StagingError, match="someone else"),
        Staging(target, force=False) as staged,
    ):
        (staged / "mine").write_text("A")
        target.mkdir()
        (target / "theirs").write_text("B")
    assert sorted(os.listdir(target)) == ["theirs"]
    assert sorted(os.listdir(tmp_path)) == ["OUT"]  # A's staging directory removed


def test_commit_onto_an_empty_directory_and_with_force(tmp_path):
    target = tmp_path / "OUT"
    target.mkdir()
    with Staging(target, force=False) as staged:
        (staged / "one").write_text("1")
    assert os.listdir(target) == ["one"]
    with pytest.raises(StagingError, match="not empty"):
        Staging(target, force=False)
    with Staging(target, force=True) as staged:
        (staged / "two").write_text("2")
    assert os.listdir(target) == ["two"]
    assert sorted(os.listdir(tmp_path)) == ["OUT"]


@pytest.mark.parametrize("native", [True, False])
def test_rename_noreplace(tmp_path, monkeypatch, native):
    if not native:
        monkeypatch.setattr(staging, "_RENAMEAT2", None)  # the mkdir-claim fallback
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    with pytest.raises(FileExistsError):
        rename_noreplace(a, b)  # even an empty directory is not replaced
    b.rmdir()
    rename_noreplace(a, b)
    assert b.is_dir() and not a.exists()


def test_an_exit_the_with_block_never_sees_removes_the_staging_directory(tmp_path):
    """A SIGTERM whose handler exits (Ray's calls sys.exit) where the staging block's own
    exit never runs: the atexit hook still removes the directory (before: it stayed)."""
    code = (
        "import os, signal, sys; from pathlib import Path;"
        "from igpt_codec.datasets.staging import Staging;"
        "signal.signal(signal.SIGTERM, lambda n, f: sys.exit(n));"
        f"s = Staging(Path({str(tmp_path / 'OUT')!r}), False); d = s.__enter__();"
        "(d / 'x').write_text('x'); os.kill(os.getpid(), signal.SIGTERM)"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, timeout=120)
    assert done.returncode == 15
    assert os.listdir(tmp_path) == []


def test_force_keeps_the_old_output_when_another_job_wins(tmp_path, monkeypatch):
    """-f moves the old OUT aside; if another job's OUT appears before the new one is
    renamed in, neither is lost: the error names where the old one is kept."""
    target = tmp_path / "OUT"
    target.mkdir()
    (target / "old").write_text("0")
    real = staging.rename_noreplace

    def racing(source: Path, dest: Path) -> None:
        if dest == target and source.name.endswith(".partial"):
            target.mkdir()
            (target / "theirs").write_text("B")
        real(source, dest)

    monkeypatch.setattr(staging, "rename_noreplace", racing)
    with (
        pytest.raises(StagingError, match="kept as") as caught,
        Staging(target, force=True) as staged,
    ):
        (staged / "mine").write_text("A")
    assert os.listdir(target) == ["theirs"]
    kept = Path(str(caught.value).rsplit("kept as ", 1)[1])
    assert os.listdir(kept) == ["old"]
