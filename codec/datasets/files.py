"""Opening and writing dataset files as an attacker's index cannot bend them.

An index names files (shards) and a directory source names images, and either may be a
symbolic link, a FIFO or a device planted where a file was expected: `/dev/zero` reads
for ever, a FIFO blocks the open until a writer comes, and a link to `/etc/passwd` makes
its bytes the reader's input. So every read here

- opens with `O_NONBLOCK` (a FIFO cannot hang the open) and checks with `fstat` on the
  open descriptor (no check-then-open race) that it holds a regular file;
- refuses symbolic links (`O_NOFOLLOW`) for files the index names: a shard or the index
  itself is always written by the codec as a plain file, so a link is never legitimate.
  Images of a directory source may be links (trees of links are a common way to select
  photos), so there the link is followed and the target must still be a regular file;
- bounds the size before reading a byte of it.

Writes go to a temporary file created with `O_EXCL` (mode 0666 less the umask, like any
file a program creates, and like `index.parquet`) and renamed into place.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import uuid
from pathlib import Path
from typing import BinaryIO

from igpt_codec.format.errors import CodecError


class DatasetFileError(CodecError):
    """A file the dataset reads that is not a readable regular file, or is too large."""


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def open_regular(
    path: str | os.PathLike[str], what: str, *, follow_links: bool = False
) -> tuple[BinaryIO, int]:
    """(binary file, size) of a regular file, opened without blocking and, unless
    `follow_links`, without following a symbolic link; DatasetFileError otherwise.

    The message names the path and the problem only: nothing read from the file.
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    if not follow_links:
        flags |= getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise DatasetFileError(f"{path}: {what} does not exist") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP and not follow_links:
            raise DatasetFileError(
                f"{path}: {what} is a symbolic link (refused: the codec writes plain files)"
            ) from None
        raise DatasetFileError(f"{path}: cannot open {what}: {exc.strerror or exc}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise DatasetFileError(f"{path}: {what} is {_kind(info.st_mode)}, not a regular file")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        handle = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    return handle, info.st_size


def read_regular(
    path: str | os.PathLike[str], what: str, limit: int, *, follow_links: bool = False
) -> bytes:
    """The whole of a regular file of at most `limit` bytes (`open_regular`'s checks).

    The size is checked before reading and the read is capped at `limit + 1` bytes, so a
    file that grows while it is read cannot cost more either.
    """
    handle, size = open_regular(path, what, follow_links=follow_links)
    with handle:
        if size > limit:
            raise DatasetFileError(f"{path}: {what} of {size} bytes exceeds the limit {limit}")
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise DatasetFileError(f"{path}: {what} grew past the limit {limit} while read")
    return data


def make_dirs_under(root: str | os.PathLike[str], relative: str | os.PathLike[str]) -> Path:
    """Create ROOT/RELATIVE directory by directory, never ROOT itself.

    Workers write into a job's staging directory, which the driver removes when the job
    fails; a worker still running then (Ray kills actors asynchronously) must not bring
    it back, as `mkdir(parents=True)` would, leaving a stray `.OUT.*.partial` behind. So
    a missing ROOT is an error here, and once the driver has removed it no write lands.
    """
    directory = Path(root)
    if not directory.is_dir():
        raise FileNotFoundError(errno.ENOENT, "the job's directory is gone", str(directory))
    for part in Path(relative).parts:
        directory = directory / part
        with contextlib.suppress(FileExistsError):
            os.mkdir(directory)
    return directory


def write_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    """Write `data` to `path` through a temporary file beside it and a rename, so a reader
    (or a worker killed halfway) never leaves or sees a partial file; rewriting the same
    bytes is harmless.

    The temporary file is created with O_EXCL and mode 0666, so the process umask gives
    the final mode (0644 under the usual 022), as for any file a program writes.
    """
    path = Path(path)
    temp = path.parent / f".{path.name}.{uuid.uuid4().hex[:12]}.partial"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(temp, flags, 0o666)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise
