"""igpt-codec command line: parse, call the codec API, report.

Run as `igpt-codec`, `python -m codec` or `python cli.py` (the repository's
entry script); all three are this module.

Exit codes: 0 ok (also when the reader of stdout goes away, as with `| head`);
1 bad input, a format or model error, or a file problem (one line "error: ..."
on stderr, never a traceback); 2 usage (click's own); 128+N when stopped by
signal N (SIGINT 130, SIGTERM 143, SIGHUP 129). Every output file is written
complete to a hidden temporary file beside its target and all of them are
renamed into place at the end (`igpt_codec.cli.outputs`), so a failure or a signal
leaves nothing behind, not even a directory the command created. Input streams
are read front to back as records arrive, so memory stays bounded whatever the
input's size. onnxruntime is imported only by the commands that run a model,
and torch only by `export`.
"""

from __future__ import annotations

import contextlib
import functools
import io
import itertools
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, NoReturn, TextIO

import click

from igpt_codec.cli.outputs import OutputError, OutputSet, is_dir_spelling
from igpt_codec.format.errors import CodecError

DEFAULT_SIZE = 32
"""igpt_codec.api.DEFAULT_SIZE, repeated so that the CLI starts without importing onnxruntime."""

if TYPE_CHECKING:
    from igpt_codec.api import CompressSummary, DecodedImage

SUFFIX = ".igpt"
STDIO = "-"
EXPORT_DEPS = frozenset({"torch", "transformers", "onnx", "onnxscript", "safetensors"})
EXPORT_HINT = "export needs the export extra: pip install torch==2.13.0 && pip install -e .[export]"
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
            _fail(str(exc))
        except BrokenPipeError:
            _stdout_gone()
        except OSError as exc:
            _fail(_os_message(exc))
        except KeyboardInterrupt:
            _fail("interrupted", status=128 + signal.SIGINT)
        except Interrupted as exc:
            _fail(f"stopped by {signal.Signals(exc.signum).name}", status=128 + exc.signum)

    return wrapper


def _fail(message: str, status: int = 1) -> NoReturn:
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


# --- progress and reporting ---------------------------------------------------------------


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
        else:
            text = f"{self._label} {done} tokens"
        self._stream.write(f"\r{text}\x1b[K")
        self._stream.flush()

    def close(self) -> None:
        if self._drawn:
            self._stream.write("\r\x1b[K")
            self._stream.flush()


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" + ("s" if count != 1 else "")


def compress_summary(target: str, summary: CompressSummary, side: int | None) -> str:
    """The one summary line: bits/token is always file bytes x 8 / tokens; side None
    for full-resolution images (a token is a pixel)."""
    if side is None:
        return (
            f"{target}: {_plural(summary.images, 'image')} coded at full resolution, "
            f"{_plural(summary.tokens, 'pixel')}, {summary.stream_bytes} bytes: "
            f"{summary.bits_per_token:.3f} bits/pixel (file), ratio {summary.ratio:.2f}:1 to "
            f"24-bit RGB of the palette image; payload {summary.payload_bits_per_token:.3f}, "
            f"model ideal {summary.ideal_bits_per_token:.3f} bits/pixel"
        )
    return (
        f"{target}: {_plural(summary.images, 'image')} coded as {side}x{side} palette "
        f"{'thumbnail' if summary.images == 1 else 'thumbnails'}, "
        f"{_plural(summary.tokens, 'token')}, {summary.stream_bytes} bytes: "
        f"{summary.bits_per_token:.3f} bits/token (file), ratio {summary.ratio:.2f}:1 to "
        f"24-bit RGB of the thumbnail; payload {summary.payload_bits_per_token:.3f}, "
        f"model ideal {summary.ideal_bits_per_token:.3f} bits/token"
    )


# --- input --------------------------------------------------------------------------------


class _CountingReader:
    """read(n) passed through, counting bytes (the stream size of a pipe, for `info`)."""

    def __init__(self, fileobj: BinaryIO) -> None:
        self._file = fileobj
        self.count = 0

    def read(self, n: int = -1) -> bytes:
        data = self._file.read(n)
        self.count += len(data)
        return data


@contextlib.contextmanager
def _open_input(name: str) -> Iterator[BinaryIO]:
    """stdin (left open) or the named file (closed at the end)."""
    if name == STDIO:
        yield sys.stdin.buffer
        return
    path = Path(name)
    if path.is_dir():
        raise Failure(f"{name}: is a directory, not a stream")
    with open(path, "rb") as handle:
        yield handle


