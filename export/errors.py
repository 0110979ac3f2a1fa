"""The one error type export raises for bad input, under the library's common base.

Export problems (a wrong SOURCE, a missing palette, a parity failure) are user
errors that the CLI reports on one line, exactly like codec errors, so ExportError
shares their base class and the CLI needs a single `except CodecError`.
"""

from __future__ import annotations

from igpt_codec.format.errors import CodecError


class ExportError(CodecError):
    """A checkpoint cannot be turned into a bundle; the message is one line."""


def one_line(exc: BaseException) -> str:
    """The first non-empty line of an exception's message (library errors span many lines)."""
    for line in str(exc).splitlines():
        if line.strip():
            return line.strip()
    return type(exc).__name__
