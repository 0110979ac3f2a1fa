"""igpt-codec command line: the click group and the entry point.

Run as `igpt-codec`, `python -m igpt_codec` or `python cli.py` (the repository's entry
script); all three are `main` here. One module per command: compress, decompress,
info, bench, export_command (`export`, the only one that imports torch, lazily) and dataset;
what they share (one-line errors, exit codes, signals, progress, options) is in
`igpt_codec.cli.common`, and every output file goes through `igpt_codec.cli.outputs`.

Exit codes: 0 ok (also when the reader of stdout goes away, as with `| head`);
1 bad input, a format or model error, or a file problem (one line "error: ..." on
stderr, never a traceback); 2 usage (click's own); 128+N when stopped by signal N
(SIGINT 130, SIGTERM 143, SIGHUP 129). Every output file is written complete to a
hidden temporary file beside its target and all of them are renamed into place at
the end, so a failure or a signal leaves nothing behind, not even a directory the
command created. Input streams are read front to back as records arrive, so memory
stays bounded whatever the input's size. onnxruntime is imported only by the
commands that run a model, Ray only by `dataset compress/decompress`, and torch only
by `export`.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import MutableMapping
from typing import Any

import click

from igpt_codec.cli.common import DEFAULT_SIZE, LOSSY_NOTE, ProgressBar, install_signal_handlers

__all__ = ["DEFAULT_SIZE", "EXPORT_HINT", "LOSSY_NOTE", "ProgressBar", "cli", "main"]

COMMANDS = {
    "compress": ("igpt_codec.cli.compress", "compress"),
    "decompress": ("igpt_codec.cli.decompress", "decompress"),
    "info": ("igpt_codec.cli.info", "info"),
    "bench": ("igpt_codec.cli.bench", "bench"),
    "export": ("igpt_codec.cli.export_command", "export_command"),
    "dataset": ("igpt_codec.cli.dataset", "dataset"),
}
"""Each command's module, imported when the command runs (or help lists it): a
`decompress` process does not pay for the other commands' modules."""


def __getattr__(name: str) -> Any:
    """EXPORT_HINT, imported on first use (it lives with the `export` command)."""
    if name == "EXPORT_HINT":
        return importlib.import_module("igpt_codec.cli.export_command").EXPORT_HINT
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class _LazyGroup(click.Group):
    """A click group whose commands are imported by name, on demand."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        where = COMMANDS.get(cmd_name)
        if where is None:
            return None
        module, attribute = where
        command: click.Command = getattr(importlib.import_module(module), attribute)
        return command


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


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "-V",
    "--version",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_print_version,
    help="Package, onnxruntime and default-model versions.",
)
def cli() -> None:
    """Lossless ImageGPT codec for N x N palette thumbnails (N <= 32).

    Which mode: by default each image is resized to N x N and quantized to
    ImageGPT's 512 colours, and that thumbnail comes back token for token. With
    `compress --full` the photo keeps its size, every pixel mapped to the 512
    colours, and that palette image comes back pixel for pixel. Neither is the
    original photo, which is not kept: for your own pixels back, use PNG, WebP
    lossless or JPEG XL.
    """


def main(prog_name: str | None = None) -> None:
    """Console-script entry point (also `python -m igpt_codec` and `python cli.py`)."""
    one_blas_thread(os.environ, "numpy" in sys.modules)
    install_signal_handlers()
    try:
        cli(prog_name=prog_name)
    except SystemExit as exc:
        exit_now(exc.code)
    exit_now(0)


FULL_EXIT_VARIABLE = "IGPT_CODEC_FULL_EXIT"
"""Set (to anything but 0) to end every command with the interpreter's normal teardown."""


def exit_now(code: object) -> None:
    """End the process with `code` without the interpreter's teardown, where that is safe.

    Why: once a command is done, freeing numpy's, onnxruntime's and Pillow's modules and
    the model's session takes 20-40 ms, about a tenth of a thumbnail's compress or
    decompress (docs/speed.md, "Session 29"). Everything a command writes is complete by
    then: its outputs went through a temporary file and a rename, and the standard
    streams are flushed here. The normal exit (SystemExit) is kept where anything could
    still need the teardown or the exception: FULL_EXIT_VARIABLE set (a wrapper that runs
    the command and inspects the process afterwards), a tracer or profiler (coverage,
    cProfile: they write at exit), a code that is not an int, a flush that fails (a reader
    gone from the pipe: the usual handling applies), other threads, live child processes,
    or Ray (whose shutdown runs at exit, after `dataset`).
    """
    if code is None:
        code = 0
    if "ray" in sys.modules:
        # The command has reported; what Ray logs from here on is its own teardown (a
        # Ray Data executor garbage-collected after ray.shutdown warns, with a traceback,
        # that Ray is not initialised), never the command's output, `-q` or not.
        import logging

        logging.disable(logging.CRITICAL)
    if (
        not isinstance(code, int)
        or os.environ.get(FULL_EXIT_VARIABLE, "") not in ("", "0")
        or sys.gettrace() is not None
        or sys.getprofile() is not None
        or "ray" in sys.modules
        or _others_running()
    ):
        raise SystemExit(code)
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):
        raise SystemExit(code) from None
    os._exit(code)


def _others_running() -> bool:
    """Threads besides this one, or child processes still alive."""
    import threading

    if threading.active_count() > 1:
        return True
    processes = sys.modules.get("multiprocessing")
    return processes is not None and bool(processes.active_children())


def one_blas_thread(environ: MutableMapping[str, str], numpy_loaded: bool) -> None:
    """numpy's BLAS on one thread in a command's process, unless the user chose a count.

    Why: OpenBLAS starts its thread pool when numpy is imported, about 40 ms of CPU per
    process on this machine (docs/speed.md, "Session 27"): a tenth of a thumbnail's
    compress or decompress. The codec's products are small (the tokenizer's 128-colour
    chunks, the mixer's [B, 4] x [4, 512]) and already ran on one thread; chains run in
    processes. Only before numpy is loaded does the setting count, so `import igpt_codec`
    and this module load no numpy (format/__init__.py imports its numpy parts on use).
    """
    if not numpy_loaded:
        environ.setdefault("OPENBLAS_NUM_THREADS", "1")
