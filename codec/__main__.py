"""`python -m codec`: the igpt-codec command line (same as `igpt-codec` and `python cli.py`)."""

from igpt_codec.cli import main

if __name__ == "__main__":
    main(prog_name="python -m codec")
