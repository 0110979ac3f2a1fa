"""What every igpt-codec command shares: one-line errors, signals, progress, input, options.

Exit codes (all commands): 0 ok (also when the reader of stdout goes away, as with
`| head`); 1 bad input, a format or model error, or a file problem (one line
"error: ..." on stderr, never a traceback); 2 usage (click's own); 128+N when stopped
by signal N (SIGINT 130, SIGTERM 143, SIGHUP 129).

This module imports only click and the format's error base, so that every command (and
`dataset`, which shares `reports_errors`) starts without onnxruntime.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO, NoReturn, TextIO

import click

from igpt_codec.cli.outputs import OutputError
from igpt_codec.format.errors import CodecError

DEFAULT_SIZE = 32
"""igpt_codec.api.DEFAULT_SIZE, repeated so that the CLI starts without importing onnxruntime."""
SUFFIX = ".igpt"
STDIO = "-"
LOSSY_NOTE = (
    "What is coded (losslessly) is the N x N palette thumbnail in ImageGPT's 512 colours; "
    "the original photo is not kept."
)


class Failure(CodecError):
    """A user-facing problem found by the CLI itself (exit 1, like a CodecError)."""


class Interrupted(BaseException):
    """SIGTERM or SIGHUP, raised in the main thread like KeyboardInterrupt is for SIGINT."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _on_signal(signum: int, frame: object) -> None:
    for other in (signal.SIGINT, signal.SIGTERM, *_hup()):
        signal.signal(other, signal.SIG_IGN)  # a second signal must not cut the cleanup short
    raise Interrupted(signum)


def _hup() -> tuple[int, ...]:
    return (signal.SIGHUP,) if hasattr(signal, "SIGHUP") else ()


def install_signal_handlers() -> None:
    """SIGTERM and SIGHUP unwind the stack like SIGINT does, so every output is cleaned."""
    for signum in (signal.SIGTERM, *_hup()):
        if signal.getsignal(signum) is not signal.SIG_IGN:  # respect nohup
            signal.signal(signum, _on_signal)


def reports_errors(command: Callable[..., None]) -> Callable[..., None]:
    """Turn library and file errors into one stderr line and exit status 1."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        try:
            command(*args, **kwargs)
        except CodecError as exc:
            fail(str(exc))
        except BrokenPipeError:
            _stdout_gone()
        except OSError as exc:
            fail(_os_message(exc))
        except KeyboardInterrupt:
            fail("interrupted", status=128 + signal.SIGINT)
        except Interrupted as exc:
            fail(f"stopped by {signal.Signals(exc.signum).name}", status=128 + exc.signum)

    return wrapper


def fail(message: str, status: int = 1) -> NoReturn:
    """One line "error: ..." on stderr (newlines folded), then exit `status`."""
    with contextlib.suppress(OSError):
        click.echo(f"error: {' '.join(message.split())}", err=True)
    sys.exit(status)


def _stdout_gone() -> NoReturn:
    """The reader of stdout went away (`| head`): not an error. Keep the interpreter from
    failing again when it flushes stdout at exit."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    sys.exit(0)


def _os_message(exc: OSError) -> str:
    if exc.filename is not None and exc.strerror:
        return f"{exc.filename}: {exc.strerror}"
    return str(exc) or type(exc).__name__


# --- progress and wording -----------------------------------------------------------------


class ProgressBar:
    """A one-line bar on a terminal's stderr, drawn only once work has lasted `delay` s.

    Off for -q and whenever the stream is not a TTY (logs, pipes, tests).
    """

    WIDTH = 30

    def __init__(
        self, label: str, enabled: bool, stream: TextIO | None = None, delay: float = 0.5
    ) -> None:
        self._stream = stream or sys.stderr
        self._label = label
        self._enabled = enabled
        self._delay = delay
        self._start = time.monotonic()
        self._drawn_at = 0.0
        self._drawn = False

    @property
    def enabled(self) -> bool:
        return self._enabled

    @classmethod
    def for_stderr(cls, label: str, quiet: bool) -> ProgressBar:
        return cls(label, enabled=not quiet and sys.stderr.isatty())

    def __call__(self, done: int, total: int | None) -> None:
        now = time.monotonic()
        elapsed = now - self._start
        if not self._enabled or elapsed < self._delay:
            return
        if now - self._drawn_at < 0.1 and done != total:
            return
        self._drawn_at = now
        self._drawn = True
        if total:
            fraction = min(done / total, 1.0)
            left = elapsed * (1 - fraction) / fraction if fraction else 0.0
            bar = "#" * int(fraction * self.WIDTH)
            text = (
                f"{self._label} [{bar:<{self.WIDTH}}] {fraction:4.0%} "
                f"{done}/{total} tokens, {left:.0f}s left"
            )
        else:  # a pipe: no total to count down to, so say the rate
            rate = done / elapsed if elapsed > 0 else 0.0
            text = f"{self._label} {done} tokens, {rate:.0f} tokens/s, {elapsed:.0f}s"
        self._stream.write(f"\r{text}\x1b[K")
        self._stream.flush()

    def close(self) -> None:
        if self._drawn:
            self._stream.write("\r\x1b[K")
            self._stream.flush()


