"""`igpt-codec dataset ...`: image collections as sharded datasets (docs/scale.md).

    dataset compress SRC OUT_DIR      Ray Data: a directory tree (or Parquet) -> shards + index
    dataset decompress DIR OUT_DIR    Ray Data: every image back, as PNG or tokens (.npy)
    dataset get DIR KEY [-o FILE]     one image by key: reads only its record, no Ray

Ray is imported only inside `compress` and `decompress` (the `scale` extra), so the
codec's own commands, and `dataset get`, run without it; onnxruntime is imported only
when a model runs; torch never. Errors are one line and a non-zero exit, as in
every command (`igpt_codec.cli.common.reports_errors`, shared); a failed job leaves no output
directory (everything is written to a hidden staging directory renamed at the end).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import click

from igpt_codec.cli.common import install_signal_handlers, reports_errors
from igpt_codec.format.errors import CodecError


class DatasetUsageError(CodecError):
    """A problem the dataset commands find themselves (exit 1)."""


def _cluster_options(command: Callable) -> Callable:
    """Where Ray runs and how many actors code: shared by compress and decompress."""
    for option in reversed(
        [
            click.option(
                "--address",
                metavar="ADDR",
                help="An existing Ray cluster ('auto', 'HOST:6379', 'ray://HOST:10001'). "
                "Default: start a local Ray on this machine and stop it at the end.",
            ),
            click.option(
                "--actors",
                type=click.IntRange(min=1),
                default=2,
                show_default=True,
                help="Actors in the pool; each holds one onnxruntime session and 1 CPU.",
            ),
            click.option(
                "--num-cpus",
                type=click.IntRange(min=1),
                help="CPUs of the local Ray (default: --actors). Ignored with --address.",
            ),
            click.option(
                "--threads",
                type=click.IntRange(min=1),
                default=1,
                show_default=True,
                help="onnxruntime intra-op threads per actor.",
            ),
            click.option(
                "--model",
                "model_dir",
                metavar="DIR",
                help="Model bundle directory (on every node); default: the shipped model.",
            ),
            click.option(
                "--retries",
                type=click.IntRange(min=0),
                help="Actor restarts and task retries after an actor dies (default: 3; raise "
                "it on preemptible clusters). A bad input is skipped, never retried.",
            ),
            click.option(
                "-f", "--force", is_flag=True, help="Replace an existing, non-empty OUT_DIR."
            ),
            click.option("-q", "--quiet", is_flag=True, help="No Ray progress, no summary."),
        ]
    ):
        command = option(command)
    return command


def _needs_scale(exc: ImportError) -> DatasetUsageError:
    """The one-line error for a plain install, which lacks the `scale` extra (Ray)."""
    return DatasetUsageError(
        f"dataset commands need the scale extra (pip install 'igpt-codec[scale]'): {exc}"
    )


@click.group("dataset", context_settings={"help_option_names": ["-h", "--help"]})
def dataset() -> None:
    """Image collections as sharded streams plus an index, on Ray Data.

    compress/decompress need the scale extra (pip install 'igpt-codec[scale]'); get
    needs only the codec.
    """


@dataset.command("compress")
@click.argument("source")
@click.argument("out_dir")
@click.option(
    "--size",
    type=click.IntRange(1, 32),
    default=32,
    show_default=True,
    help="Side N of the coded N x N palette thumbnail.",
)
@click.option(
    "--shard-images",
    type=click.IntRange(min=1),
    default=256,
    show_default=True,
    help="Images per shard (one batch of one actor).",
)
@click.option(
    "--on-error",
    type=click.Choice(["skip", "fail"]),
    default="skip",
    show_default=True,
    help="An unreadable image: skip it (reported with its key) or fail the job.",
)
@click.option(
    "--id-column",
    metavar="NAME",
    help="SOURCE is a Parquet file or directory: the column holding each image's key.",
)
@click.option(
    "--bytes-column",
    metavar="NAME",
    default="image",
    show_default=True,
    help="With --id-column: the column holding the encoded image file bytes.",
)
@_cluster_options
@reports_errors
def compress_command(
    source: str,
    out_dir: str,
    size: int,
    shard_images: int,
    on_error: str,
    id_column: str | None,
    bytes_column: str,
    address: str | None,
    actors: int,
    num_cpus: int | None,
    threads: int,
    model_dir: str | None,
    retries: int | None,
    force: bool,
    quiet: bool,
) -> None:
    """Compress every image under SOURCE into OUT_DIR: shards/*.igpt, index.jsonl,
    index.parquet and dataset.json.

    SOURCE is a directory (key = path relative to it) or, with --id-column, a Parquet
    table. Each image is stored as its N x N palette thumbnail, losslessly.
    """
    try:
        from igpt_codec.datasets.runner import compress_dataset
    except ImportError as exc:
        raise _needs_scale(exc) from exc

    report = compress_dataset(
        source,
        out_dir,
        size=size,
        shard_images=shard_images,
        actors=actors,
        threads=threads,
        model=model_dir,
        on_error=on_error,
        address=address,
        num_cpus=num_cpus,
        id_column=id_column,
        bytes_column=bytes_column,
        retries=retries,
        force=force,
        quiet=quiet,
    )
    for key, reason in report.skipped:
        click.echo(f"skipped {key}: {reason}", err=True)
    if not quiet:
        click.echo(
            f"{out_dir}: {report.images} images in {report.shards} shards, "
            f"{report.tokens} tokens, {report.stream_bytes} bytes "
            f"({report.bits_per_token:.3f} bits/token), {len(report.skipped)} skipped, "
            f"{report.seconds:.1f} s ({report.images / report.seconds:.1f} images/s)",
            err=True,
        )


@dataset.command("decompress")
@click.argument("source")
@click.argument("out_dir")
@click.option(
    "--format",
    "output",
    type=click.Choice(["png", "npy"]),
    default="png",
    show_default=True,
    help="png: the thumbnail image; npy: its tokens (uint16, side x side).",
)
@_cluster_options
@reports_errors
def decompress_command(
    source: str,
    out_dir: str,
    output: str,
    address: str | None,
    actors: int,
    num_cpus: int | None,
    threads: int,
    model_dir: str | None,
    retries: int | None,
    force: bool,
    quiet: bool,
) -> None:
    """Decode every image of the dataset SOURCE into OUT_DIR, one file per key (its
    directories kept, its suffix replaced by .png or .npy)."""
    try:
        from igpt_codec.datasets.runner import decompress_dataset
    except ImportError as exc:
        raise _needs_scale(exc) from exc

    report = decompress_dataset(
        source,
        out_dir,
        output=output,
        actors=actors,
        threads=threads,
        model=model_dir,
        address=address,
        num_cpus=num_cpus,
        retries=retries,
        force=force,
        quiet=quiet,
    )
    if not quiet:
        click.echo(
            f"{out_dir}: {report.images} images from {report.shards} shards, "
            f"{report.tokens} tokens, {report.seconds:.1f} s "
            f"({report.images / report.seconds:.1f} images/s)",
            err=True,
        )


@dataset.command("get")
@click.argument("source")
@click.argument("key")
@click.option(
    "-o",
    "--output",
    help="The PNG to write ('-' for stdout). Default: the key's base name as .png.",
)
@click.option("-c", "--stdout", "to_stdout", is_flag=True, help="Write the PNG to stdout.")
@click.option(
    "--model",
    "model_dir",
    metavar="DIR",
    help="Model bundle directory tried first (then the search path, by fingerprint).",
)
@click.option("--threads", type=click.IntRange(min=1), help="onnxruntime intra-op threads.")
@click.option("--original-size", is_flag=True, help="Upscale to the original's size.")
@click.option("-f", "--force", is_flag=True, help="Overwrite an existing file.")
@click.option("-q", "--quiet", is_flag=True, help="No summary line.")
@reports_errors
def get_command(
    source: str,
    key: str,
    output: str | None,
    to_stdout: bool,
    model_dir: str | None,
    threads: int | None,
    original_size: bool,
    force: bool,
    quiet: bool,
) -> None:
    """Decode the image stored under KEY in the dataset SOURCE.

    Reads the index, then only that record's bytes from its shard (checked alone with
    the chained CRC the index stores); no Ray. A summary line goes to stderr (-q: none).
    """
    try:
        _get(source, key, output, to_stdout, model_dir, threads, original_size, force, quiet)
    except (MemoryError, RecursionError) as exc:  # never a traceback, whatever the input
        raise DatasetUsageError(f"{source}: {key!r}: {type(exc).__name__} reading it") from None


def _default_output(key: str) -> str:
    """The key's base name as .png; a key with no base name ('/', '.') needs -o."""
    name = key.replace("\\", "/").rstrip("/").rpartition("/")[2]
    if name in ("", ".", ".."):
        raise DatasetUsageError(f"key {key!r} has no file name to write to: give -o FILE or -c")
    return str(Path(name).with_suffix(".png")) if Path(name).suffix else f"{name}.png"


def _get(
    source: str,
    key: str,
    output: str | None,
    to_stdout: bool,
    model_dir: str | None,
    threads: int | None,
    original_size: bool,
    force: bool,
    quiet: bool,
) -> None:
    import io

    from igpt_codec.cli.outputs import OutputSet
    from igpt_codec.datasets.shards import decode_entry, find_entry

    if to_stdout and output not in (None, "-"):
        raise DatasetUsageError("-c and -o FILE exclude each other")
    entry = find_entry(source, key)
    if to_stdout:
        output = "-"
    elif output is None:
        output = _default_output(key)
    target = None if output == "-" else Path(output)
    outputs = OutputSet(force=force)
    if target is not None:
        outputs.check(target)
    if original_size:
        from PIL import Image

        # The size comes from the record: a few bytes of a hostile dataset must not buy
        # a 65535 x 65535 upscale (12.9 GB). Pillow's own bomb limit is the bound.
        limit = Image.MAX_IMAGE_PIXELS
        if limit and entry.width * entry.height > limit:
            raise DatasetUsageError(
                f"{key}: --original-size of {entry.width}x{entry.height} exceeds Pillow's "
                f"limit of {limit} pixels (PIL.Image.MAX_IMAGE_PIXELS)"
            )
    image = decode_entry(source, entry, model=model_dir, threads=threads)
    picture = image.to_original_size() if original_size else image.image
    buffer = io.BytesIO()
    picture.save(buffer, "PNG")
    if target is None:
        stream = sys.stdout.buffer
        if stream.isatty() and not force:
            raise DatasetUsageError("refusing to write binary data to a terminal (use -f)")
        stream.write(buffer.getvalue())
        stream.flush()
    else:
        with outputs:
            outputs.add(target, buffer.getvalue())
    if not quiet:
        click.echo(
            f"{key}: {picture.width}x{picture.height} from the {entry.side}x{entry.side} "
            f"thumbnail of a {entry.width}x{entry.height} {entry.mode} image "
            f"({entry.length} bytes of {entry.shard}) -> {'stdout' if target is None else target}",
            err=True,
        )


def main() -> None:
    """`python -m igpt_codec.cli.dataset ...`: the group on its own, with the main CLI's signal
    handling (SIGTERM/SIGHUP unwind like Ctrl-C, so staging directories are removed)."""
    install_signal_handlers()
    dataset(prog_name="python -m igpt_codec.cli.dataset")


if __name__ == "__main__":
    main()
