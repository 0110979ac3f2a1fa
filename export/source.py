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

from igpt_codec.export.errors import ExportError, one_line
from igpt_codec.export.palette_source import (
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
    if (path / "manifest.json").is_file() and not (path / "config.json").exists():
        return _resolve_float_bundle(path, palette)
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


def _resolve_float_bundle(path: Path, palette: Path | None) -> ResolvedSource:
    """A float32 bundle of this project as the source: its weights read back from the ONNX.

    Lets an exact bundle be made from a float bundle whose checkpoint is gone (the shipped
    default model's history). The step graph holds the lean module's parameters under
    their own names, with the query part of c_attn divided by the attention divisor
    (export/step_graph.py folds it in): multiplied back here. Parity against the
    rebuilt transformers model then checks the whole round trip.
    """
    import onnx
    import torch
    from onnx import numpy_helper

    from igpt_codec.export.igpt_torch import IGPT, IGPTShape, to_transformers

    try:
        manifest = json.loads((path / "manifest.json").read_text())
        config = manifest["model"]
        graph = onnx.load(str(path / "model.onnx"))
    except Exception as exc:  # JSON, KeyError, protobuf errors
        raise ExportError(f"cannot read the float bundle {path}: {one_line(exc)}") from exc
    if manifest.get("profile", "float32") != "float32":
        raise ExportError(
            f"{path} is a {manifest.get('profile')} bundle; only float32 ones convert"
        )
    shape = IGPTShape(
        vocab_size=config["vocab_size"],
        n_positions=config["n_positions"],
        n_embd=config["n_embd"],
        n_layer=config["n_layer"],
        n_head=config["n_head"],
        n_inner=config.get("n_inner"),
        layer_norm_epsilon=config["layer_norm_epsilon"],
        scale_attn_by_inverse_layer_idx=config["scale_attn_by_inverse_layer_idx"],
    )
    inits = {t.name: numpy_helper.to_array(t) for t in graph.graph.initializer}
    state = {k.removeprefix("lean."): v for k, v in inits.items() if k.startswith("lean.")}
    heads = [
        v
        for k, v in inits.items()
        if not k.startswith("lean.") and v.shape == (shape.n_embd, shape.vocab_size - 1)
    ]
    if len(heads) != 1:
        raise ExportError(f"cannot find the output projection in {path / 'model.onnx'}")
    state["lm_head.weight"] = heads[0].T
    lean = IGPT(shape)
    missing = sorted(set(lean.state_dict()) - set(state))
    if missing:
        # The tracer stores identical tensors once (e.g. all-zero biases of an untrained
        # model), so such a graph no longer names every parameter.
        raise ExportError(
            f"{path / 'model.onnx'} does not name {missing[0]} (and {len(missing) - 1} more): "
            "not a complete float bundle of this project"
        )
    for i, block in enumerate(lean.transformer.h):
        divisor = block.attn.divisor
        for suffix in ("weight", "bias"):
            key = f"transformer.h.{i}.attn.c_attn.{suffix}"
            value = state[key].copy()
            value[..., : shape.n_embd] *= divisor
            state[key] = value
    try:
        lean.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in state.items()})
    except RuntimeError as exc:
        raise ExportError(f"{path} does not hold a complete ImageGPT: {one_line(exc)}") from exc
    chosen, _ = choose_palette(np.load(path / "palette.npy"), palette, str(path))
    info = {
        "kind": "float-bundle",
        "path": str(path),
        "fingerprint": manifest.get("fingerprint"),
        "weights_sha256": {"model.onnx": sha256_file(path / "model.onnx")},
        "palette_from": "palette.npy of the float bundle",
        "original_source": manifest.get("source"),
    }
    return ResolvedSource(model=to_transformers(lean), palette=chosen, info=info)


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
