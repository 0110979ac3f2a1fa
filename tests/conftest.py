"""Session-wide fixtures: tiny random ImageGPT checkpoints, their exported bundles, photos.

Checkpoints are built from ImageGPTConfig with fixed seeds and exported once per
test session, so every codec test runs against a real bundle without network
access or a multi-megabyte model in the repository. Fixtures that need torch
skip cleanly where the export extras are not installed (CI installs them).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
CLUSTERS_NPY = REPO_ROOT / "export" / "data" / "imagegpt_clusters.npy"
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif"}

TINY_SHAPE = {"n_embd": 32, "n_layer": 2, "n_head": 2, "n_positions": 1024}
TINY_SEED = 1234
OTHER_SEED = 4321
# Scaled so the tiny model's next-token distributions are peaked like a trained model's.
TINY_LM_HEAD_SCALE = 20.0


def shared_data_dir() -> Path:
    """The project's shared data folder (…/shared/data); $IGPT_SHARED_DATA overrides it."""
    override = os.environ.get("IGPT_SHARED_DATA")
    if override:
        return Path(override).expanduser()
    return Path(__file__).resolve().parents[2] / "shared" / "data"


def shared_photo(name: str) -> Any:
    """A training photo of the shared data as an RGB PIL image (name e.g.
    "wikipedia-photos/001.png"); the test is skipped where the shared data is not there."""
    from PIL import Image

    path = shared_data_dir() / "train" / name
    if not path.is_file():
        pytest.skip(f"{path} not found")
    with Image.open(path) as image:
        return image.convert("RGB")


def _require_export_stack() -> None:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    pytest.importorskip("onnx")


def _write_checkpoint(root: Path, seed: int, **kwargs) -> Path:
    from igpt_codec.export.make_random_checkpoint import write_random_checkpoint

    return write_random_checkpoint(
        root, **TINY_SHAPE, seed=seed, lm_head_scale=TINY_LM_HEAD_SCALE, **kwargs
    )


@pytest.fixture(scope="session")
def photo_paths() -> list[Path]:
    """Sorted image files under shared/data/train (recursively)."""
    train = shared_data_dir() / "train"
    if not train.is_dir():
        pytest.skip(f"shared training photos not found at {train}")
    return sorted(p for p in train.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)


@pytest.fixture(scope="session")
def tiny_checkpoint_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """save_pretrained dir of a 2-layer, 32-wide ImageGPT with the real clusters."""
    _require_export_stack()
    return _write_checkpoint(tmp_path_factory.mktemp("tiny_checkpoint"), TINY_SEED)


@pytest.fixture(scope="session")
def other_checkpoint_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Same shape as tiny_checkpoint_dir, other seed: a different model."""
    _require_export_stack()
    return _write_checkpoint(tmp_path_factory.mktemp("other_checkpoint"), OTHER_SEED)


@pytest.fixture(scope="session")
def bundles_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("bundles")


CALIBRATION_IMAGES = 16
"""Calibration photos for the tiny test exports (the real export uses all 96)."""


@pytest.fixture(scope="session")
def tiny_bundle(bundles_root: Path, tiny_checkpoint_dir: Path) -> Path:
    """Exact bundle exported from tiny_checkpoint_dir. Do not modify: copy it first."""
    from igpt_codec.export.onnx_export import export_bundle

    export_bundle(
        str(tiny_checkpoint_dir), bundles_root / "tiny", calibration_images=CALIBRATION_IMAGES
    )
    return bundles_root / "tiny"


@pytest.fixture(scope="session")
def other_bundle(bundles_root: Path, other_checkpoint_dir: Path) -> Path:
    """An exact bundle of a different model, for fingerprint / model-mismatch tests."""
    from igpt_codec.export.onnx_export import export_bundle

    export_bundle(
        str(other_checkpoint_dir), bundles_root / "other", calibration_images=CALIBRATION_IMAGES
    )
    return bundles_root / "other"


@pytest.fixture(scope="session")
def float_bundle(bundles_root: Path, tiny_checkpoint_dir: Path) -> Path:
    """tiny_checkpoint_dir as a float32 bundle (the machine-bound profile kept for contrast)."""
    from igpt_codec.export.onnx_export import export_bundle

    export_bundle(str(tiny_checkpoint_dir), bundles_root / "tiny_float", profile="float")
    return bundles_root / "tiny_float"


@pytest.fixture
def copy_bundle(tmp_path: Path) -> Callable[[Path], Path]:
    """Copy a session bundle into this test's tmp dir, for tests that tamper with files."""

    def copy(bundle: Path) -> Path:
        return Path(shutil.copytree(bundle, tmp_path / f"{bundle.name}_copy"))

    return copy


PHOTO_STEPS = 150
"""Positions of the photo_sequences rows: crosses two cache growths (64 -> 128 -> 192)."""


@pytest.fixture(scope="session")
def photo_sequences() -> np.ndarray:
    """int64 [4, PHOTO_STEPS]: SOS + tokens of real photos (confident predictions), 4 rows."""
    from PIL import Image

    from igpt_codec.core.palette import image_to_tokens
    from igpt_codec.runtime.contract import SOS

    palette = np.load(CLUSTERS_NPY)
    rows = []
    for path in sorted((REPO_ROOT / "export" / "data" / "parity").glob("*.png")):
        with Image.open(path) as image:
            tokens = image_to_tokens(image.convert("RGB"), palette, 32).astype(np.int64)
        rows += [tokens[: PHOTO_STEPS - 1], tokens[600 : 600 + PHOTO_STEPS - 1]]
    return np.array([[SOS, *row] for row in rows[:4]], dtype=np.int64)


def zero_image_stream() -> bytes:
    """A spec-valid stream whose only record is an unknown, skippable (ancillary) kind."""
    import io

    from igpt_codec.format import StreamWriter
    from igpt_codec.format.records import RECORD_ANCILLARY

    buffer = io.BytesIO()
    with StreamWriter(buffer) as writer:
        writer.write_raw_record(RECORD_ANCILLARY | 9, b"a future record kind", bytes(8))
    return buffer.getvalue()


def leb128(value: int) -> bytes:
    """Per format/SPEC.md, written apart from igpt_codec.format.varint: 7 bits a byte, low first."""
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        out.append(low | (0x80 if value else 0))
        if not value:
            return bytes(out)
