"""Harnesses that tests import: the fuzzer and the portability suite (each runs as a
command too: `python -m tests.harness.fuzz`, `python -m tests.harness.portability`)."""
