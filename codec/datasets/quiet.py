"""`-q` for the parts of Ray that write to stderr themselves, below Python's logging.

Ray's core worker is C++ and logs straight to file descriptor 2 of the driver. One of
its lines appears on every successful dataset job (Ray Data keeps an actor's constructor
arguments in the object store, and restartable actors then draw "core_worker.cc ...
max_restarts > 0 ... the actor restart will fail"); it is logged at ERROR level, so no
log level short of FATAL hides it, and setting `RAY_BACKEND_LOG_LEVEL` prints a line of
its own. Under `-q`, `stderr_without` routes descriptor 2 through a pipe for the job and
drops only the lines that match a known pattern; every other line passes unchanged.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Iterator

RAY_NOISE: tuple[tuple[bytes, ...], ...] = ((b"core_worker.cc", b"max_restarts"),)
"""Each pattern: words that must all appear in a line for it to be dropped."""


def _forward(fd: int, data: bytes) -> None:
    while data:
        try:
            written = os.write(fd, data)
        except OSError:
            return
        data = data[written:]


@contextlib.contextmanager
def stderr_without(patterns: tuple[tuple[bytes, ...], ...] = RAY_NOISE) -> Iterator[None]:
    """Descriptor 2 through a filter that drops lines matching `patterns` (see above).

    Where descriptors cannot be duplicated, nothing is filtered.
    """
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):
        yield
        return
    read_fd, write_fd = os.pipe()

    def pump() -> None:
        with os.fdopen(read_fd, "rb") as source:
            for line in source:
                if not any(all(word in line for word in words) for words in patterns):
                    _forward(saved, line)

    thread = threading.Thread(target=pump, name="stderr-filter", daemon=True)
    thread.start()
    os.dup2(write_fd, 2)
    os.close(write_fd)
    try:
        yield
    finally:
        with contextlib.suppress(OSError, ValueError, AttributeError):
            sys.stderr.flush()
        os.dup2(saved, 2)
        # A process Ray started may still hold the pipe: then the pump keeps forwarding
        # its lines (a daemon thread) and `saved` stays open for it.
        thread.join(timeout=2.0)
        if not thread.is_alive():
            os.close(saved)
