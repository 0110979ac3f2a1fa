"""Workers for a full-resolution image's chains: forked processes, or threads; and their
shared progress count.

Apart from fullres.py because how workers start, fail and stop is one concern of its own:
the first failure in any chain, or a signal in the main thread, must reach every running
chain at once (issue 26, finding 3), not after the pool has waited for them.

Why processes: a chain step holds the GIL for its Python and numpy glue (the coder loop,
the mixer's calls), so two chain threads on two cores ran at CPU / wall 1.52 and spent 11%
more CPU than one thread did (docs/speed.md, "Session 25"), while two decodes in two
processes ran side by side without losing anything. On Linux the chains therefore run in
forked children (fork shares the loaded model and the image without pickling them), each
chain's result sent back through a pipe; elsewhere (no safe fork: macOS, Windows), in a
process that already runs other threads (forking those is unsafe), and for small images
(where a fork costs more than it saves) they run in threads. Either way the result is
the same: a chain depends only on its own input.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from igpt_codec.format.errors import CodecError

if TYPE_CHECKING:
    import multiprocessing.process
    from multiprocessing.connection import Connection

# multiprocessing and concurrent.futures (with logging, socket, subprocess: ~10 ms) are
# imported when a full-resolution image first runs its chains, not by every thumbnail
# command that imports the pipelines.

Progress = Callable[[int, int], None]
"""progress(pixels_done, pixels_total)."""

Report = Callable[[int], None]
"""report(tokens): a chain's tokens just coded, added to the image's progress."""

_T = TypeVar("_T")

PROCESSES = True
"""Whether chains may run in forked processes at all (tests turn it off to compare)."""

PROCESS_MIN_TOKENS = 1 << 15
"""Images with fewer tokens run their chains in threads: a fork, the child's stepper session
and its exit cost tens of milliseconds, a 32,768-token image's decode seconds."""


class WorkerDiedError(CodecError):
    """A worker process ended without a result (killed, or out of memory): a CodecError, so
    the command line reports it in one line like every other failure of a decode."""


