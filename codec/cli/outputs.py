"""All-or-nothing output files: every file complete before any is put into place.

`OutputSet` writes each output to a hidden temporary file beside its target
(`.NAME.XXXXXXXX.partial`, same directory, so the final step is atomic),
closes it at once (so thousands of outputs hold one descriptor at a time), and
puts them all into place only in `commit()`. On any failure, or an interrupt,
`abort()` removes every temporary file, every file already placed that did not exist
before, and every directory the set created. Errors name the target, never the
temporary file.

Placing never overwrites what it was not allowed to: without `force`, a target that
did not exist is created with `os.link(temp, target)`, which fails if another process
made the name meanwhile (two decompressions racing for one name: one wins, the other
says so), so there is no window between a check and a rename. With `force`, or for a
file the user allowed to be replaced, it is `os.replace`.

Special files (a FIFO, a character or block device such as /dev/null, and names of
open descriptors such as /dev/stdout) are never renamed over: like
`zstd -o /dev/null`, the output is written straight into them, and no `-f` is
needed. The bytes are still held back (in an anonymous temporary file) until
`commit()`, so a failure writes nothing into them either.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import signal
import stat
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from igpt_codec.format.errors import CodecError

_NAME_LIMIT = 100
"""Characters of the target's name kept in its temporary name (file names max 255 bytes)."""
_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)
)


class OutputError(CodecError):
    """An output the command must not write: it exists, it is a directory, it is an input."""


@dataclass
class _Pending:
    target: Path
    temp: Path | None
    """The hidden file beside the target; None for a special file (see `spool`)."""
    existed: bool
    spool: BinaryIO | None = None
    """A special file's bytes, held in an anonymous temporary file until commit."""


_FD_NAMES = ("/dev/stdout", "/dev/stderr")
_FD_DIRS = ("/dev/fd/", "/proc/self/fd/")


def _names_a_descriptor(path: str | os.PathLike[str]) -> bool:
    """/dev/stdout and the like: links to an open descriptor, whatever file it is."""
    name = os.fspath(path)
    return name in _FD_NAMES or name.startswith(_FD_DIRS)


def is_special(path: str | os.PathLike[str]) -> bool:
    """A FIFO, a device, or a name for an open descriptor (/dev/stdout, even when it is a
    redirected regular file): written into, never replaced."""
    if _names_a_descriptor(path):
        return True
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISCHR(mode) or stat.S_ISBLK(mode)


def is_dir_spelling(name: str) -> bool:
    """A name that ends in a path separator means a directory, whether or not it exists."""
    return name.endswith(os.sep) or bool(os.altsep and name.endswith(os.altsep))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _named(exc: OSError, target: Path) -> OSError:
    """The same error, naming the target instead of whatever path the OS call had."""
    return OSError(exc.errno, exc.strerror or str(exc), str(target))


