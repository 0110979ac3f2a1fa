"""A job's output directory, built hidden and committed with a rename that cannot race.

A dataset job writes everything into `.OUT.XXXXXXXX.partial` beside OUT_DIR and, only
when the index is complete, renames it onto OUT_DIR: a failed or interrupted job leaves
no half-written dataset. Two jobs aimed at one OUT_DIR must not replace each other's
result silently, so the commit never checks and then renames:

- `rename_noreplace`: Linux `renameat2(..., RENAME_NOREPLACE)`, which fails if the
  target exists, in one system call. Where the kernel or file system lacks it
  (other systems, NFS), `mkdir(target)` claims the name atomically (it fails if the name
  exists) and a directory rename then replaces only that empty directory; a job that
  writes into it in between makes the rename fail (POSIX refuses to rename a directory
  over a non-empty one), never lose data.
- Without `-f`, an existing empty OUT_DIR (accepted at the start) is removed with
  `rmdir`, which fails if anyone has written into it meanwhile.
- With `-f`, the old OUT_DIR is first renamed aside (no-replace, a fresh name), then the
  new one renamed in; if another job got there in between, the old one is put back.

Cleanup: on any exception (SIGTERM and SIGHUP unwind as exceptions under the CLI's
handlers, and Ray's own SIGTERM handler raises SystemExit) the staging directory is
removed; an `atexit` hook removes any still present when the interpreter exits.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import ctypes.util
import errno
import os
import shutil
import sys
import time
import uuid
from pathlib import Path

from igpt_codec.format.errors import CodecError

_RENAME_NOREPLACE = 1
_AT_FDCWD = -100
_LIVE: set[Path] = set()
"""Staging directories not yet committed or removed (for the atexit hook)."""


class StagingError(CodecError):
    """The output directory cannot be written, or another job took it meanwhile."""


def _renameat2() -> object | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        function = libc.renameat2
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p]
    function.argtypes += [ctypes.c_uint]
    function.restype = ctypes.c_int
    return function


_RENAMEAT2 = _renameat2()


def rename_noreplace(source: Path, target: Path) -> None:
    """Rename the directory `source` to `target`; FileExistsError if `target` exists.

    Atomic with renameat2; elsewhere `mkdir` claims the name first (module docstring).
    """
    if _RENAMEAT2 is not None:
        done = _RENAMEAT2(  # type: ignore[operator]
            _AT_FDCWD, os.fsencode(source), _AT_FDCWD, os.fsencode(target), _RENAME_NOREPLACE
        )
        if done == 0:
            return
        code = ctypes.get_errno()
        if code == errno.EEXIST:
            raise FileExistsError(code, os.strerror(code), str(target))
        if code not in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
            raise OSError(code, os.strerror(code), str(target))
    os.mkdir(target)  # FileExistsError when taken: the atomic claim
    try:
        os.rename(source, target)  # replaces only the empty directory just made
    except BaseException:
        with contextlib.suppress(OSError):
            os.rmdir(target)
        raise


def remove_tree(path: Path, attempts: int = 40, pause: float = 0.05) -> None:
    """Remove a staging directory even while a late worker is still writing into it.

    When a job fails, Ray stops its actors asynchronously, and one may add a file to a
    subdirectory while `rmtree` works, whose last `rmdir` then fails (not empty) and
    leaves the directory. Workers never recreate the staging root
    (`files.make_dirs_under`), so once it is gone it stays gone: retry until it is.
    """
    for _ in range(attempts):
        shutil.rmtree(path, ignore_errors=True)
        if not os.path.lexists(path):
            return
        time.sleep(pause)


def _remove_live() -> None:
    for path in list(_LIVE):
        remove_tree(path)
        _LIVE.discard(path)


atexit.register(_remove_live)


class Staging:
    """A hidden directory beside the target, renamed onto it at the end (no-replace),
    removed on failure. `error` is the exception class raised for a refused target."""

    def __init__(self, target: Path, force: bool, error: type[CodecError] = StagingError) -> None:
        self.target = target
        self.force = force
        self.error = error
        if target.is_symlink() or (target.exists() and not target.is_dir()):
            raise error(f"{target} exists and is not a directory")
        if target.exists() and any(target.iterdir()) and not force:
            raise error(f"{target} exists and is not empty (use -f to replace it)")
        if not target.parent.is_dir():
            raise error(f"{target}: directory {target.parent} does not exist")
        self.path = target.parent / f".{target.name}.{uuid.uuid4().hex[:8]}.partial"

    def __enter__(self) -> Path:
        self.path.mkdir()
        _LIVE.add(self.path)
        return self.path

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        try:
            if exc_type is None:
                self._commit()
        finally:
            remove_tree(self.path)
            _LIVE.discard(self.path)

    def _taken(self) -> CodecError:
        return self.error(
            f"{self.target} was created or written by someone else while this job ran; "
            "nothing was replaced and this job's output is discarded"
        )

    def _commit(self) -> None:
        old = None
        if os.path.lexists(self.target):
            if not self.force:
                try:
                    os.rmdir(self.target)  # the empty directory accepted at the start
                except OSError:
                    raise self._taken() from None
            else:
                old = self.target.parent / f".{self.target.name}.{uuid.uuid4().hex[:8]}.old"
                try:
                    rename_noreplace(self.target, old)
                except FileNotFoundError:
                    old = None  # removed meanwhile: nothing to keep
        try:
            rename_noreplace(self.path, self.target)
        except FileExistsError:
            error = self._taken()
            if old is not None:
                try:
                    rename_noreplace(old, self.target)
                except OSError:  # the other job's output is there: keep the old one aside
                    error = self.error(f"{error}; the replaced {self.target.name} is kept as {old}")
            raise error from None
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