class Cancel:
    """The stop flag a chain tests between cells: set by run_parallel at the first failure
    or signal (threads see it at once); in a forked child, also set once the parent is gone
    (killed before it could terminate the child), so an orphan stops instead of running on
    for minutes."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._owner = os.getpid()

    def set(self) -> None:
        self._event.set()

    def is_set(self) -> bool:
        if self._event.is_set():
            return True
        return os.getpid() != self._owner and os.getppid() != self._owner


class PixelProgress:
    """Pixels done across workers, reported through the optional callback."""

    def __init__(self, callback: Progress | None, total: int) -> None:
        self._callback = callback
        self._total = total
        self._done = 0
        self._lock = threading.Lock()

    def add(self, count: int) -> None:
        with self._lock:
            self._done += count
            if self._callback is not None:
                self._callback(self._done, self._total)


def use_processes(workers: int, chains: int, tokens: int) -> bool:
    """Whether run_parallel should fork for these chains (the module docstring says why)."""
    return (
        PROCESSES
        and workers > 1
        and chains > 1
        and tokens >= PROCESS_MIN_TOKENS
        and sys.platform.startswith("linux")
        and threading.active_count() == 1
        and threading.current_thread() is threading.main_thread()
    )


def run_parallel(
    function: Callable[[int, Report], _T],
    items: range,
    workers: int,
    cancel: Cancel | None = None,
    report: Report | None = None,
    processes: bool = False,
    meanwhile: Callable[[], None] | None = None,
) -> list[_T]:
    """function(i, report) for every i, in `workers` workers (in this thread when 1);
    results in order. `processes`: forked children instead of threads (use_processes says
    when); their results must pickle. `meanwhile`: the caller's own work, done in this
    thread once the workers have started (first, with one worker), its failure a
    worker's. The first exception in any worker, or a signal's
    (KeyboardInterrupt, or what a handler raises), sets `cancel` and stops every worker at
    once: threads test `cancel` between cells and return, children are terminated. Then
    what has not started is dropped, and the exception is raised here."""
    report = report or (lambda count: None)
    meanwhile = meanwhile or (lambda: None)
    if workers <= 1 or len(items) <= 1:
        meanwhile()
        return [function(i, report) for i in items]
    if processes:
        try:
            return _run_processes(function, items, workers, report, meanwhile)
        except BaseException:
            if cancel is not None:
                cancel.set()
            raise
    return _run_threads(function, items, workers, report, cancel, meanwhile)


def _run_threads(
    function: Callable[[int, Report], _T],
    items: range,
    workers: int,
    report: Report,
    cancel: Cancel | None,
    meanwhile: Callable[[], None],
) -> list[_T]:
    from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait

    pool = ThreadPoolExecutor(max_workers=min(workers, len(items)))
    futures = [pool.submit(function, i, report) for i in items]
    try:
        meanwhile()
        # Wait for the first failure, not for the futures in order: chain 0 may run for
        # minutes after chain 1 has failed.
        done, _ = wait(futures, return_when=FIRST_EXCEPTION)
        for future in done:
            future.result()  # raises the failure, if any, without waiting for the others
        return [future.result() for future in futures]
    except BaseException:
        # Set before the pool is left: leaving waits for every running chain, so the
        # workers must see the event first (they test it between cells and return).
        if cancel is not None:
            cancel.set()
        for future in futures:
            future.cancel()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


_PROGRESS, _DONE, _FAILED = range(3)


def _child(function: Callable[[int, Report], Any], item: int, conn: Connection) -> None:
    """A forked worker: one chain, its progress and its result or failure sent back."""
    # The parent handles signals and terminates its children; a child's own handlers are
    # copies of the parent's (the CLI's raise in the main thread) and must not run here.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, signal.SIG_DFL)
    try:
        result = function(item, lambda count: conn.send((_PROGRESS, count)))
        conn.send((_DONE, result))
    except BaseException as exc:  # every failure goes to the parent
        try:
            conn.send((_FAILED, exc, traceback.format_exc()))
        except Exception:  # the exception does not pickle: its type and text do
            conn.send((_FAILED, RuntimeError(f"{type(exc).__name__}: {exc}"), ""))
    finally:
        conn.close()


def _run_processes(
    function: Callable[[int, Report], _T],
    items: range,
    workers: int,
    report: Report,
    meanwhile: Callable[[], None],
) -> list[_T]:
    import multiprocessing
    from multiprocessing.connection import wait as wait_ready

    context = multiprocessing.get_context("fork")
    pending = list(items)
    running: dict[Connection, tuple[int, multiprocessing.process.BaseProcess]] = {}
    results: dict[int, _T] = {}
    caller: Callable[[], None] | None = meanwhile
    try:
        while pending or running:
            while pending and len(running) < workers:
                item = pending.pop(0)
                receive, send = context.Pipe(duplex=False)
                process = context.Process(target=_child, args=(function, item, send), daemon=True)
                process.start()
                send.close()  # the child holds its end; EOF here means the child is gone
                running[receive] = (item, process)
            if caller is not None:
                caller()  # the workers' messages wait in their pipes meanwhile
                caller = None
            for conn in wait_ready(list(running)):
                item, process = running[conn]  # type: ignore[index]
                try:
                    message = conn.recv()  # type: ignore[union-attr]
                except EOFError:
                    process.join()
                    raise WorkerDiedError(
                        f"a worker process ended without a result (exit code "
                        f"{process.exitcode}): killed, or out of memory"
                    ) from None
                if message[0] == _PROGRESS:
                    report(message[1])
                    continue
                if message[0] == _FAILED:
                    exc, where = message[1], message[2]
                    if where:
                        exc.add_note(f"in worker process for chain {item}:\n{where}")
                    raise exc
                results[item] = message[1]
                del running[conn]  # type: ignore[arg-type]
                conn.close()  # type: ignore[union-attr]
                process.join()
        return [results[i] for i in items]
    finally:
        for conn, (_, process) in running.items():
            process.terminate()
            conn.close()
        for _, process in running.values():
            process.join()
