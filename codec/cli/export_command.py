"""`igpt-codec export`: an ImageGPT checkpoint -> a model bundle.

The one run-time module that imports `igpt_codec.export` (lazily, inside the command:
torch and transformers load only here, and only with the export extra installed).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

from igpt_codec.cli.common import Failure, reports_errors

EXPORT_DEPS = frozenset({"torch", "transformers", "onnx", "onnxscript", "safetensors"})
EXPORT_HINT = (
    "export needs the export extra: pip install torch==2.13.0 'igpt-codec[export]' "
    "(in a checkout: pip install -e '.[export]')"
)
"""Quoted so zsh does not glob the brackets; the wheel form first, the checkout form after."""


@click.command("export")
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
