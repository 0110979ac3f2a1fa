"""The decoder's limits on the command line (issue 26): `--max-pixels`, `--max-work`,
`--max-memory SIZE` and `--allow-any-layout` for the commands that decode (decompress,
bench), as `igpt_codec.DecodeLimits`.

Why flags and variables both: the IGPT_CODEC_MAX_* environment variables set the
defaults for scripts that cannot change a command line; a flag wins over its variable.
A bad value of either is a one-line usage error (exit 2) before any input is read; a
refusal names the flag to raise, not the API's field. Imports only click and the format
(the pipelines' limits module is imported when a command runs).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

import click

from igpt_codec.cli.common import Failure
from igpt_codec.format.errors import CodecError

if TYPE_CHECKING:
    from igpt_codec.pipelines.limits import DecodeLimits


class ByteSize(click.ParamType):
    """A byte count: 2147483648, 2G, 512M, 64K (powers of 1024; a trailing B or iB is
    allowed, so 2GiB and 2GB are 2G too). A bad value is click's one-line usage error."""

    name = "SIZE"
    _UNITS: ClassVar[dict[str, int]] = {
        "": 1,
        "K": 1 << 10,
        "M": 1 << 20,
        "G": 1 << 30,
        "T": 1 << 40,
    }
    _PATTERN = re.compile(r"(\d+)([KMGT]?)(I?B)?")

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        match = self._PATTERN.fullmatch(str(value).strip().upper())
        if match is None or (match[3] == "IB" and not match[2]):
            self.fail(f"{value!r} is not a size (a whole number of bytes, or e.g. 512M, 2G)")
        size = int(match[1]) * self._UNITS[match[2]]
        if size < 1:
            self.fail(f"{value!r}: the size must be at least 1 byte")
        return size


def limit_options(command: Callable) -> Callable:
    """The decoder's limits as options (decompress, bench): each unset one keeps
    DecodeLimits' default, which the IGPT_CODEC_MAX_* environment variables set for
    scripts. The command receives them as one `limits` argument (see decode_limits).
    Goes below @reports_errors: a refusal then names the flag to raise, not the API's
    field, and a bad environment value stays a usage error."""
    options = [
        click.option(
            "--max-pixels",
            type=click.IntRange(min=1),
            metavar="N",
            help="Most pixels (width x height) of one full-resolution image the decoder "
            "accepts. Default 16777216 (4096 x 4096), or $IGPT_CODEC_MAX_PIXELS.",
        ),
        click.option(
            "--max-work",
            type=click.IntRange(min=1),
            metavar="N",
            help="Most full-resolution decoding work per stream, in units of about one "
            "model cell (an honest photo costs 1.1-1.6 a pixel; docs/hardening.md). "
            "Default 16777216, or $IGPT_CODEC_MAX_WORK.",
        ),
        click.option(
            "--max-memory",
            type=ByteSize(),
            help="Most estimated memory of one full-resolution decode (e.g. 512M, 2G); "
            "fewer worker threads are run to fit it. Default 2G, or "
            "$IGPT_CODEC_MAX_MEMORY (bytes).",
        ),
        click.option(
            "--allow-any-layout",
            is_flag=True,
            help="Decode full-resolution layouts this encoder never writes (up to 255 "
            "windows per segment, 24 context rows), still within the work limit. Off by "
            "default: such a file is refused from its header.",
        ),
    ]
    for option in reversed(options):
        command = option(command)

    @functools.wraps(command)
    def wrapper(
        *args: Any,
        max_pixels: int | None,
        max_work: int | None,
        max_memory: int | None,
        allow_any_layout: bool,
        **kwargs: Any,
    ) -> None:
        limits = decode_limits(max_pixels, max_work, max_memory, allow_any_layout)
        try:
            command(*args, limits=limits, **kwargs)
        except CodecError as exc:
            message = flag_wording(str(exc))
            if message == str(exc):
                raise
            raise Failure(message) from exc

    return wrapper


_LIMIT_FIELD = re.compile(r"raise DecodeLimits\.(max_pixels|max_work|max_memory)\b")
_LAYOUT_FIELD = re.compile(r"raise DecodeLimits\.max_(segment_windows|context_rows)\b")


def flag_wording(message: str) -> str:
    """A DecodeLimitError's advice in the CLI's terms: `raise DecodeLimits.max_pixels`
    becomes `raise --max-pixels`, a layout field `pass --allow-any-layout`."""
    message = _LIMIT_FIELD.sub(lambda m: "raise --" + m[1].replace("_", "-"), message)
    return _LAYOUT_FIELD.sub("pass --allow-any-layout", message)


def decode_limits(
    max_pixels: int | None = None,
    max_work: int | None = None,
    max_memory: int | None = None,
    allow_any_layout: bool = False,
) -> DecodeLimits:
    """DecodeLimits from the options given; the rest from the environment or the defaults.
    A bad IGPT_CODEC_MAX_* value is a one-line usage error (exit 2), before any input is
    read, as a bad option is."""
    from igpt_codec.format.records import MAX_SEGMENT_WINDOWS
    from igpt_codec.format.tiling import MAX_CONTEXT_ROWS
    from igpt_codec.pipelines.limits import DecodeLimits

    given: dict[str, int] = {
        name: value
        for name, value in (
            ("max_pixels", max_pixels),
            ("max_work", max_work),
            ("max_memory", max_memory),
        )
        if value is not None
    }
    if allow_any_layout:
        given["max_segment_windows"] = MAX_SEGMENT_WINDOWS
        given["max_context_rows"] = MAX_CONTEXT_ROWS
    try:
        return DecodeLimits(**given)
    except ValueError as exc:  # an environment variable that is not a positive integer
        raise click.UsageError(str(exc)) from None
