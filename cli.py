"""igpt-codec command line: parse, call the codec API, report. Nothing else lives here.

Exit codes: 0 ok; 1 bad input, a format or model error, or a file problem (one
line "error: ..." on stderr, never a traceback); 2 usage (click's own). Output
files go to a temporary file beside the target and are renamed into place only
when complete, so a failure leaves nothing partial behind. The codec (and with
it onnxruntime) is imported only by the commands that run a model, and torch
only by `export`.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, TextIO

import click

from format.errors import CodecError

if TYPE_CHECKING:
    from codec.api import CompressSummary, DecodedImage

SUFFIX = ".igpt"
STDIO = "-"
EXPORT_DEPS = frozenset({"torch", "transformers", "onnx", "onnxscript", "safetensors"})
EXPORT_HINT = "export needs the export extra: pip install torch==2.13.0 && pip install -e .[export]"


class Failure(Exception):
    """A user-facing problem found by the CLI itself (exit 1, like a CodecError)."""


def reports_errors(command: Callable[..., None]) -> Callable[..., None]:
    """Turn library and file errors into one stderr line and exit status 1."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        try:
            command(*args, **kwargs)
        except (CodecError, Failure) as exc:
            _fail(str(exc))
        except BrokenPipeError:
            # The reader went away (e.g. `| head`); keep the interpreter from failing again
            # when it flushes stdout at exit.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            _fail("stdout was closed before all output was written")
        except OSError as exc:
            _fail(_os_message(exc))
        except KeyboardInterrupt:
            _fail("interrupted", status=130)

    return wrapper


def _fail(message: str, status: int = 1) -> None:
    click.echo(f"error: {' '.join(message.split())}", err=True)
    sys.exit(status)


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


def _compress_summary(target: str, summary: CompressSummary) -> str:
    images = f"{summary.images} image" + ("s" if summary.images != 1 else "")
    return (
        f"{target}: {images}, {summary.tokens} tokens, {summary.stream_bytes} bytes: "
        f"{summary.bits_per_token:.3f} bits/token, ratio {summary.ratio:.2f}:1 to 24-bit RGB "
        f"of the coded image; model ideal {summary.ideal_bits_per_token:.3f} bits/token"
    )


# --- files ----------------------------------------------------------------------------------


def _check_target(path: Path, force: bool, new_dir_ok: bool = False) -> None:
    """Refuse before any work: an existing file (without -f), a directory, no parent."""
    if not new_dir_ok and not path.parent.is_dir():
        raise Failure(f"{path}: directory {path.parent} does not exist")
    if path.is_dir():
        raise Failure(f"{path} is a directory")
    if path.exists() and not force:
        raise Failure(f"{path} already exists (use -f to overwrite)")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_write(path: Path, force: bool) -> Iterator[BinaryIO]:
    """A temp file beside `path`, renamed onto it only if the block succeeds."""
    _check_target(path, force)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
        os.chmod(tmp, 0o666 & ~_umask())
        _check_target(path, force)  # again: it may have appeared while we worked
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _stdout_binary(force: bool) -> BinaryIO:
    stream = sys.stdout.buffer
    if stream.isatty() and not force:
        raise Failure("refusing to write binary data to a terminal (use -f to force)")
    return stream


def _read_input(name: str) -> bytes:
    if name == STDIO:
        return sys.stdin.buffer.read()
    return Path(name).read_bytes()


# --- commands -------------------------------------------------------------------------------


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Lossless ImageGPT image codec: palette tokens coded under the model's predictions."""