def _label(name: str) -> str:
    return "<stdin>" if name == STDIO else name


class _NamedErrors:
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


# --- commands -------------------------------------------------------------------------------


def _version_text() -> str:
    from importlib import metadata

    from igpt_codec import __version__
    from igpt_codec.runtime.search import default_fingerprint

    try:
        ort = metadata.version("onnxruntime")
    except metadata.PackageNotFoundError:
        ort = "not installed"
    return (
        f"igpt-codec {__version__} (onnxruntime {ort}; "
        f"default model {default_fingerprint() or 'missing'})"
    )


def _print_version(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value and not ctx.resilient_parsing:
        click.echo(_version_text())
        ctx.exit()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--version",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_print_version,
    help="Package, onnxruntime and default-model versions.",
)
def cli() -> None:
    """Lossless ImageGPT codec for N x N palette thumbnails (N <= 32).

    Each image is resized to N x N and quantized to ImageGPT's 512 colours; that
    thumbnail is coded losslessly under the model's predictions. The original
    photo is not kept.
    """


def run_options(command: Callable) -> Callable:
    """The options compress and decompress share: model, overwrite, quiet, threads."""
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
                "--threads", type=click.IntRange(min=1), help="onnxruntime intra-op threads."
            ),
        ]
    ):
        command = option(command)
    return command


def _stdout_binary(force: bool) -> BinaryIO:
    stream = sys.stdout.buffer
    if stream.isatty() and not force:
        raise Failure("refusing to write binary data to a terminal (use -f to force)")
    return stream


@cli.command()
@click.argument("inputs", nargs=-1, required=True)
@click.option(
    "-o",
    "--output",
    help="One stream holding every input ('-' for stdout). Default: one INPUT.igpt per input.",
)
@click.option("-c", "--stdout", "to_stdout", is_flag=True, help="Write one stream to stdout.")
@click.option(
    "--size",
    type=click.IntRange(1, 32),
    default=None,
    help=f"Side N of the coded N x N palette thumbnail.  [default: {DEFAULT_SIZE}]",
)
@click.option(
    "--full",
    is_flag=True,
    help="Code each photo at its own size (every pixel in the 512-colour palette) instead "
    "of a thumbnail: lossless at full resolution, about 1 minute per megapixel to compress "
    "and 2 to decompress on two cores.",
)
@click.option(
    "--names",
    is_flag=True,
    help="Store each input's file name (no directories); decompress names outputs after it.",
)
@run_options
@reports_errors
def compress(
    inputs: tuple[str, ...],
    output: str | None,
    to_stdout: bool,
    size: int | None,
    full: bool,
    names: bool,
    model_dir: str | None,
    force: bool,
    quiet: bool,
    threads: int | None,
) -> None:
    """Compress INPUT images (any format Pillow reads; '-' for stdin).

    Each image is resized to an N x N palette thumbnail (--size, ImageGPT's 512
    colours), which is what is stored, losslessly; the original photo is not
    kept. --full keeps the photo's own size instead: every pixel is mapped to the
    palette and that image is stored losslessly. Without -o each INPUT gets its own
    INPUT.igpt beside it (inputs are never removed); -o OUT or -c puts every image
    into one stream.
    """
    if full and size is not None:
        raise click.UsageError("--full codes the photo at its own size: drop --size")
    if size is None:
        size = DEFAULT_SIZE
    summary_side = None if full else size
    if inputs.count(STDIO) > 1:
        raise click.UsageError("'-' (stdin) may be given only once")
    if to_stdout:
        if output not in (None, STDIO):
            raise click.UsageError("-c/--stdout and -o name two different outputs")
        output = STDIO
    if output is None and inputs == (STDIO,):
        output = STDIO
    if output is None and STDIO in inputs:
        raise click.UsageError("'-' among several inputs needs -o OUT or -c")
    files = [Path(item) for item in inputs if item != STDIO]
    outputs = OutputSet(force=force, inputs=files)
    if output is None:
        targets = [Path(item + SUFFIX) for item in inputs]
        for target in targets:
            outputs.check(target)
    elif output == STDIO:
        targets = []
        stdout = _stdout_binary(force)
    else:
        if is_dir_spelling(output) or Path(output).is_dir():
            raise Failure(f"{output}: -o names the output stream, not a directory")
        targets = [Path(output)]
        outputs.check(targets[0])

    from igpt_codec import api
    from igpt_codec.core.images import load_image

    images = [
        load_image(sys.stdin.buffer.read(), name="<stdin>") if item == STDIO else item
        for item in inputs
    ]
    bar = ProgressBar.for_stderr("compressing", quiet)
    kwargs = {
        "model": model_dir,
        "size": size,
        "threads": threads,
        "progress": bar,
        "names": names,
        "full": full,
    }
    lines = []
    try:
        with outputs:
            if output is None:
                coded = api.compress_each(images, **kwargs)
                for target, (data, summary) in zip(targets, coded, strict=True):
                    outputs.add(target, data)
                    lines.append(compress_summary(str(target), summary, summary_side))
            elif output == STDIO:
                buffer = io.BytesIO()  # whole stream first: a failure writes nothing
                summary = api.compress_to(buffer, images, **kwargs)
                stdout.write(buffer.getvalue())
                stdout.flush()
                lines.append(compress_summary("<stdout>", summary, summary_side))
            else:
                with outputs.open(targets[0]) as handle:
                    summary = api.compress_to(handle, images, **kwargs)
                lines.append(compress_summary(output, summary, summary_side))
    except ValueError as exc:  # a size the model has no positions for
        raise Failure(str(exc)) from exc
    finally:
        bar.close()
    if not quiet:
        for line in lines:
            click.echo(line, err=True)


