"""Read a 512x3 colour palette from the files a user or a checkpoint may provide.

The palette is half of the model: a token means a colour only through it, so a
bundle must carry exactly the clusters the checkpoint was trained with. Hugging
Face keeps them in preprocessor_config.json ("clusters"); a checkpoint saved
without its image processor needs them from --palette.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from igpt_codec.core.palette import PaletteError, validate_palette
from igpt_codec.export.errors import ExportError, one_line

PREPROCESSOR_CONFIG = "preprocessor_config.json"


def palette_from_json(obj: object, origin: str) -> np.ndarray:
    """A bare 512x3 list, or any object with a "clusters" list (HF's file, the shared JSON)."""
    if isinstance(obj, dict):
        if "clusters" not in obj:
            raise ExportError(f"{origin} has no 'clusters' entry")
        obj = obj["clusters"]
    try:
        arr = np.asarray(obj, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ExportError(
            f"bad palette in {origin}: clusters are not a 512x3 number array"
        ) from exc
    return _validated(arr, origin)


def load_palette_file(path: Path) -> np.ndarray:
    """--palette FILE: .npy or .json, returned as float32 (512, 3)."""
    path = Path(path)
    if not path.is_file():
        raise ExportError(f"palette file {path} does not exist")
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            return _validated(np.load(path, allow_pickle=False), str(path))
        if suffix == ".json":
            return palette_from_json(json.loads(path.read_text()), str(path))
    except (OSError, ValueError) as exc:
        raise ExportError(f"cannot read palette {path}: {one_line(exc)}") from exc
    raise ExportError(f"palette file {path} must be .npy or .json")


def clusters_in_preprocessor_config(path: Path) -> np.ndarray | None:
    """The checkpoint's own clusters, or None when the file or its "clusters" entry is absent."""
    if not path.is_file():
        return None
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ExportError(f"cannot read {path}: {one_line(exc)}") from exc
    if not isinstance(config, dict) or config.get("clusters") is None:
        return None
    return palette_from_json(config, str(path))


def choose_palette(
    checkpoint_clusters: np.ndarray | None, palette_file: Path | None, source: str
) -> tuple[np.ndarray, str]:
    """Pick the bundle palette and say where it came from.

    Both given and different is refused: a palette the model was not trained with
    would silently produce a codec that works but compresses badly.
    """
    explicit = load_palette_file(palette_file) if palette_file is not None else None
    if checkpoint_clusters is not None:
        if explicit is not None and not np.array_equal(explicit, checkpoint_clusters):
            raise ExportError(
                f"--palette {palette_file} differs from the clusters in {source}'s "
                f"{PREPROCESSOR_CONFIG}"
            )
        return checkpoint_clusters, PREPROCESSOR_CONFIG
    if explicit is not None:
        return explicit, str(Path(palette_file).resolve())
    raise ExportError(
        f"{source} has no colour clusters ({PREPROCESSOR_CONFIG} with 'clusters'); "
        "pass --palette FILE (.npy or .json, 512x3)"
    )


def _validated(arr: np.ndarray, origin: str) -> np.ndarray:
    try:
        return validate_palette(arr)
    except PaletteError as exc:
        raise ExportError(f"bad palette in {origin}: {exc}") from exc
