"""`igpt-codec decompress`: streams -> PNG files (or token .npy files, or one PNG on stdout).

Default names never replace the photo that was compressed: a decoded image is lossy
with respect to that photo, so where gzip restores `p.png` from `p.png.gz`, this
writes `p.png.igpt.png`. Every name decompress makes itself ends in `.igpt.png`
(`.igpt.npy` with --npy), which a compressed photo's name cannot be (see OutputNames).
"""

from __future__ import annotations

import functools
import io
import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import click

from igpt_codec.cli.common import (
    STDIO,
    SUFFIX,
    Failure,
    NamedErrors,
    ProgressBar,
    expand_inputs,
    label,
    open_input,
    plural,
    reports_errors,
    run_options,
    stdout_binary,
    write_stdout,
)
from igpt_codec.cli.limits import limit_options
from igpt_codec.cli.outputs import OutputSet, is_dir_spelling, is_special

if TYPE_CHECKING:
    from igpt_codec.api import DecodedImage
    from igpt_codec.pipelines.limits import DecodeLimits

MARK = ".igpt"
"""Put before the extension of every name decompress makes up."""


def base_name(input_name: str) -> str:
    """The input's file name without .igpt: photo.jpg.igpt -> photo.jpg; stdin -> image."""
    if input_name == STDIO:
        return "image"
    return Path(input_name).name.removesuffix(SUFFIX) or "image"


@dataclass
class OutputNames:
    """Where decoded image i of one input goes: the whole naming rule in one place.

    Made-up names (no -o, or -o DIR/) are `BASE.igpt.EXT` for a stream of one image,
    `BASE_000.igpt.EXT`, ... for several, or `STORED_STEM.igpt.EXT` after a name the
    stream stores (compress --names), made unique with _1, _2. BASE is the input without
    .igpt, so `p.png.igpt` gives `p.png.igpt.png`: never `p.png`, nor any stored name.
    -o FILE is used as given for one image; several go to FILE_000.EXT, ... beside it
    when FILE ends in .EXT, or into a directory FILE.
    """

    single: Path
    directory: Path
    pattern: str
    several: bool
    create_dirs: bool
    ext: str
    _used: set[Path] = field(default_factory=set)

    @classmethod
    def plan(
        cls, input_name: str, output: str | None, several: bool, ext: str = ".png"
    ) -> OutputNames:
        """`-o` ending in a path separator, or naming an existing directory, is always a
        directory."""
        base = base_name(input_name)
        single = f"{base}{MARK}{ext}"
        numbered = f"{base}_{{:03d}}{MARK}{ext}"
        if output is None:
            parent = Path(input_name).parent
            return cls(parent / single, parent, numbered, several, False, ext)
        path = Path(output)
        if is_dir_spelling(output) or path.is_dir():
            return cls(path / single, path, numbered, several, True, ext)
        if path.suffix.lower() == ext:
            return cls(path, path.parent, f"{path.stem}_{{:03d}}{ext}", several, False, ext)
        return cls(path, path, numbered, several, several, ext)

    def target(self, index: int, name: str | None = None) -> Path:
        """Image `index`: the single file, its stored name (unique), or its number."""
        if not self.several:
            return self.single
        if name is None:
            return self.directory / self.pattern.format(index)
        stem = Path(name).stem or "image"
        path = self.directory / f"{stem}{MARK}{self.ext}"
        suffix = 1
        while path in self._used:
            path = self.directory / f"{stem}_{suffix}{MARK}{self.ext}"
            suffix += 1
        self._used.add(path)
        return path


def _peek(records: Iterator[Any], name: str) -> tuple[Iterator[Any], bool]:
    """The same records, and whether there are several (the first two are read ahead)."""
    first = next(records, None)
    if first is None:
        raise Failure(
            f"{name}: the stream holds no image this version can decode (only records it skips)"
        )
    second = next(records, None)
    ahead = [first] if second is None else [first, second]
    return itertools.chain(ahead, records), second is not None


def _stream_tokens(input_name: str, limits: DecodeLimits | None = None) -> int | None:
    """Tokens of every image in a regular file, read without decoding (for the progress
    bar's total and ETA); None for pipes, where the stream can be read only once. A
    header the limits refuse stops the count before its segments are read."""
    if input_name == STDIO or not Path(input_name).is_file():
        return None
    from igpt_codec.core.files import regular_file_size
    from igpt_codec.format import CodecError
    from igpt_codec.pipelines.limits import DecodeLimits

    limits = limits or DecodeLimits()
    try:
        with open(input_name, "rb") as handle:
            records = _records(handle, regular_file_size(handle), limits)
            return sum(record.header.token_count for record in records)
    except (OSError, CodecError):
        return None  # reported by the decoding pass, with the input's name


