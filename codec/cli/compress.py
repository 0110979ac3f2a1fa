"""`igpt-codec compress`: images -> one .igpt per input, or one stream (-o / -c)."""

from __future__ import annotations

import io
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from igpt_codec.cli.common import (
    DEFAULT_SIZE,
    STDIO,
    SUFFIX,
    Failure,
    ProgressBar,
    expand_inputs,
    plural,
    reports_errors,
    run_options,
    stdout_binary,
    write_stdout,
)
from igpt_codec.cli.outputs import OutputSet, is_dir_spelling

if TYPE_CHECKING:
    from igpt_codec.api import CompressSummary

MAX_CHAINS = 256
"""Most chains --chains takes: far past any decoder's cores (the byte cost grows with them:
16 chains already cost up to 3.8% on photos), and at 32 pixels a window column, as many
chains as an 8192-pixel-wide photo has columns."""


def compress_summary(target: str, summary: CompressSummary, side: int | None) -> str:
    """The one summary line: bits/token is always file bytes x 8 / tokens; side None
    for full-resolution images (a token is a pixel)."""
    if side is None:
        return (
            f"{target}: {plural(summary.images, 'image')} coded at full resolution, "
            f"{plural(summary.tokens, 'pixel')} (one token each), {summary.stream_bytes} bytes: "
            f"{summary.bits_per_token:.3f} bits/token (file), ratio {summary.ratio:.2f}:1 to "
            f"24-bit RGB of the palette image; payload {summary.payload_bits_per_token:.3f}"
            f"{_ideal_or_stored(summary)}"
        )
    return (
        f"{target}: {plural(summary.images, 'image')} coded as {side}x{side} palette "
        f"{'thumbnail' if summary.images == 1 else 'thumbnails'}, "
        f"{plural(summary.tokens, 'token')}, {summary.stream_bytes} bytes: "
        f"{summary.bits_per_token:.3f} bits/token (file), ratio {summary.ratio:.2f}:1 to "
        f"24-bit RGB of the thumbnail; payload {summary.payload_bits_per_token:.3f}, "
        f"model ideal {summary.ideal_bits_per_token:.3f} bits/token"
    )


def _ideal_or_stored(summary: CompressSummary) -> str:
    """', model ideal X bits/token' for what the model coded; for an image kept as a PNG
    or WebP file (record kinds 5 and 6, when smaller) what it is stored as instead: the
    model's ideal is not what such a file costs."""
    stored = summary.stored_as
    if not stored:
        return f", model ideal {summary.ideal_bits_per_token:.3f} bits/token"
    codecs = " or ".join(dict.fromkeys(stored))
    if len(stored) == summary.images:
        what = "stored as" if len(stored) == 1 else "all stored as"
        return f" bits/token, {what} {codecs} (smaller than the model's coding)"
    return (
        f", model ideal {summary.ideal_bits_per_token:.3f} bits/token over the "
        f"{plural(summary.images - len(stored), 'image')} the model coded; "
        f"{len(stored)} stored as {codecs} (smaller than the model's coding)"
    )


def _is_image_name(path: Path) -> bool:
    """A file -r picks up: an extension Pillow opens, and not a stream."""
    from PIL import Image

    return path.suffix.lower() in Image.registered_extensions() and path.suffix != SUFFIX


def _plan(
    inputs: tuple[str, ...], output: str | None, to_stdout: bool
) -> tuple[str | None, list[Path]]:
    """Where the stream(s) go: (None, one INPUT.igpt each), ('-', []) or (OUT, [OUT]).

    Every usage error is raised here, before any file is opened or any image read.
    """
    if not inputs:
        raise click.UsageError("no input: the directories given hold no image file")
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
    if output is None:
        return None, [Path(item + SUFFIX) for item in inputs]
    if output == STDIO:
        return STDIO, []
    if is_dir_spelling(output) or Path(output).is_dir():
        raise Failure(f"{output}: -o names the output stream, not a directory")
    return output, [Path(output)]


