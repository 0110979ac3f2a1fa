"""One-off studies: each module says what it measured and where its result lives.

Not part of the benchmark suite (bench/) and imported by nothing. Run one from the
repository root: `python -m studies.NAME --help`.
"""