def _records(handle: BinaryIO, length: int | None, limits: DecodeLimits) -> Iterator[Any]:
    """The stream's records, each full-resolution header checked against `limits` as it
    is parsed, before its segment records are read (as the API's readers do): a header
    asking for millions of segments is refused after reading it alone (issue 26)."""
    from igpt_codec.format import iter_records
    from igpt_codec.pipelines.limits import check_image_header

    check = functools.partial(check_image_header, limits=limits)
    return iter_records(handle, length=length, on_image=check)


class Kinds:
    """What a command decoded, in the order first seen: '8x8 palette thumbnail',
    'full-resolution palette image' -> count (a stream may mix sides and kinds)."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def add(self, item: DecodedImage) -> None:
        kind = (
            "full-resolution palette image"
            if item.full
            else f"{item.side}x{item.side} palette thumbnail"
        )
        self.counts[kind] = self.counts.get(kind, 0) + 1

    @property
    def images(self) -> int:
        return sum(self.counts.values())

    @property
    def full(self) -> bool:
        return any(kind.startswith("full") for kind in self.counts)

    def describe(self) -> str:
        """'8x8 palette thumbnails' for one kind; '2 8x8 palette thumbnails, 1
        full-resolution palette image' for several."""
        if len(self.counts) == 1:
            ((kind, count),) = self.counts.items()
            return kind + ("s" if count != 1 else "")
        return ", ".join(plural(count, kind) for kind, count in self.counts.items())


def _single_sink(output: str | None, inputs: list[str]) -> bool:
    """Output that takes one PNG only: stdout, or a FIFO or device named by -o."""
    if output == STDIO or (output is None and inputs == [STDIO]):
        return True
    return output is not None and is_special(output)


def _check_usage(inputs: list[str], output: str | None, test: bool, single_sink: bool) -> None:
    """Every usage error that does not depend on what the streams hold, before any open."""
    if not inputs:
        raise click.UsageError("no input: the directories given hold no .igpt file")
    if inputs.count(STDIO) > 1:
        raise click.UsageError("'-' (stdin) may be given only once")
    if test or len(inputs) == 1:
        return
    if single_sink:
        raise click.UsageError(
            "several inputs and one output that takes a single PNG: name a directory with "
            "-o DIR/ (or test them with -t)"
        )
    if output is None and STDIO in inputs:
        raise click.UsageError("'-' among several inputs needs -o DIR/ or -t")
    if output is not None and not (is_dir_spelling(output) or Path(output).is_dir()):
        raise click.UsageError(f"several inputs: -o must name a directory ({output}/)")


@click.command()
@click.argument("inputs", metavar="INPUT...", nargs=-1, required=True)
@click.option(
    "-o",
    "--output",
    help="PNG file, or a directory (a name ending in '/' is always one; '-' for stdout). "
    "Default: INPUT.png beside INPUT with .igpt kept in the name (p.png.igpt -> "
    "p.png.igpt.png: never the photo that was compressed); several images are numbered "
    "_000, _001, ... A FIFO or device (e.g. /dev/null) is written into, without -f.",
)
@click.option("-c", "--stdout", "to_stdout", is_flag=True, help="Write the PNG to stdout.")
@click.option("-t", "--test", is_flag=True, help="Decode and check every image; write nothing.")
@click.option(
    "--npy",
    is_flag=True,
    help="Write each image's palette tokens (numpy .npy, uint16, side x side for a "
    "thumbnail, height x width for --full) instead of a PNG.",
)
@click.option(
    "-r",
    "--recursive",
    is_flag=True,
    help="An INPUT directory means every .igpt file under it.",
)
@click.option(
    "--original-size",
    is_flag=True,
    help="Scale a thumbnail back (bilinear) to the original dimensions: an approximation. "
    "Full-resolution images are already at their own size (said in the summary).",
)
@run_options
@reports_errors
@limit_options
def decompress(
    inputs: tuple[str, ...],
    output: str | None,
    to_stdout: bool,
    test: bool,
    npy: bool,
    recursive: bool,
    original_size: bool,
    model_dir: str | None,
    force: bool,
    quiet: bool,
    verbose: bool,
    keep: bool,
    threads: int | None,
    limits: DecodeLimits,
) -> None:
    """Decompress streams (INPUT..., '-' for stdin) into PNG images.

    A thumbnail stream gives back the N x N palette thumbnail that was coded, token
    for token; a --full stream the palette image at the photo's own size, pixel for
    pixel. Neither is the original photo. The model is found by the fingerprint each
    stream names (see --model). A stream with no image this version decodes is an
    error for every output form. Concatenated streams (cat a.igpt b.igpt) decode as
    one.

    The decoder refuses, from its header and before any model work, a full-resolution
    image over --max-pixels, a stream over --max-work, a decode over --max-memory, and
    layouts this encoder never writes (unless --allow-any-layout): one error line
    naming the limit to raise (docs/hardening.md).
    """
    del keep  # inputs are never removed
    quiet = quiet and not verbose
    if to_stdout:
        if output not in (None, STDIO):
            raise click.UsageError("-c/--stdout and -o name two different outputs")
        output = STDIO
    if test and output is not None:
        raise click.UsageError("-t/--test writes nothing: drop -o/-c")
    if npy and original_size:
        raise click.UsageError("--npy writes the coded tokens: --original-size does not apply")
    names = expand_inputs(inputs, recursive, lambda p: p.name.endswith(SUFFIX))
    single_sink = not test and _single_sink(output, names)
    _check_usage(names, output, test, single_sink)
    outputs = OutputSet(force=force, inputs=[Path(item) for item in names if item != STDIO])
    to_stdout = single_sink and output in (None, STDIO)
    decoder = _Decoder(
        outputs=outputs,
        output=None if test else output,
        stdout=stdout_binary(force) if to_stdout else None,
        special=Path(output) if single_sink and not to_stdout and output else None,
        test=test,
        npy=npy,
        original_size=original_size,
        model=model_dir,
        threads=threads,
        quiet=quiet,
        limits=limits,
    )
    lines = []
    with outputs:
        for input_name in names:
            lines.append(decoder.run(input_name))
    if not quiet:
        for line in lines:
            click.echo(line, err=True)