@click.command()
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
    help="Code each photo at its own size instead of a thumbnail: every pixel is mapped to "
    "the 512-colour palette and that palette image comes back pixel for pixel (not the "
    "photo: colours change, a grey photo comes back in the palette's few greys). About 1 "
    "minute per megapixel to compress and 2 to decompress on two cores.",
)
@click.option(
    "--chains",
    type=click.IntRange(1, MAX_CHAINS),
    default=None,
    help="With --full: the independent chains each image is cut into (decoders run one "
    "chain per worker thread, so write 8 or 16 for 8- or 16-core decoders). More chains "
    "cost bytes: 4 about +0.1%, 8 +0.1-1.4%, 16 +0.5-3.8% on photos.  [default: 2]",
)
@click.option(
    "--names",
    is_flag=True,
    help="Store each input's file name (no directories); decompress names outputs after it.",
)
@click.option(
    "-r",
    "--recursive",
    is_flag=True,
    help="An INPUT directory means every image file under it (by extension; not .igpt).",
)
@run_options
@reports_errors
def compress(
    inputs: tuple[str, ...],
    output: str | None,
    to_stdout: bool,
    size: int | None,
    full: bool,
    chains: int | None,
    names: bool,
    recursive: bool,
    model_dir: str | None,
    force: bool,
    quiet: bool,
    verbose: bool,
    keep: bool,
    threads: int | None,
) -> None:
    """Compress INPUT images (any format Pillow reads; '-' for stdin).

    Default: each image is resized to an N x N palette thumbnail (--size, ImageGPT's
    512 colours), and decompress gives that thumbnail back token for token. --full:
    the photo at its own size with every pixel mapped to the palette; decompress gives
    that palette image back pixel for pixel. The photo itself is not kept. Without
    -o each INPUT gets its own INPUT.igpt beside it (inputs are never removed); -o OUT
    or -c puts every image into one stream. Only the first frame of an animation is
    coded (said on stderr).
    """
    del keep  # inputs are never removed
    quiet = quiet and not verbose
    if full and size is not None:
        raise click.UsageError("--full codes the photo at its own size: drop --size")
    if chains is not None and not full:
        raise click.UsageError("--chains sets the layout of --full images: add --full")
    if size is None and not full:
        size = DEFAULT_SIZE
    summary_side = None if full else size
    inputs = tuple(expand_inputs(inputs, recursive, _is_image_name))
    output, targets = _plan(inputs, output, to_stdout)
    outputs = OutputSet(force=force, inputs=[Path(item) for item in inputs if item != STDIO])
    for target in targets:
        outputs.check(target)
    stdout = stdout_binary(force) if output == STDIO else None

    from igpt_codec import api
    from igpt_codec.core.images import load_image

    images = [
        load_image(sys.stdin.buffer.read(), name="<stdin>") if item == STDIO else item
        for item in inputs
    ]
    notes = [] if quiet else [_frames_note(item) for item in inputs if item != STDIO]
    bar = ProgressBar.for_stderr("compressing", quiet)
    kwargs = {
        "model": model_dir,
        "size": size,
        "threads": threads,
        "progress": bar,
        "names": names,
        "full": full,
        "chains": chains,
    }
    lines = []
    try:
        with outputs:
            if output is None:
                coded = api.compress_each(images, **kwargs)
                for target, (data, summary) in zip(targets, coded, strict=True):
                    outputs.add(target, data)
                    lines.append(compress_summary(str(target), summary, summary_side))
            elif stdout is not None:
                buffer = io.BytesIO()  # whole stream first: a failure writes nothing
                summary = api.compress_to(buffer, images, **kwargs)
                write_stdout(stdout, buffer.getvalue())
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
        for line in [*filter(None, notes), *lines]:
            click.echo(line, err=True)


def _frames_note(path: str) -> str | None:
    """A line saying that only the first frame of an animation is coded, or None."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            frames = getattr(image, "n_frames", 1)
    except Exception:  # load_image has already said what is wrong, if anything
        return None
    if frames <= 1:
        return None
    return (
        f"{path}: {frames} frames: only the first is coded (the Pillow plugin's "
        "save_all=True codes every frame)"
    )
