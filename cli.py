"""igpt-codec command line, as `python cli.py ...` runs it from a checkout.

The commands live in `codec.cli` (so that an installed package needs no top-level
`cli` module); `igpt-codec` and `python -m codec` run the same code.
"""

from codec.cli import EXPORT_HINT, ProgressBar, cli, main

__all__ = ["EXPORT_HINT", "ProgressBar", "cli", "main"]

if __name__ == "__main__":
    main()