class _Targets:
    """Where decoded image i goes, once it is known whether the stream holds one or more.

    `-o` ending in a path separator, or naming an existing directory, is always a
    directory. Otherwise one image goes to the named file; several go to numbered
    PNGs beside it when it ends in .png, or into a directory of that name.
    """

    def __init__(self, input_name: str, output: str | None, several: bool) -> None:
        stem = "image" if input_name == STDIO else _stem(input_name)
        self.create_dirs = False
        if output is None:
            base = Path(input_name).parent
            self._single = base / f"{stem}.png"
            self._pattern = (base, f"{stem}_{{:03d}}.png")
        elif is_dir_spelling(output) or Path(output).is_dir():
            base = Path(output)
            self.create_dirs = True
            self._single = base / f"{stem}.png"
            self._pattern = (base, f"{stem}_{{:03d}}.png")
        else:
            path = Path(output)
            self._single = path
            if path.suffix.lower() == ".png":
                self._pattern = (path.parent, f"{path.stem}_{{:03d}}.png")
            else:
                self._pattern = (path, f"{stem}_{{:03d}}.png")
                self.create_dirs = several
        self.several = several
        self._used: set[Path] = set()

    def __getitem__(self, index: int) -> Path:
        if not self.several:
            return self._single
        base, pattern = self._pattern
        return base / pattern.format(index)

    def named(self, index: int, name: str | None) -> Path:
        """Image `index` of several, after its stored file name where it has one."""
        if not self.several or name is None:
            return self[index]
        base = self._pattern[0]
        stem = Path(name).stem or "image"
        target = base / f"{stem}.png"
        suffix = 1
        while target in self._used:
            target = base / f"{stem}_{suffix}.png"
            suffix += 1
        self._used.add(target)
        return target


def _stem(input_name: str) -> str:
    """photo.jpg.igpt -> photo; x.igpt -> x."""
    name = Path(input_name).name.removesuffix(SUFFIX)
    return Path(name).stem or "image"