@dataclass
class _Decoder:
    """One decompress command's settings; `run` decodes one input and returns its
    summary line."""

    outputs: OutputSet
    output: str | None
    stdout: BinaryIO | None
    special: Path | None
    test: bool
    npy: bool
    original_size: bool
    model: str | None
    threads: int | None
    quiet: bool
    limits: DecodeLimits

    def run(self, input_name: str) -> str:
        from igpt_codec import api
        from igpt_codec.core.files import regular_file_size

        name = label(input_name)
        sink = self.stdout is not None or self.special is not None
        bar = ProgressBar.for_stderr("decompressing", self.quiet)
        # Read only for the bar's total.
        total = _stream_tokens(input_name, self.limits) if bar.enabled else None
        kinds = Kinds()
        targets: list[Path] = []
        try:
            with NamedErrors(name), open_input(input_name) as handle:
                records = _records(handle, regular_file_size(handle), self.limits)
                stream, several = _peek(records, name)
                if several and sink:
                    raise click.UsageError(
                        f"{name} holds several images: name a directory with -o DIR/ "
                        "(or test it with -t)"
                    )
                names = None
                if not (self.test or sink):
                    ext = ".npy" if self.npy else ".png"
                    names = OutputNames.plan(input_name, self.output, several, ext)
                    self.outputs.check(names.target(0), create_dirs=names.create_dirs)
                decoded = api.iter_decode(
                    stream,
                    model=self.model,
                    threads=self.threads,
                    progress=lambda done, known: bar(done, known or total),
                    limits=self.limits,
                )
                for index, item in enumerate(decoded):
                    kinds.add(item)
                    if self.test:
                        continue
                    data = _tokens_npy(item) if self.npy else _picture(item, self.original_size)
                    if self.stdout is not None:
                        write_stdout(self.stdout, data)
                    elif self.special is not None:
                        self.outputs.add(self.special, data)
                        targets.append(self.special)
                    else:
                        assert names is not None
                        target = names.target(index, item.name)
                        self.outputs.add(target, data, create_dirs=names.create_dirs)
                        targets.append(target)
        finally:
            bar.close()
        return self._summary(name, kinds, targets)

    def _summary(self, name: str, kinds: Kinds, targets: list[Path]) -> str:
        what = kinds.describe()
        if self.original_size and not kinds.full:
            what += ", upscaled to the original size"
        elif self.original_size:
            what += "; --original-size ignored for full-resolution images (already full size)"
        if self.test:
            return f"{name}: {plural(kinds.images, 'image')} ({what}) decoded and checked: OK"
        where = "<stdout>" if self.stdout is not None else _describe(targets)
        return f"{name}: {plural(kinds.images, 'image')} ({what}) -> {where}"


def _picture(item: DecodedImage, original_size: bool) -> bytes:
    image = item.to_original_size() if original_size else item.image
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _tokens_npy(item: DecodedImage) -> bytes:
    import numpy as np

    tokens = np.asarray(item.tokens, dtype=np.uint16)
    if not item.full:
        tokens = tokens.reshape(item.side, item.side)  # as `dataset decompress --format npy`
    buffer = io.BytesIO()
    np.save(buffer, tokens, allow_pickle=False)
    return buffer.getvalue()


def _describe(targets: list[Path]) -> str:
    if len(targets) == 1:
        return str(targets[0])
    return f"{targets[0]} .. {targets[-1].name}"
