"""`info --json` records equal the committed reference the JS reader is held to.

Why: the web decoder's `info` (web/src/info.js) must print what the Python command prints.
web/test/info.test.js compares the JS rows with web/test/reference/python_info.json; this
test compares the Python command's rows with the same file, so a field added to one side
only (as `band_checks` once was) fails one of the two tests instead of drifting apart.
Regenerate the file with web/scripts/make_reference.py --info when a field is added to both.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from igpt_codec.cli.info import info

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "golden"
REFERENCE = json.loads((ROOT / "web" / "test" / "reference" / "python_info.json").read_text())


def test_the_reference_covers_full_resolution_records_with_band_checks() -> None:
    rows = [row for records in REFERENCE.values() for row in records]
    full = [row for row in rows if row["kind"] == "full" and "segments" in row]
    assert full and {row["band_checks"] for row in full} == {True, False}
    assert all(row["band_checks"] <= row["chain_segments"] for row in full)


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_info_json_records_equal_the_reference(name: str) -> None:
    result = CliRunner().invoke(info, [str(GOLDEN / name), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["records"] == REFERENCE[name]
