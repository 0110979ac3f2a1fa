"""compress and decompress must run where torch, transformers and optimum cannot be imported.

Each CLI run happens in a fresh interpreter whose meta path refuses those packages
(as if they were not installed) and which reports afterwards whether any of them
got into sys.modules anyway.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from cli import EXPORT_HINT
from igpt_codec.cli import FULL_EXIT_VARIABLE

REPO = Path(__file__).resolve().parents[1]
CLI = REPO / "cli.py"
BLOCKED = ("torch", "transformers", "optimum", "torchvision")

WRAPPER = f"""
import importlib.abc, os, runpy, sys

BLOCKED = {BLOCKED!r}

class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {{name!r}} (blocked)", name=name)
        return None

sys.meta_path.insert(0, Refuse())
script = sys.argv[1]
sys.argv = sys.argv[1:]
sys.path.insert(0, os.path.dirname(script))  # what `python cli.py` does
status = 0
try:
    runpy.run_path(script, run_name="__main__")
except SystemExit as exc:
    status = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
leaked = sorted(n for n in sys.modules if n.partition(".")[0] in BLOCKED)
sys.stderr.write(f"LEAKED={{leaked}}\\n")
sys.exit(status)
"""


def run_blocked(*args: object, cwd: Path) -> tuple[int, str]:
    # The wrapper inspects sys.modules after the command: it needs the SystemExit back.
    env = {**os.environ, FULL_EXIT_VARIABLE: "1"}
    result = subprocess.run(
        [sys.executable, "-c", WRAPPER, str(CLI), *map(str, args)],
        capture_output=True,
        cwd=cwd,
        timeout=300,
        check=False,
        env=env,
    )
    stderr = result.stderr.decode()
    assert "LEAKED=[]" in stderr, stderr
    return result.returncode, stderr


def test_the_blocker_blocks(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text("import torch\n")
    blocked = subprocess.run(
        [sys.executable, "-c", WRAPPER, str(probe)], capture_output=True, check=False
    )
    assert blocked.returncode != 0 and b"(blocked)" in blocked.stderr


def test_compress_and_decompress_without_torch(
    tiny_bundle: Path, photo_paths: list[Path], tmp_path: Path
) -> None:
    stream = tmp_path / "photo.igpt"
    status, stderr = run_blocked(
        "compress", photo_paths[0], "-o", stream, "--model", tiny_bundle, "--size", "6",
        cwd=tmp_path,
    )  # fmt: skip
    assert status == 0, stderr
    out = tmp_path / "photo.png"
    status, stderr = run_blocked(
        "decompress", stream, "-o", out, "--model", tiny_bundle, cwd=tmp_path
    )
    assert status == 0, stderr
    assert out.stat().st_size > 0
    status, stderr = run_blocked("info", stream, cwd=tmp_path)
    assert status == 0, stderr


def test_export_names_the_extra(tmp_path: Path) -> None:
    status, stderr = run_blocked("export", "some/checkpoint", tmp_path / "bundle", cwd=tmp_path)
    assert status == 1
    assert f"error: {EXPORT_HINT}" in stderr
    assert "Traceback" not in stderr
    assert not (tmp_path / "bundle").exists()


@pytest.mark.parametrize(
    "module",
    [
        "codec",
        "igpt_codec.api",
        "igpt_codec.pipelines.stream",
        "igpt_codec.cli",
        "igpt_codec.pillow",
        "igpt_codec.runtime.search",
        "format",
        "cli",
    ],
)
def test_runtime_modules_import_without_torch(module: str, tmp_path: Path) -> None:
    script = tmp_path / "imp.py"
    script.write_text(f"import {module}\n")
    result = subprocess.run(
        [sys.executable, "-c", WRAPPER.replace("os.path.dirname(script)", repr(str(REPO))), script],
        capture_output=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode()
    assert b"LEAKED=[]" in result.stderr


def test_full_resolution_without_torch(tmp_path: Path) -> None:
    from PIL import Image

    Image.effect_noise((37, 9), 40).convert("RGB").save(tmp_path / "noise.png")
    status, stderr = run_blocked("compress", "--full", "noise.png", cwd=tmp_path)
    assert status == 0, stderr
    status, stderr = run_blocked("decompress", "noise.png.igpt", "-o", "back.png", cwd=tmp_path)
    assert status == 0, stderr
    with Image.open(tmp_path / "back.png") as back:
        assert back.size == (37, 9)
