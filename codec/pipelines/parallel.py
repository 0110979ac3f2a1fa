"""Worker threads for a full-resolution image's chains, and their shared progress count.

Apart from fullres.py because how threads start, fail and stop is one concern of its own:
the first failure in any chain, or a signal in the main thread, must reach every running
chain at once (issue 26, finding 3), not after the pool has waited for them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from typing import TypeVar

Progress = Callable[[int, int], None]
"""progress(pixels_done, pixels_total)."""

_T = TypeVar("_T")


class PixelProgress:
    """Pixels done across worker threads, reported through the optional callback."""

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


def run_parallel(
    function: Callable[[int], _T],
    items: range,
    workers: int,
    cancel: threading.Event | None = None,
) -> list[_T]:
    """function(i) for every i, in `workers` threads (in this thread when 1); results in
    order. The first exception in any thread, or a signal's (KeyboardInterrupt, or what a
    handler raises), sets `cancel` at once, before the pool is left: leaving a ThreadPoolExecutor
    block waits for every running chain, so the workers must see the event first (they
    test it between cells and return). Then what has not started is dropped, and the
    exception is raised here."""
    if workers <= 1 or len(items) <= 1:
        return [function(i) for i in items]
    pool = ThreadPoolExecutor(max_workers=min(workers, len(items)))
    futures = [pool.submit(function, i) for i in items]
    try:
        # Wait for the first failure, not for the futures in order: chain 0 may run for
        # minutes after chain 1 has failed.
        done, _ = wait(futures, return_when=FIRST_EXCEPTION)
        for future in done:
            future.result()  # raises the failure, if any, without waiting for the others
        return [future.result() for future in futures]
    except BaseException:
        if cancel is not None:
            cancel.set()
        for future in futures:
            future.cancel()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