@cli.command()
@click.argument("input_name", metavar="INPUT")
@click.option(
    "-o",
    "--output",
    help="PNG file, or a directory (a name ending in '/' is always one; '-' for stdout). "
    "Default: INPUT without .igpt, as .png (numbered _000, _001, ... for several images).",
)
@click.option("-c", "--stdout", "to_stdout", is_flag=True, help="Write the PNG to stdout.")
@click.option(
    "--original-size",
    is_flag=True,
    help="Scale the thumbnail back (bilinear) to the original dimensions: an approximation.",
)
@run_options
@reports_errors
def decompress(
    input_name: str,
    output: str | None,
    to_stdout: bool,
    original_size: bool,
    model_dir: str | None,
    force: bool,
    quiet: bool,
    threads: int | None,
) -> None:
    """Decompress a stream (INPUT, or '-' for stdin) into PNG thumbnails.

    The model is found by the fingerprint the stream names (see --model). A
    stream with no image this version decodes is an error for every output form.
    """
    if to_stdout:
        if output not in (None, STDIO):
            raise click.UsageError("-c/--stdout and -o name two different outputs")
        output = STDIO
    label = _label(input_name)
    to_pipe = output == STDIO or (output is None and input_name == STDIO)
    inputs = [] if input_name == STDIO else [Path(input_name)]
    outputs = OutputSet(force=force, inputs=inputs)
    stdout = _stdout_binary(force) if to_pipe else None

    from igpt_codec import api
    from igpt_codec.core.files import regular_file_size
    from igpt_codec.format import iter_records

    bar = ProgressBar.for_stderr("decompressing", quiet)
    count = 0
    side = 0
    full = False
    try:
        with _NamedErrors(label), _open_input(input_name) as handle:
            records = iter_records(handle, length=regular_file_size(handle))
            first = next(records, None)
            if first is None:
                raise Failure(
                    f"{label}: the stream holds no image this version can decode "
                    "(only records it skips)"
                )
            second = next(records, None)
            several = second is not None
            if to_pipe and several:
                raise click.UsageError(
                    f"{label} holds several images: name a directory with -o DIR/"
                )
            if output is None and input_name == STDIO and several:
                raise click.UsageError(
                    f"{label} holds several images: name a directory with -o DIR/"
                )
            targets = None if to_pipe else _Targets(input_name, output, several)
            if targets is not None:
                outputs.check(targets[0], create_dirs=targets.create_dirs)
            stream = itertools.chain([first], [second] if several else [], records)
            with outputs:
                decoded = api.iter_decode(stream, model=model_dir, threads=threads, progress=bar)
                for index, item in enumerate(decoded):
                    picture = _picture(item, original_size)
                    side = item.side
                    full = full or item.full
                    count += 1
                    if targets is None:
                        assert stdout is not None
                        stdout.write(picture)
                        stdout.flush()
                    else:
                        target = targets.named(index, item.name)
                        outputs.add(target, picture, create_dirs=targets.create_dirs)
    finally:
        bar.close()
    if not quiet:
        where = "<stdout>" if to_pipe else _describe(outputs.targets)
        what = (
            "full-resolution palette " + ("image" if count == 1 else "images")
            if full
            else f"{side}x{side} palette {'thumbnail' if count == 1 else 'thumbnails'}"
            + (", upscaled to the original size" if original_size else "")
        )
        click.echo(f"{label}: {_plural(count, 'image')} ({what}) -> {where}", err=True)


def _picture(item: DecodedImage, original_size: bool) -> bytes:
    image = item.to_original_size() if original_size else item.image
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _describe(targets: list[Path]) -> str:
    if len(targets) == 1:
        return str(targets[0])
    return f"{targets[0]} .. {targets[-1].name}"


@cli.command()
@click.argument("input_name", metavar="INPUT")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@reports_errors
def info(input_name: str, as_json: bool) -> None:
    """Describe a stream (INPUT, or '-' for stdin) without loading any model.

    Read front to back: a record is shown as soon as it is read. bits/token is
    the whole file's (bytes x 8 / tokens); each record's coder payload is shown
    as payload bits/token.
    """
    from igpt_codec.core.files import regular_file_size
    from igpt_codec.format import iter_records

    label = _label(input_name)
    version = _format_version()
    with _NamedErrors(label), _open_input(input_name) as handle:
        reader = _CountingReader(handle)
        records = iter_records(reader, length=regular_file_size(handle))
        rows = (_record_info(index, record) for index, record in enumerate(records))
        if as_json:
            _info_json(label, version, rows, reader)
        else:
            _info_text(label, version, rows, reader)


def _format_version() -> int | None:
    import igpt_codec.format as stream_format

    return getattr(stream_format, "VERSION", None)


def _info_text(label: str, version: int | None, rows: Iterator[dict], reader: Any) -> None:
    tokens = images = 0
    for row in rows:
        if not images:
            click.echo(f"{label}: IGP stream, format version {version}")
        images += 1
        tokens += row["tokens"]
        coded = (
            "full-resolution palette image"
            if row["kind"] == "full"
            else f"{row['side']}x{row['side']} palette thumbnail"
        )
        click.echo(
            f"  #{row['index']}: {row['width']}x{row['height']} {row['mode']} -> "
            f"{coded}, {row['tokens']} tokens, "
            f"{row['payload_bytes']} payload bytes "
            f"({row['payload_bits_per_token']:.3f} payload bits/token), "
            f"model {row['fingerprint']}" + (f" ({row['coding']} coding)" if row["coding"] else "")
        )
    if not images:
        click.echo(f"{label}: IGP stream, format version {version}")
    per_token = f": {8 * reader.count / tokens:.3f} bits/token (file)" if tokens else ""
    click.echo(
        f"{label}: {_plural(images, 'image')}, {tokens} tokens, {reader.count} bytes{per_token}"
    )


