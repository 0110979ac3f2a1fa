"""One cross-version decode in every test run: onnxruntime 1.20.x, the oldest release
pyproject allows, decodes the committed golden files to their expected tokens.

The decoding environment (.venv-ort120, git-ignored) holds only onnxruntime==1.20.x, numpy,
Pillow and click, with the repository on PYTHONPATH (no torch); it is made once with pip
and reused. The test skips only when pip cannot reach the package index. The full table
(threads, batches, the newest release, qemu Nehalem, aarch64, 105 photos, both profiles) is
`bash scripts/portability.sh`; see docs/portability.md.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.harness import portability as port

REPO = Path(__file__).resolve().parents[1]
DEFAULT_BUNDLE = REPO / "codec" / "models" / "default"
GOLDEN = REPO / "tests" / "golden"
"""Golden streams and expected.json ({name: {fingerprint, records: [{tokens}]}}), with the
bundles they name: tests/golden/model, tests/golden/models/*, or a shipped default."""


@pytest.fixture(scope="module")
def ort_oldest() -> Path:
    """The python of .venv-ort120, made on first use."""
    try:
        versions = port.ensure_venv(port.VENV_OLDEST, f"=={port.ORT_OLDEST}")
    except port.IndexUnreachableError as error:
        pytest.skip(str(error))
    assert versions["onnxruntime"] == port.ORT_OLDEST
    return port.venv_python(port.VENV_OLDEST)


def _golden_bundles() -> dict[str, Path]:
    """Bundle directories by manifest fingerprint: the golden ones, the shipped default and
    the earlier defaults shipped beside it (codec/models/*)."""
    found = {}
    shipped = sorted(DEFAULT_BUNDLE.parent.glob("*"))
    for directory in [DEFAULT_BUNDLE, *shipped, GOLDEN / "model", *sorted(GOLDEN.glob("models/*"))]:
        manifest = directory / "manifest.json"
        if manifest.is_file():
            found[json.loads(manifest.read_text())["fingerprint"]] = directory
    return found


def _golden_groups(root: Path) -> list[tuple[Path, Path, list[str]]]:
    """(bundle, streams folder, file names) per bundle: the golden files copied under root
    with the worker's index.json and tokens.npz (each file's expected tokens)."""
    expected_path = GOLDEN / "expected.json"
    if not expected_path.is_file():
        pytest.skip(f"no golden files ({expected_path} is missing)")
    bundles = _golden_bundles()
    by_bundle: dict[Path, dict[str, np.ndarray]] = {}
    for name, entry in json.loads(expected_path.read_text()).items():
        assert entry["fingerprint"] in bundles, f"{name}: no bundle {entry['fingerprint']}"
        tokens = np.concatenate(
            [np.asarray(r["tokens"], np.int64).reshape(-1) for r in entry["records"]]
        )
        by_bundle.setdefault(bundles[entry["fingerprint"]], {})[name] = tokens
    assert by_bundle, "expected.json lists no golden file"
    groups = []
    for number, (bundle, files) in enumerate(by_bundle.items()):
        streams = root / f"group{number}"
        streams.mkdir()
        for name in files:
            shutil.copyfile(GOLDEN / name, streams / name)
        port.save_tokens(streams, files)
        names = list(files)
        (streams / "index.json").write_text(json.dumps({"files": names, "photos": names}))
        groups.append((bundle, streams, names))
    return groups


def test_oldest_onnxruntime_decodes_the_golden_files(ort_oldest: Path, tmp_path: Path) -> None:
    """Every golden stream decodes under onnxruntime 1.20.x to its expected tokens."""
    for number, (bundle, streams, names) in enumerate(_golden_groups(tmp_path)):
        result, _ = port.run_worker(
            [str(ort_oldest)],
            streams,
            bundle,
            list(range(len(names))),
            tmp_path / f"result{number}.json",
            timeout=600,
        )
        assert not result.get("worker_failed"), result["failures"]
        assert result["env"]["onnxruntime"] == port.ORT_OLDEST
        assert result["failures"] == [], f"{bundle}: {result['failures']}"
        assert result["identical"] == len(names)


def test_worker_compares_with_the_saved_tokens(tmp_path: Path) -> None:
    """A file counts only when its tokens equal the saved ones ("no error" is not enough),
    and a file the container refuses fails alone. Native, on the frozen tiny model."""
    groups = _golden_groups(tmp_path)
    bundle, streams, names = next(g for g in groups if g[0] == GOLDEN / "model")
    assert len(names) >= 2
    with np.load(streams / "tokens.npz") as saved:
        tokens = {name: saved[name].copy() for name in names}
    tokens[names[0]][-1] ^= 1
    port.save_tokens(streams, tokens)
    damaged = bytearray((streams / names[1]).read_bytes())
    damaged[-3] ^= 0x40
    (streams / names[1]).write_bytes(bytes(damaged))
    result = port.decode_files(streams, bundle, range(len(names)), threads=1, batch=16)
    assert result["identical"] == len(names) - 2
    failures = {f["photo"]: f["error"] for f in result["failures"]}
    assert set(failures) == {names[0], names[1]}
    assert "differ" in failures[names[0]]
    assert "Error" in failures[names[1]]
