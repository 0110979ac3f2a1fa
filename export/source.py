"""Resolve an export SOURCE (local checkpoint directory or hub id) to a model and palette.

Every way this can fail (typo in a path, a GPT-2 checkpoint, no network) ends in
an ExportError with one line, because the user runs export from the CLI and a
transformers traceback does not say which of SOURCE or --palette is wrong.
The hub is tried only for strings that are not an existing path; a hub id such
as "openai/imagegpt-small" looks like a relative path, so a missing directory
whose name is a valid hub id is reported as both.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from export.errors import ExportError, one_line
from export.palette_source import (
    PREPROCESSOR_CONFIG,
    choose_palette,
    clusters_in_preprocessor_config,
)

WEIGHT_SUFFIXES = (".safetensors", ".bin")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


@dataclass
class ResolvedSource:
    """A loaded checkpoint: the transformers model (eval, float32), its palette, provenance."""

    model: Any  # transformers.ImageGPTForCausalImageModeling; typed loosely to import lazily
    palette: np.ndarray
    info: dict[str, Any]


def resolve_source(source: str, palette: Path | None = None) -> ResolvedSource:
    """Load SOURCE, a save_pretrained directory or a hub id, plus its colour palette."""
    path = Path(source).expanduser()
    if path.exists():
        return _resolve_local(path.resolve(), palette)
    if source.startswith((".", "/", "~")) or not _HUB_ID.match(source):
        raise ExportError(f"checkpoint directory {source} does not exist")
    return _resolve_hub(source, palette)


def _resolve_local(path: Path, palette: Path | None) -> ResolvedSource:
    if not path.is_dir():
        raise ExportError(f"{path} is not a checkpoint directory")
    config_path = path / "config.json"
    if not config_path.is_file():
        raise ExportError(f"{path} has no config.json (not a save_pretrained directory)")
    try:
        config = json.loads(config_path.read_text())
    except (OSError, ValueError) as exc:
        raise ExportError(f"cannot read {config_path}: {one_line(exc)}") from exc
    model_type = config.get("model_type") if isinstance(config, dict) else None
    if model_type != "imagegpt":
        raise ExportError(f"{config_path} has model_type {model_type!r}, not 'imagegpt'")
    weights = sorted(p for p in path.iterdir() if p.is_file() and p.suffix in WEIGHT_SUFFIXES)
    if not weights:
        raise ExportError(f"{path} has no weights file (*.safetensors or *.bin)")
    model = _load_model(str(path), f"cannot load the checkpoint in {path}")
    chosen, origin = choose_palette(
        clusters_in_preprocessor_config(path / PREPROCESSOR_CONFIG), palette, str(path)
    )
    info = {
        "kind": "local",
        "path": str(path),
        "revision": None,
        "weights_sha256": {p.name: sha256_file(p) for p in weights},
        "palette_from": origin,
    }
    return ResolvedSource(model=model, palette=chosen, info=info)


def _resolve_hub(repo_id: str, palette: Path | None) -> ResolvedSource:
    model = _load_model(
        repo_id, f"{repo_id} is not a local directory and could not be loaded from the hub"
    )
    revision = getattr(model.config, "_commit_hash", None)
    chosen, origin = choose_palette(_hub_clusters(repo_id, revision), palette, repo_id)
    info = {
        "kind": "hub",
        "id": repo_id,
        "revision": revision,
        "weights_sha256": None,
        "palette_from": origin,
    }
    return ResolvedSource(model=model, palette=chosen, info=info)


def _load_model(name: str, failure: str):
    import torch
    from transformers import ImageGPTForCausalImageModeling

    try:
        model = ImageGPTForCausalImageModeling.from_pretrained(name, dtype=torch.float32)
    except Exception as exc:  # transformers raises OSError, ValueError, EnvironmentError...
        raise ExportError(f"{failure}: {one_line(exc)}") from exc
    return model.eval()


def _hub_clusters(repo_id: str, revision: str | None) -> np.ndarray | None:
    """The hub copy of preprocessor_config.json's clusters; None when the repo has none."""
    from huggingface_hub import hf_hub_download

    try:
        local = hf_hub_download(repo_id, PREPROCESSOR_CONFIG, revision=revision)
    except Exception:  # absent file, gated repo, offline after the model loaded from cache
        return None
    return clusters_in_preprocessor_config(Path(local))


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()
