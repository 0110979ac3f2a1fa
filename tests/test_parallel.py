"""Chains in forked worker processes (pipelines/parallel.py): the same records and pixels as
threads, results in order, progress summed, the first failure raised at once with its own
type and text, a dead worker named, an orphan stopping, and the rule for when to fork.

The pool tests run plain functions (no model, fast); the codec tests run the frozen tiny
golden model on small images with the fork threshold lowered, and the shipped model on
one mixed text-and-photo image where the chains judge coding 3 differently.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from igpt_codec import api
from igpt_codec.format.container import pack_stream
from igpt_codec.format.errors import CodecError, PayloadError
from igpt_codec.format.records import CODING_ADAPTIVE, CODING_MATCH
from igpt_codec.pipelines import fullres
from igpt_codec.pipelines.fullres import FullImage, decode_full, encode_full, make_header
from igpt_codec.pipelines.parallel import (
    Cancel,
    WorkerDiedError,
    run_parallel,
)
from igpt_codec.pipelines.stream import FULL_WRITER_CODINGS
from igpt_codec.runtime.bundle import load_bundle
from igpt_codec.runtime.exact_runner import ExactTokenModel

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="fork: Linux only")

GOLDEN = Path(__file__).parent / "golden"
SAMPLE = Path(__file__).parents[1] / "samples" / "bsds500_val_101085.jpg"


# --- the pool ------------------------------------------------------------------------------


def _square_with_progress(item: int, report) -> tuple[int, int]:
    for _ in range(item + 1):
        report(10)
    return item, item * item


def test_processes_return_results_in_order_and_sum_progress() -> None:
    seen: list[int] = []
    got = run_parallel(_square_with_progress, range(5), 2, Cancel(), seen.append, True)
    assert got == [(i, i * i) for i in range(5)]
    assert sum(seen) == 10 * (1 + 2 + 3 + 4 + 5)


def _pid_of(item: int, report) -> int:
    return os.getpid()


def test_each_chain_runs_in_a_child_and_threads_stay_here() -> None:
    forked = run_parallel(_pid_of, range(3), 2, None, None, True)
    assert os.getpid() not in forked and len(set(forked)) == 3
    assert run_parallel(_pid_of, range(3), 2, None, None, False) == [os.getpid()] * 3


def _fail_fast_or_sleep(item: int, report) -> None:
    if item == 1:
        raise PayloadError("record 0, segment 1: chain 1 fails")
    time.sleep(60)


def test_the_first_failure_is_raised_at_once_and_the_others_are_stopped() -> None:
    before = _children_alive()
    cancel = Cancel()
    started = time.monotonic()
    with pytest.raises(PayloadError, match="chain 1 fails") as raised:
        run_parallel(_fail_fast_or_sleep, range(2), 2, cancel, None, True)
    assert time.monotonic() - started < 5
    assert cancel.is_set()
    assert any("worker process for chain 1" in note for note in raised.value.__notes__)
    assert _children_alive() <= before


def _children_alive() -> set[int]:
    """This process's live (not zombie) children: the tests compare the set before and after
    a call, as other tests may leave children of their own (a Ray node, a server)."""
    alive = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(stat[1]) == os.getpid() and stat[0] != "Z":
            alive.add(int(entry.name))
    return alive


def _killed(item: int, report) -> None:
    if item == 0:
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(60)


def test_a_worker_that_dies_is_an_error_not_a_hang() -> None:
    before = _children_alive()
    started = time.monotonic()
    with pytest.raises(WorkerDiedError, match=r"exit code -9") as raised:
        run_parallel(_killed, range(2), 2, None, None, True)
    assert isinstance(raised.value, CodecError)  # the CLI's one-line errors
    assert time.monotonic() - started < 5
    assert _children_alive() <= before


class _Unpicklable(Exception):
    def __init__(self, what: str, lock: threading.Lock) -> None:
        super().__init__(what)
        self.lock = lock


def _raise_unpicklable(item: int, report) -> None:
    raise _Unpicklable("a lock inside", threading.Lock())


def test_an_exception_that_does_not_pickle_keeps_its_type_name_and_text() -> None:
    with pytest.raises(RuntimeError, match=r"_Unpicklable: a lock inside"):
        run_parallel(_raise_unpicklable, range(2), 2, None, None, True)


def test_an_orphaned_child_sees_the_cancel() -> None:
    """A middle process makes the Cancel, forks a grandchild and is killed; the grandchild,
    reparented, must see is_set() turn true (it writes what it saw to a pipe)."""
    read_end, write_end = os.pipe()
    middle = os.fork()
    if middle == 0:  # the middle process
        try:
            cancel = Cancel()
            if os.fork() == 0:  # the grandchild
                before = cancel.is_set()
                deadline = time.monotonic() + 10
                while not cancel.is_set() and time.monotonic() < deadline:
                    time.sleep(0.01)
                os.write(write_end, f"{int(before)}{int(cancel.is_set())}".encode())
                os._exit(0)
            time.sleep(0.3)
        finally:
            os._exit(0)
    os.close(write_end)
    os.waitpid(middle, 0)
    with os.fdopen(read_end, "rb") as pipe:
        assert pipe.read() == b"01"  # not set while the middle lived, set once it was gone


def _nap(item: int, report) -> int:
    time.sleep(0.5)
    return item


@pytest.mark.parametrize("forked", [False, True])
def test_the_callers_work_runs_once_here_while_the_workers_run(forked) -> None:
    seen: list[tuple[int, int]] = []
    before, threads = _children_alive(), threading.active_count()

    def meanwhile() -> None:
        workers = len(_children_alive() - before) if forked else threading.active_count() - threads
        seen.append((os.getpid(), workers))

    assert run_parallel(_nap, range(3), 2, Cancel(), None, forked, meanwhile) == [0, 1, 2]
    assert len(seen) == 1 and seen[0][0] == os.getpid()
    assert seen[0][1] == 2  # two workers running: children, or pool threads
    calls: list[int] = []
    assert run_parallel(_nap, range(2), 1, None, None, forked, lambda: calls.append(1)) == [0, 1]
    assert calls == [1]  # one worker: the caller's work first, in this thread


@pytest.mark.parametrize("forked", [False, True])
def test_a_failure_of_the_callers_work_stops_the_workers(forked) -> None:
    before = _children_alive()
    cancel = Cancel()

    def meanwhile() -> None:
        raise CodecError("the caller's work fails")

    started = time.monotonic()
    with pytest.raises(CodecError, match="caller's work fails"):
        run_parallel(_nap, range(4), 2, cancel, None, forked, meanwhile)
    assert cancel.is_set() and time.monotonic() - started < 3
    assert _children_alive() <= before


WHEN_TO_FORK = """
import threading
from igpt_codec.pipelines import parallel
from igpt_codec.pipelines.parallel import PROCESS_MIN_TOKENS as N, use_processes
answers = [use_processes(2, 2, N), use_processes(1, 2, N), use_processes(2, 1, N),
           use_processes(2, 2, N - 1)]
