"""`igpt-codec decompress`: a stream -> PNG files (or one PNG on stdout)."""

from __future__ import annotations

import io
import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from igpt_codec.cli.common import (
    STDIO,
    SUFFIX,
    Failure,
    NamedErrors,
    ProgressBar,
    label,
    open_input,
    plural,
    reports_errors,
    run_options,
    stdout_binary,
)
from igpt_codec.cli.outputs import OutputSet, is_dir_spelling

if TYPE_CHECKING:
    from igpt_codec.api import DecodedImage


def stem(input_name: str) -> str:
    """photo.jpg.igpt -> photo; x.igpt -> x; stdin -> image."""
    if input_name == STDIO:
        return "image"
    name = Path(input_name).name.removesuffix(SUFFIX)
    return Path(name).stem or "image"


@dataclass
class OutputNames:
    """Where decoded image i goes: the whole naming rule in one place.

    `single` is the one file for a stream of one image; several images go to
    `directory / pattern.format(i)`, or after their stored names (`--names`), made
    unique. `create_dirs`: the directory may be created.
    """

    single: Path
    directory: Path
    pattern: str
    several: bool
    create_dirs: bool
    _used: set[Path] = field(default_factory=set)

    @classmethod
    def plan(cls, input_name: str, output: str | None, several: bool) -> OutputNames:
        """`-o` ending in a path separator, or naming an existing directory, is always a
        directory. Otherwise one image goes to the named file; several go to numbered
        PNGs beside it when it ends in .png, or into a directory of that name."""
        base = stem(input_name)
        numbered = f"{base}_{{:03d}}.png"
        if output is None:
            parent = Path(input_name).parent
            return cls(parent / f"{base}.png", parent, numbered, several, False)
        path = Path(output)
        if is_dir_spelling(output) or path.is_dir():
            return cls(path / f"{base}.png", path, numbered, several, True)
        if path.suffix.lower() == ".png":
            return cls(path, path.parent, f"{path.stem}_{{:03d}}.png", several, False)
        return cls(path, path, numbered, several, several)

    def target(self, index: int, name: str | None = None) -> Path:
        """Image `index`: the single file, its stored name (unique), or its number."""
        if not self.several:
            return self.single
        if name is None:
            return self.directory / self.pattern.format(index)
        base = Path(name).stem or "image"
        path = self.directory / f"{base}.png"
        suffix = 1
        while path in self._used:
            path = self.directory / f"{base}_{suffix}.png"
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


@click.command()
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
    name = label(input_name)
    to_pipe = output == STDIO or (output is None and input_name == STDIO)
    outputs = OutputSet(force=force, inputs=[] if input_name == STDIO else [Path(input_name)])
    stdout = stdout_binary(force) if to_pipe else None

    from igpt_codec import api
    from igpt_codec.core.files import regular_file_size
    from igpt_codec.format import iter_records

    bar = ProgressBar.for_stderr("decompressing", quiet)
    count = 0
    side = 0
    full = False
    try:
        with NamedErrors(name), open_input(input_name) as handle:
            records = iter_records(handle, length=regular_file_size(handle))
            stream, several = _peek(records, name)
            if several and (to_pipe or (output is None and input_name == STDIO)):
                raise click.UsageError(
                    f"{name} holds several images: name a directory with -o DIR/"
                )
            names = None if stdout is not None else OutputNames.plan(input_name, output, several)
            if names is not None:
                outputs.check(names.target(0), create_dirs=names.create_dirs)
            with outputs:
                decoded = api.iter_decode(stream, model=model_dir, threads=threads, progress=bar)
                for index, item in enumerate(decoded):
                    picture = _picture(item, original_size)
                    side = item.side
                    full = full or item.full
                    count += 1
                    if names is None:
                        assert stdout is not None
                        stdout.write(picture)
                        stdout.flush()
                    else:
                        target = names.target(index, item.name)
                        outputs.add(target, picture, create_dirs=names.create_dirs)
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
        click.echo(f"{name}: {plural(count, 'image')} ({what}) -> {where}", err=True)


def _picture(item: DecodedImage, original_size: bool) -> bytes:
    image = item.to_original_size() if original_size else item.image
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _describe(targets: list[Path]) -> str:
    if len(targets) == 1:
        return str(targets[0])
    return f"{targets[0]} .. {targets[-1].name}"
