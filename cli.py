"""igpt-codec command line, as `python cli.py ...` runs it from a checkout.

The commands live in `igpt_codec.cli` (so that an installed package needs no top-level
`cli` module); `igpt-codec` and `python -m igpt_codec` run the same code. The checkout runs through
its editable install (`pip install -e .`, as scripts/test.sh and scripts/demo.sh do).
"""

from typing import Any

from igpt_codec.cli import ProgressBar, cli, main

__all__ = ["ProgressBar", "cli", "main"]  # and EXPORT_HINT, on first use


def __getattr__(name: str) -> Any:
    """EXPORT_HINT on first use, so that running a command does not import `export`'s."""
    if name == "EXPORT_HINT":
        from igpt_codec.cli import EXPORT_HINT

        return EXPORT_HINT
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if __name__ == "__main__":
    main()