def plural(count: int, word: str) -> str:
    return f"{count} {word}" + ("s" if count != 1 else "")


# --- input and output streams ---------------------------------------------------------------


class CountingReader:
    """read(n) passed through, counting bytes (the stream size of a pipe, for `info`)."""

    def __init__(self, fileobj: BinaryIO) -> None:
        self._file = fileobj
        self.count = 0
        self.starts: list[int] = []
        """Byte offset of each concatenated stream, for `info`."""

    def read(self, n: int = -1) -> bytes:
        data = self._file.read(n)
        self.count += len(data)
        return data


@contextlib.contextmanager
def open_input(name: str) -> Iterator[BinaryIO]:
    """stdin (left open) or the named file (closed at the end)."""
    if name == STDIO:
        yield sys.stdin.buffer
        return
    path = Path(name)
    if path.is_dir():
        raise Failure(f"{name}: is a directory, not a stream")
    with open(path, "rb") as handle:
        yield handle


def label(name: str) -> str:
    """How an input is named in messages."""
    return "<stdin>" if name == STDIO else name


class NamedErrors:
    """Prefix the one-line message of a CodecError raised in the block with the input's name."""

    def __init__(self, label: str) -> None:
        self._label = label

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> bool:
        if isinstance(exc, CodecError) and not isinstance(exc, Failure | OutputError):
            message = str(exc)
            if not message.startswith(f"{self._label}:"):
                raise Failure(f"{self._label}: {message}") from exc
        return False


def write_stdout(stream: BinaryIO, data: bytes) -> None:
    """Write and flush, so that a full disk or a closed device is reported naming
    <stdout> (a vanished reader stays BrokenPipeError: `| head` is not an error)."""
    try:
        stream.write(data)
        stream.flush()
    except BrokenPipeError:
        raise
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror or str(exc), "<stdout>") from None


def expand_inputs(
    inputs: tuple[str, ...], recursive: bool, wanted: Callable[[Path], bool]
) -> list[str]:
    """The inputs, each directory replaced (with -r) by the files under it that `wanted`
    accepts, sorted, hidden files and directories left out (as gzip -r and zstd -r)."""
    found: list[str] = []
    for item in inputs:
        path = Path(item)
        if item == STDIO or not path.is_dir():
            found.append(item)
            continue
        if not recursive:
            raise Failure(f"{item}: is a directory, not a stream (use -r to read what is in it)")
        files = sorted(
            p
            for p in path.rglob("*")
            if p.is_file()
            and not any(part.startswith(".") for part in p.relative_to(path).parts)
            and wanted(p)
        )
        found.extend(str(p) for p in files)
    return found


def usable_cpus() -> int:
    """CPUs this process may run on (affinity, cpusets of containers), not the machine's
    count: os.cpu_count() would oversubscribe a limited container."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def stdout_binary(force: bool) -> BinaryIO:
    """stdout for binary data; refused on a terminal unless -f."""
    stream = sys.stdout.buffer
    if stream.isatty() and not force:
        raise Failure("refusing to write binary data to a terminal (use -f to force)")
    return stream


# --- options ---------------------------------------------------------------------------------


def run_options(command: Callable) -> Callable:
    """The options compress and decompress share: model, overwrite, quiet/verbose, keep,
    threads (default: the usable CPUs, os.sched_getaffinity, not os.cpu_count)."""
    for option in reversed(
        [
            click.option(
                "--model",
                "model_dir",
                metavar="DIR",
                help="Model bundle directory. compress: the model to use (default: the "
                "shipped one); decompress: tried first, then the shipped bundle, "
                "$IGPT_CODEC_MODELS and ~/.cache/igpt-codec/models, by fingerprint.",
            ),
            click.option("-f", "--force", is_flag=True, help="Overwrite existing output."),
            click.option("-q", "--quiet", is_flag=True, help="No progress bar, no summary."),
            click.option(
                "-v",
                "--verbose",
                is_flag=True,
                help="Show the progress bar and summary (the default; cancels -q).",
            ),
            click.option(
                "-k",
                "--keep",
                is_flag=True,
                help="Keep the inputs: a no-op for gzip/zstd habits (inputs are never removed).",
            ),
            click.option(
                "--threads",
                type=click.IntRange(min=1),
                default=usable_cpus,
                show_default=f"the CPUs this process may use, {usable_cpus()} here",
                help="Threads: onnxruntime's intra-op threads for thumbnails; for --full "
                "images the worker threads, each running the model on one thread.",
            ),
        ]
    ):
        command = option(command)
    return command