def run_options(command: Callable) -> Callable:
    """The options compress and decompress share: model, overwrite, quiet, threads."""
    for option in reversed(
        [
            click.option(
                "--model",
                "model_dir",
                metavar="DIR",
                help="Model bundle directory (default: the shipped one).",
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


@cli.command()
@click.argument("inputs", nargs=-1, required=True)
@click.option("-o", "--output", help="Output stream ('-' for stdout). Default: INPUT.igpt.")
@click.option("-c", "--stdout", "to_stdout", is_flag=True, help="Write the stream to stdout.")
@click.option(
    "--size",
    type=click.IntRange(1, 32),
    default=32,
    show_default=True,
    help="Side N of the coded N x N image.",
)
@run_options
@reports_errors
def compress(
    inputs: tuple[str, ...],
    output: str | None,
    to_stdout: bool,
    size: int,
    model_dir: str | None,
    force: bool,
    quiet: bool,
    threads: int | None,
) -> None:
    """Compress INPUT images (any format Pillow reads; '-' for stdin) into one stream."""
    if inputs.count(STDIO) > 1:
        raise click.UsageError("'-' (stdin) may be given only once")
    if to_stdout:
        if output not in (None, STDIO):
            raise click.UsageError("-c/--stdout and -o name two different outputs")
        output = STDIO
    if output is None:
        if len(inputs) > 1:
            raise click.UsageError("several inputs go into one stream: name it with -o OUT")
        output = STDIO if inputs[0] == STDIO else inputs[0] + SUFFIX
    target = None if output == STDIO else Path(output)
    if target is None:
        stdout = _stdout_binary(force)
    else:
        _check_target(target, force)

    from codec import api
    from codec.images import load_image

    images = [
        load_image(_read_input(STDIO), name="<stdin>") if item == STDIO else item for item in inputs
    ]
    bar = ProgressBar.for_stderr("compressing", quiet)
    try:
        kwargs = {"model": model_dir, "size": size, "threads": threads, "progress": bar}
        if target is None:
            buffer = io.BytesIO()  # whole stream first: a failure writes nothing
            summary = api.compress_to(buffer, images, **kwargs)
            stdout.write(buffer.getvalue())
            stdout.flush()
        else:
            with atomic_write(target, force) as handle:
                summary = api.compress_to(handle, images, **kwargs)
    except ValueError as exc:  # a size the model has no positions for
        raise Failure(str(exc)) from exc
    finally:
        bar.close()
    if not quiet:
        click.echo(_compress_summary(output if target else "<stdout>", summary), err=True)


@cli.command()
@click.argument("input_name", metavar="INPUT")
@click.option(
    "-o",
    "--output",
    help="PNG file, or a directory for several images ('-' for stdout). "
    "Default: INPUT without .igpt, as .png (numbered _000, _001, ... for several).",
)
@click.option("-c", "--stdout", "to_stdout", is_flag=True, help="Write the PNG to stdout.")
@click.option(
    "--original-size", is_flag=True, help="Scale back (bilinear) to the original dimensions."
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
    """Decompress a stream (INPUT, or '-' for stdin) into PNG images."""
    from format.container import unpack_stream

    if to_stdout:
        if output not in (None, STDIO):
            raise click.UsageError("-c/--stdout and -o name two different outputs")
        output = STDIO
    records = unpack_stream(_read_input(input_name))
    targets = _decode_targets(input_name, output, len(records))
    if targets is None:
        stdout = _stdout_binary(force)
    else:
        for target in targets:
            _check_target(target, force, new_dir_ok=len(targets) > 1)

    from codec import api

    bar = ProgressBar.for_stderr("decompressing", quiet)
    try:
        decoded = api.decode_records(records, model=model_dir, threads=threads, progress=bar)
    finally:
        bar.close()
    pictures = [_picture(item, original_size) for item in decoded]
    if targets is None:
        stdout.write(pictures[0])
        stdout.flush()
    else:
        _write_all(targets, pictures, force)
    if not quiet:
        where = "<stdout>" if targets is None else _describe(targets)
        side = decoded[0].side
        count = f"{len(decoded)} image" + ("s" if len(decoded) != 1 else "")
        click.echo(f"{input_name}: {count} ({side}x{side} coded) -> {where}", err=True)


def _decode_targets(input_name: str, output: str | None, count: int) -> list[Path] | None:
    """Output paths, one per record; None for stdout."""
    if output == STDIO or (output is None and input_name == STDIO and count == 1):
        if count > 1:
            raise click.UsageError(f"the stream holds {count} images: use -o DIR, not stdout")
        return None
    if output is None and input_name == STDIO:
        raise click.UsageError(f"the stream holds {count} images: name a directory with -o DIR")
    stem = _stem(input_name)
    if output is None:
        base = Path(input_name).parent
        if count == 1:
            return [base / f"{stem}.png"]
        return [base / f"{stem}_{i:03d}.png" for i in range(count)]
    path = Path(output)
    if count == 1:
        return [path / f"{stem}.png" if path.is_dir() else path]
    if path.suffix.lower() == ".png" and not path.is_dir():
        return [path.with_name(f"{path.stem}_{i:03d}.png") for i in range(count)]
    return [path / f"{stem}_{i:03d}.png" for i in range(count)]


def _stem(input_name: str) -> str:
    """photo.jpg.igpt -> photo; stdin -> image."""
    if input_name == STDIO:
        return "image"
    name = Path(input_name).name
    name = name.removesuffix(SUFFIX)
    return Path(name).stem or "image"


def _picture(item: DecodedImage, original_size: bool) -> bytes:
    image = item.to_original_size() if original_size else item.image
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _write_all(targets: list[Path], pictures: list[bytes], force: bool) -> None:
    """Every file complete before any is renamed into place."""
    with contextlib.ExitStack() as stack:
        for target in targets:
            target.parent.mkdir(parents=True, exist_ok=True)
        for target, picture in zip(targets, pictures, strict=True):
            stack.enter_context(atomic_write(target, force)).write(picture)


def _describe(targets: list[Path]) -> str:
    if len(targets) == 1:
        return str(targets[0])
    return f"{targets[0]} .. {targets[-1].name}"


@cli.command()
@click.argument("input_name", metavar="INPUT")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@reports_errors
def info(input_name: str, as_json: bool) -> None:
    """Describe a stream (INPUT, or '-' for stdin) without loading any model."""
    from format.container import VERSION, unpack_stream

    data = _read_input(input_name)
    records = unpack_stream(data)
    rows = [_record_info(index, record) for index, record in enumerate(records)]
    if as_json:
        report = {
            "file": input_name,
            "format_version": VERSION,
            "stream_bytes": len(data),
            "records": rows,
        }
        click.echo(json.dumps(report, indent=2))
        return
    click.echo(
        f"{input_name}: IGP format version {VERSION}, {len(rows)} record"
        f"{'s' if len(rows) != 1 else ''}, {len(data)} bytes"
    )
    for row in rows:
        click.echo(
            f"  #{row['index']}: {row['width']}x{row['height']} {row['mode']} -> "
            f"{row['side']}x{row['side']}, {row['tokens']} tokens, "
            f"{row['payload_bytes']} payload bytes, {row['bits_per_token']:.3f} bits/token, "
            f"model {row['fingerprint']}"
        )


def _record_info(index: int, record: Any) -> dict[str, Any]:
    head = record.header
    bits = 8 * len(record.payload) - record.padding_bits if record.payload else 0
    return {
        "index": index,
        "kind": "thumbnail",
        "width": head.width,
        "height": head.height,
        "mode": head.mode,
        "side": head.side,
        "tokens": head.token_count,
        "payload_bytes": len(record.payload),
        "padding_bits": record.padding_bits,
        "bits_per_token": bits / head.token_count,
        "freq_bits": head.freq_bits,
        "batch_size": head.batch_size,
        "batch_index": head.batch_index,
        "fingerprint": head.fingerprint.hex(),
        "token_crc": f"{record.token_crc:08x}",
    }


@cli.command("export")
@click.argument("source")
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--palette",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="512x3 colour clusters (.npy or .json) when SOURCE does not carry them.",
)
@click.option("--quantize", type=click.Choice(["int8"]), help="Also quantize the weights.")
@click.option("-f", "--force", is_flag=True, help="Replace an existing bundle.")
@click.option("-q", "--quiet", is_flag=True, help="No progress messages.")
@reports_errors
def export_command(
    source: str, out_dir: Path, palette: Path | None, quantize: str | None, force: bool, quiet: bool
) -> None:
    """Export an ImageGPT checkpoint (hub id or directory) to a model bundle."""
    try:
        from export.onnx_export import export_bundle
    except ImportError as exc:
        if (exc.name or "").split(".")[0] in EXPORT_DEPS:
            raise Failure(EXPORT_HINT) from exc
        raise Failure(f"cannot load the exporter: {exc}") from exc
    if not quiet:
        logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    manifest = export_bundle(source, out_dir, palette=palette, quantize=quantize, force=force)
    if not quiet:
        click.echo(f"{out_dir}: bundle fingerprint {manifest.get('fingerprint')}", err=True)


def main() -> None:
    """Console-script entry point."""
    cli()


if __name__ == "__main__":
    main()
