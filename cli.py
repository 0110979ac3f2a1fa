"""igpt-codec command line, as `python cli.py ...` runs it from a checkout.

The commands live in `igpt_codec.cli` (so that an installed package needs no top-level
`cli` module); `igpt-codec` and `python -m igpt_codec` run the same code. The checkout runs through
its editable install (`pip install -e .`, as scripts/test.sh and scripts/demo.sh do).
"""

from igpt_codec.cli import EXPORT_HINT, ProgressBar, cli, main

__all__ = ["EXPORT_HINT", "ProgressBar", "cli", "main"]

if __name__ == "__main__":
    main()
