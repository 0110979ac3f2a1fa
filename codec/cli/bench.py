"""`igpt-codec bench`: compress and decompress in memory, as `zstd -b` does.

Reports, per run, the images, tokens, stream bytes, bits/token, the ratio to 24-bit RGB
of the coded images, compress and decompress speed (tokens/s, wall clock, model load
included once per run as a user would see it) and the model fingerprint, and checks the
round trip token for token. Nothing is written.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import click

from igpt_codec.cli.common import (
    DEFAULT_SIZE,
    Failure,
    plural,
    reports_errors,
    usable_cpus,
)
from igpt_codec.cli.limits import limit_options

if TYPE_CHECKING:
    from igpt_codec.pipelines.limits import DecodeLimits


@click.command("bench")
@click.argument("inputs", metavar="IMAGE...", nargs=-1, required=True)
@click.option(
    "--size", type=click.IntRange(1, 32), help=f"Thumbnail side [default: {DEFAULT_SIZE}]."
)
@click.option("--full", is_flag=True, help="Full resolution instead of thumbnails.")
@click.option("--model", "model_dir", metavar="DIR", help="Model bundle directory.")
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    default=usable_cpus,
    show_default=f"the CPUs this process may use, {usable_cpus()} here",
    help="As for compress.",
)
@reports_errors
@limit_options
def bench(
    inputs: tuple[str, ...],
    size: int | None,
    full: bool,
    model_dir: str | None,
    threads: int,
    limits: DecodeLimits,
) -> None:
    """Compress IMAGE... into one stream in memory, decompress it, check the tokens, and
    report the ratio, the speed of both ways and the model. Writes nothing. The decode
    runs under the decoder's limits, as decompress does (a --full photo over 16.8 MP
    needs --max-pixels)."""
    if full and size is not None:
        raise click.UsageError("--full codes the photo at its own size: drop --size")
    from igpt_codec import api

    bundle = api.resolve_bundle(model_dir)
    side = None if full else (size or DEFAULT_SIZE)
    expected = api.tokenize(list(inputs), bundle, side or 0, full=full)
    started = time.perf_counter()
    data = api.compress(list(inputs), bundle, size=side, threads=threads, full=full)
    coded = time.perf_counter()
    decoded = api.decompress(data, bundle, threads=threads, limits=limits)
    done = time.perf_counter()
    tokens = sum(int(item.tokens.size) for item in decoded)
    for want, got in zip(expected, decoded, strict=True):
        if want.tokens.ravel().tolist() != got.tokens.ravel().tolist():
            raise Failure("round trip failed: decoded tokens differ from the coded ones")
    what = "full-resolution" if full else f"{side}x{side} thumbnails"
    click.echo(
        f"{plural(len(decoded), 'image')} ({what}), {plural(tokens, 'token')} -> "
        f"{len(data)} bytes: {8 * len(data) / tokens:.3f} bits/token, ratio "
        f"{24 * tokens / (8 * len(data)):.2f}:1 to 24-bit RGB; compress "
        f"{tokens / (coded - started):.0f} tokens/s ({coded - started:.2f} s), decompress "
        f"{tokens / (done - coded):.0f} tokens/s ({done - coded:.2f} s); "
        f"{plural(threads, 'thread')}; model {bundle.fingerprint.hex()}; round trip OK"
    )