done = threading.Event()
other = threading.Thread(target=done.wait)
other.start()
answers.append(use_processes(2, 2, N))  # another thread running: its locks would be copied
done.set()
other.join()
answers.append(use_processes(2, 2, N))
parallel.PROCESSES = False
answers.append(use_processes(2, 2, N))
print(answers)
"""


def test_when_to_fork() -> None:
    """In a fresh interpreter (this test process may hold other libraries' threads)."""
    out = subprocess.run(
        [sys.executable, "-c", WHEN_TO_FORK], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == str([True, False, False, False, False, True, False])


def _fork_chains(monkeypatch, forked: bool) -> None:
    """Chains in processes (forked) or threads, whatever the image's size and whatever
    threads this test process holds (use_processes' own rule is tested above)."""
    monkeypatch.setattr(
        fullres, "use_processes", lambda workers, chains, tokens: forked and workers > 1
    )


# --- the codec -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny():
    bundle = load_bundle(GOLDEN / "model")
    return bundle, ExactTokenModel(bundle, threads=1)


def _record(model, bundle, tokens, codings, windows=None, **kwargs):
    image = FullImage(tokens, "RGB")
    header = make_header(
        image, bundle.fingerprint, 32, codings[0], segment_windows=windows, band_checks=None
    )
    return encode_full(model, image, header, codings=codings, **kwargs)


@pytest.mark.parametrize("codings", [(CODING_ADAPTIVE,), FULL_WRITER_CODINGS])
def test_forked_chains_write_and_read_what_threads_do(tiny, monkeypatch, codings) -> None:
    bundle, model = tiny
    rng = np.random.default_rng(11)
    tokens = np.where(rng.random((70, 100)) < 0.2, rng.integers(0, 512, (70, 100)), 3)
    tokens = tokens.astype(np.uint16)
    results = {}
    for forked in (False, True):
        _fork_chains(monkeypatch, forked)
        seen: list[int] = []
        record, ideal = _record(
            model,
            bundle,
            tokens,
            codings,
            windows=1,
            workers=2,
            progress=lambda d, _t, seen=seen: seen.append(d),
        )
        assert len(record.header.tiling.segments()) == 4
        assert seen[-1] == tokens.size and seen == sorted(seen)
        decoded = decode_full(model, record, 0, workers=3)
        assert np.array_equal(decoded.tokens, tokens)
        results[forked] = (pack_stream([record]), ideal)
    assert results[True][0] == results[False][0]
    assert results[True][1] == pytest.approx(results[False][1])


@pytest.mark.parametrize("model_dir", ["model", "models/12f32c72c4a71c93"])
def test_forked_chains_inherit_the_sessions_the_parent_opened(
    model_dir, tmp_path, monkeypatch
) -> None:
    """Sessions open on first use; a forked encode and decode must open theirs in the
    parent before the fork (each child opening its own would cost its time and memory).
    Every open_session call appends its process id to a file the children share."""
    from igpt_codec.runtime import exact_runner

    opened = tmp_path / "opened"
    real_open = exact_runner.open_session

    def recording_open(*args, **kwargs):
        with open(opened, "a") as out:
            out.write(f"{os.getpid()}\n")
        return real_open(*args, **kwargs)

    monkeypatch.setattr(exact_runner, "open_session", recording_open)
    bundle = load_bundle(GOLDEN / model_dir)
    model = ExactTokenModel(bundle, threads=1)
    assert not opened.exists()  # nothing opened before a call needs it
    _fork_chains(monkeypatch, True)
    tokens = np.random.default_rng(13).integers(0, 512, (40, 64)).astype(np.uint16)
    record, _ = _record(model, bundle, tokens, (CODING_ADAPTIVE,), windows=1, workers=2)
    decoded = decode_full(model, record, 0, workers=2)
    assert np.array_equal(decoded.tokens, tokens)
    pids = opened.read_text().split()
    # The whole-sequence session, and a span bundle's step session: all in this process.
    assert pids == [str(os.getpid())] * (1 if bundle.attention_span is None else 2)


def test_a_damaged_chain_fails_in_one_line_from_its_child(tiny, monkeypatch) -> None:
    bundle, model = tiny
    rng = np.random.default_rng(12)
    tokens = rng.integers(0, 512, (40, 64)).astype(np.uint16)
    _fork_chains(monkeypatch, True)
    record, _ = _record(model, bundle, tokens, (CODING_ADAPTIVE,), windows=1)
    segments = list(record.segments)
    damaged = bytearray(segments[1].payload)
    damaged[len(damaged) // 2] ^= 0x40
    segments[1] = dataclasses.replace(segments[1], payload=bytes(damaged))
    damaged_record = dataclasses.replace(record, segments=tuple(segments))
    with pytest.raises(CodecError, match=r"segment 1: ") as raised:
        decode_full(model, damaged_record, 0, workers=2)
    assert "\n" not in str(raised.value)


def test_the_classical_files_are_made_once_while_the_chains_run(tiny, monkeypatch) -> None:
    """compress(full=True) makes the cheap PNG/WebP files during the model's work (the
    main process is idle while forked chains run) and keeps them for the guarantee,
    instead of making them after the model."""
    from igpt_codec.pipelines import classical

    bundle, _ = tiny
    made: list[int] = []
    real = classical.candidates
    before = _children_alive()

    def counted(*args):
        made.append(len(_children_alive() - before))
        return real(*args)

    monkeypatch.setattr(classical, "candidates", counted)
    _fork_chains(monkeypatch, True)
    rng = np.random.default_rng(3)
    picture = Image.fromarray(rng.integers(0, 255, (40, 128, 3), dtype=np.uint8))
    data = api.compress(picture, bundle, full=True, threads=2)
    assert len(made) == 1 and made[0] >= 1  # once, with chain workers alive
    from igpt_codec.pipelines import stream

    monkeypatch.setattr(stream, "CLASSICAL_DURING_MODEL_PIXELS", 40 * 128 - 1)
    assert api.compress(picture, bundle, full=True, threads=2) == data
    assert made[1:] == [0]  # a larger image: after the workers, as the memory limit asks
    assert np.array_equal(
        api.decompress(data, bundle)[0].tokens,
        api.tokenize([picture], bundle, 0, full=True)[0].tokens,
    )


def test_chains_that_judge_coding_3_apart_give_the_threads_record(monkeypatch) -> None:
    """Text on the left, a photo on the right, under the shipped model: the text chain keeps
    coding 3 after its first band, the photo chain drops it. Threads share the drop at once;
    forked chains send theirs back; the record is the same (coding 2: a dropped extra is
    out for the whole image)."""
    from bench.synthetic import text_page

    bundle = load_bundle(None)
    model = ExactTokenModel(bundle, threads=1)
    text = Image.fromarray(text_page(1, 11, ())).crop((0, 0, 64, 96))
    with Image.open(SAMPLE) as photo:
        right = photo.convert("RGB").crop((0, 0, 64, 96))
    both = Image.new("RGB", (128, 96))
    both.paste(text, (0, 0))
    both.paste(right, (64, 0))
    tokens = api.tokenize([both], bundle, 0, full=True)[0].tokens
    written = {}
    for forked in (False, True):
        _fork_chains(monkeypatch, forked)
        sizes: dict[int, int | None] = {}
        record, _ = _record(
            model, bundle, tokens, FULL_WRITER_CODINGS, windows=2, workers=2, sizes=sizes
        )
        assert sizes[CODING_MATCH] is None and record.header.coding == CODING_ADAPTIVE
        written[forked] = pack_stream([record])
    assert written[True] == written[False]