def _info_json(label: str, version: int | None, rows: Iterator[dict], reader: Any) -> None:
    """Written as the records arrive (memory bounded on any stream), then the totals.

    Nothing is written before the first record has been read and checked, so a file
    that is not a stream at all leaves stdout empty.
    """
    first = next(rows, None)
    out = click.get_text_stream("stdout")
    out.write(f'{{\n  "file": {json.dumps(label)},\n  "format_version": {json.dumps(version)},')
    out.write('\n  "records": [')
    tokens = images = 0
    for row in itertools.chain([first] if first else [], rows):
        out.write(("," if images else "") + "\n    " + json.dumps(row))
        images += 1
        tokens += row["tokens"]
    totals = {
        "images": images,
        "tokens": tokens,
        "stream_bytes": reader.count,
        "bits_per_token": 8 * reader.count / tokens if tokens else None,
    }
    out.write(("\n  " if images else "") + "],\n")
    body = json.dumps(totals, indent=2)[1:-1].strip("\n")
    out.write(body + "\n}\n")
    out.flush()


def _coding_name(head: Any) -> str | None:
    """ "exact" or "exact-adaptive" (the same bits on every machine) or "float32"
    (machine-bound), if recorded."""
    import igpt_codec.format as stream_format

    coding = getattr(head, "coding", None)
    names = {
        getattr(stream_format, "CODING_EXACT", None): "exact",
        getattr(stream_format, "CODING_FLOAT32", None): "float32",
        getattr(stream_format, "CODING_ADAPTIVE", None): "exact-adaptive",
    }
    return None if coding is None else names.get(coding, str(coding))


def _record_info(index: int, record: Any) -> dict[str, Any]:
    head = record.header
    segments = getattr(record, "segments", None)
    if segments is not None:  # a full-resolution image (kinds 3 and 4)
        payload = sum(len(segment.payload) for segment in segments)
        return {
            "index": index,
            "kind": "full",
            "width": head.width,
            "height": head.height,
            "mode": head.mode,
            "side": None,
            "tokens": head.token_count,
            "segments": len(segments),
            "chain_segments": head.chain_segments,
            "context_rows": head.context_rows,
            "payload_bytes": payload,
            "payload_bits_per_token": 8 * payload / head.token_count,
            "fingerprint": head.fingerprint.hex(),
            "coding": _coding_name(head),
        }
    return {
        "index": index,
        "kind": "thumbnail",
        "width": head.width,
        "height": head.height,
        "mode": head.mode,
        "side": head.side,
        "tokens": head.token_count,
        "payload_bytes": len(record.payload),
        "payload_bits_per_token": 8 * len(record.payload) / head.token_count,
        "fingerprint": head.fingerprint.hex(),
        "coding": _coding_name(head),
    }


@cli.command("export")
@click.argument("source")
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--palette",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="512x3 colour clusters (.npy or .json) when SOURCE does not carry them.",
)
@click.option(
    "--profile",
    type=click.Choice(["exact", "float"]),
    default="exact",
    show_default=True,
    help="exact: the integer graph, the same bits on every machine; float: the float32 "
    "graph (parity and measurement only; its files decode only where they were written).",
)
@click.option("-f", "--force", is_flag=True, help="Replace an existing bundle.")
@click.option("-q", "--quiet", is_flag=True, help="No progress messages.")
@reports_errors
def export_command(
    source: str, out_dir: Path, palette: Path | None, profile: str, force: bool, quiet: bool
) -> None:
    """Export an ImageGPT checkpoint (hub id or directory) to a model bundle."""
    try:
        from igpt_codec.export.onnx_export import export_bundle
    except ImportError as exc:
        if (exc.name or "").split(".")[0] in EXPORT_DEPS:
            raise Failure(EXPORT_HINT) from exc
        raise Failure(f"cannot load the exporter: {exc}") from exc
    if not quiet:
        logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    manifest = export_bundle(source, out_dir, palette=palette, profile=profile, force=force)
    if not quiet:
        click.echo(f"{out_dir}: bundle fingerprint {manifest.get('fingerprint')}", err=True)


# Datasets on Ray Data (docs/scale.md); the group imports neither Ray nor onnxruntime until
# one of its commands runs.
from igpt_codec.cli.dataset import dataset as dataset_group  # noqa: E402

cli.add_command(dataset_group)


def main(prog_name: str | None = None) -> None:
    """Console-script entry point (also `python -m codec` and `python cli.py`)."""
    install_signal_handlers()
    cli(prog_name=prog_name)