class OutputSet:
    """Outputs written completely, then renamed into place together (see module docstring).

    `force` allows replacing existing files (never directories). `inputs` are
    paths that no output may be, even with `force` (also through links).
    """

    def __init__(self, force: bool = False, inputs: Iterable[str | os.PathLike[str]] = ()) -> None:
        self.force = force
        self._inputs = [Path(p) for p in inputs]
        self._pending: list[_Pending] = []
        self._targets: set[str] = set()
        self._created_dirs: list[Path] = []
        self._renamed: list[_Pending] = []
        self._done = False
        self._mode = 0o666 & ~_umask()

    def __enter__(self) -> OutputSet:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()

    def __len__(self) -> int:
        return len(self._pending)

    @property
    def targets(self) -> list[Path]:
        return [item.target for item in self._pending]

    # --- checks ---------------------------------------------------------------------------

    def check(self, target: Path, *, create_dirs: bool = False) -> None:
        """Refuse, before any work, what `add` would refuse later."""
        target = Path(target)
        for source in self._inputs:
            if _same_file(target, source):
                raise OutputError(
                    f"{target}: output would overwrite the input {source} (refused even with -f)"
                )
        if str(target.absolute()) in self._targets:
            raise OutputError(f"{target}: named twice as an output")
        if is_special(target):
            return  # written into at commit, as zstd does: no -f needed, nothing replaced
        if target.is_dir():
            raise OutputError(f"{target} is a directory")
        if (target.exists() or target.is_symlink()) and not self.force:
            raise OutputError(f"{target} already exists (use -f to overwrite)")
        parent = target.parent
        if not create_dirs and not parent.is_dir():
            raise OutputError(f"{target}: directory {parent} does not exist")
        existing = next((p for p in (parent, *parent.parents) if p.exists()), None)
        if existing is not None and not existing.is_dir():
            raise OutputError(f"{target}: {existing} is not a directory")

    # --- writing --------------------------------------------------------------------------

    def add(self, target: Path, data: bytes, *, create_dirs: bool = False) -> None:
        """Write `data` to a complete, closed temporary file for `target`."""
        with self.open(target, create_dirs=create_dirs) as handle:
            handle.write(data)

    @contextlib.contextmanager
    def open(self, target: Path, *, create_dirs: bool = False) -> Iterator[BinaryIO]:
        """A binary handle on the temporary file for `target`; closed when the block ends."""
        if self._done:
            raise RuntimeError("output set already committed or aborted")
        target = Path(target)
        self.check(target, create_dirs=create_dirs)
        if is_special(target):
            with self._spooled(target) as handle:
                yield handle
            return
        existed = target.exists()
        with _signals_blocked():  # a file or directory made here is always recorded for abort()
            try:
                self._make_dirs(target.parent)
                fd, temp = tempfile.mkstemp(
                    dir=target.parent, prefix=f".{target.name[:_NAME_LIMIT]}.", suffix=".partial"
                )
            except OSError as exc:
                raise _named(exc, target) from None
            self._pending.append(_Pending(target, Path(temp), existed))
            self._targets.add(str(target.absolute()))
        try:
            with os.fdopen(fd, "wb") as handle:
                yield handle
            os.chmod(temp, self._mode)
        except OSError as exc:
            raise _named(exc, target) from None

    @contextlib.contextmanager
    def _spooled(self, target: Path) -> Iterator[BinaryIO]:
        # Anonymous (nothing left on a crash); closed by commit() or abort().
        spool = tempfile.TemporaryFile()  # noqa: SIM115
        self._pending.append(_Pending(target, None, True, spool))
        self._targets.add(str(target.absolute()))
        try:
            yield spool  # type: ignore[misc]
        except OSError as exc:
            raise _named(exc, target) from None

    def _make_dirs(self, directory: Path) -> None:
        missing = []
        for path in (directory, *directory.parents):
            if path.is_dir():
                break
            missing.append(path)
        for path in reversed(missing):
            path.mkdir()
            self._created_dirs.append(path)

    # --- ending ---------------------------------------------------------------------------

    def commit(self) -> None:
        """Put every complete output into place (signals held meanwhile): special files are
        written into first, then new files are linked and replaced ones renamed."""
        if self._done:
            return
        with _signals_blocked():
            try:
                for item in self._pending:
                    if item.spool is None and item.target.is_dir():
                        raise OutputError(f"{item.target} is a directory")
                    if item.spool is None and self._appeared(item):
                        raise OutputError(f"{item.target} appeared while working (use -f)")
                for item in self._pending:
                    if item.spool is not None:
                        _write_into(item.spool, item.target)
                for item in self._pending:
                    if item.spool is None:
                        self._place(item)
                        self._renamed.append(item)
            except BaseException:
                self.abort()
                raise
        self._done = True

    def _appeared(self, item: _Pending) -> bool:
        exists = item.target.exists() or item.target.is_symlink()
        return exists and not item.existed and not self.force

    def _place(self, item: _Pending) -> None:
        """Rename onto a target the user allowed to replace; otherwise create the name
        without ever replacing one (a link fails with EEXIST if it appeared meanwhile)."""
        assert item.temp is not None
        try:
            if self.force or item.existed:
                os.replace(item.temp, item.target)
                return
            try:
                os.link(item.temp, item.target)
            except FileExistsError:
                raise OutputError(f"{item.target} appeared while working (use -f)") from None
            except OSError as exc:
                if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
                    raise
                _create_exclusively(item.target)  # no hard links here: reserve, then rename
                os.replace(item.temp, item.target)
                return
            os.unlink(item.temp)
        except FileExistsError:
            raise OutputError(f"{item.target} appeared while working (use -f)") from None
        except OSError as exc:
            raise _named(exc, item.target) from None

    def abort(self) -> None:
        """Remove temporaries, files renamed by this set that are new, created directories."""
        self._done = True
        for item in self._pending:
            if item.spool is not None:
                item.spool.close()
            elif item.temp is not None:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(item.temp)
        for item in self._renamed:
            if not item.existed:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(item.target)
        for path in reversed(self._created_dirs):
            with contextlib.suppress(OSError):
                path.rmdir()


def _create_exclusively(target: Path) -> None:
    os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


def _write_into(spool: BinaryIO, target: Path) -> None:
    """Copy the held bytes into a FIFO or device (opened without creating or truncating
    anything; a FIFO's open waits for its reader, as with any writer)."""
    try:
        spool.seek(0)
        # Appending to a descriptor's name keeps a `>>` redirection's data (and a `>` one is
        # empty already); a FIFO or device ignores the flag.
        flags = os.O_WRONLY | (os.O_APPEND if _names_a_descriptor(target) else 0)
        with open(os.open(target, flags), "wb") as device:
            shutil.copyfileobj(spool, device)
    except OSError as exc:
        raise _named(exc, target) from None
    finally:
        spool.close()


@contextlib.contextmanager
def _signals_blocked() -> Iterator[None]:
    """Hold SIGINT/SIGTERM/SIGHUP (main thread, POSIX) so renames are not cut in half."""
    block = getattr(signal, "pthread_sigmask", None)
    if block is None or not _SIGNALS:
        yield
        return
    try:
        old = block(signal.SIG_BLOCK, _SIGNALS)
    except (OSError, ValueError):
        yield
        return
    try:
        yield
    finally:
        block(signal.SIG_SETMASK, old)
