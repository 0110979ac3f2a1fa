"""Assemble manifest.json: what the bundle is, where it came from, how well it matches.

The codec trusts only the parts it verifies (file hashes, fingerprint, IO names,
shapes, batch_invariant); the rest (versions, parity, timing) is the record a
person needs to judge or reproduce the bundle later.
"""

from __future__ import annotations

import datetime as dt
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

from igpt_codec.export.igpt_torch import IGPTShape
from igpt_codec.runtime.contract import (
    BUNDLE_FORMAT_VERSION,
    EXACT_SPAN_CONTRACT,
    KV_CHUNK,
    MODEL_FILE,
    PALETTE_FILE,
    PROFILE_CONTRACTS,
    PROFILE_EXACT,
    coding_fields,
    compute_fingerprint,
    file_sha256,
)
from igpt_codec.runtime.positions import GRID, RASTER

EXPORTER = "torch.onnx legacy (dynamo=False)"
EXACT_EXPORTER = "export.exact_graph (onnx.helper, integer plan from export.exact_plan)"
VERSIONED_PACKAGES = ("torch", "transformers", "onnx", "onnxruntime", "numpy")


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in VERSIONED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    versions["python"] = platform.python_version()
    return versions


def file_table(bundle_dir: Path, names: list[str]) -> dict[str, dict[str, Any]]:
    return {
        name: {
            "sha256": file_sha256(bundle_dir / name),
            "bytes": (bundle_dir / name).stat().st_size,
        }
        for name in names
    }


def build_manifest(
    *,
    bundle_dir: Path,
    files: list[str],
    source: dict[str, Any],
    shape: IGPTShape,
    profile: str,
    inputs: list[str],
    outputs: list[str],
    opset: int,
    parity: dict[str, Any],
    timing: dict[str, float],
    extra: dict[str, Any] | None = None,
    positions: str = GRID,
) -> dict[str, Any]:
    """The manifest for the files already written into bundle_dir.

    `positions` is the exact graph's position layout (codec/runtime/positions.py); the float graph
    computes raster positions itself.
    """
    table = file_table(bundle_dir, files)
    exact = profile == PROFILE_EXACT
    span = shape.attention_span
    if span is not None and not exact:
        raise ValueError("an attention span needs the exact profile")
    cache_layout: dict[str, Any] = {
        "key": ["batch", "heads", "head_dim", "capacity"],
        "value": ["batch", "heads", "capacity", "head_dim"],
        "new_key": ["batch", "heads", "head_dim", "seq"],
        "new_value": ["batch", "heads", "seq", "head_dim"],
        "dtype": "float32" + (" holding int8 values" if exact else ""),
        "past_length": "int64 scalar: valid positions at the front of the buffers",
        "chunk": KV_CHUNK,
        "capacity": f"{KV_CHUNK} * max(1, ceil(past_length / {KV_CHUNK}))",
        "unused_positions": "zero",
    }
    if span is not None:
        cache_layout |= {
            "past_length": "int64 scalar: tokens fed so far (absolute)",
            "capacity": f"{span} (the span): a ring, position p in slot p mod capacity",
            "ring": span,
            "unused_positions": "any finite value (masked)",
        }
    manifest: dict[str, Any] = {
        "bundle_format_version": BUNDLE_FORMAT_VERSION,
        "fingerprint": None,
        "fingerprint_rule": (
            f"first 8 bytes of sha256(sha256({MODEL_FILE}) || sha256({PALETTE_FILE}) "
            "|| sha256 of any other file by name || sha256(coding fields as sorted compact "
            "JSON: bundle_format_version, profile, graph_contract, positions, model shape "
            "(and attention_span where present), io inputs/outputs)), raw digests"
        ),
        "profile": profile,
        "graph_contract": PROFILE_CONTRACTS[profile] if span is None else EXACT_SPAN_CONTRACT,
        "positions": positions if exact else RASTER,
        "source": source,
        "model": {
            "model_type": "imagegpt",
            "n_embd": shape.n_embd,
            "n_layer": shape.n_layer,
            "n_head": shape.n_head,
            "head_dim": shape.head_dim,
            "n_positions": shape.n_positions,
            "vocab_size": shape.vocab_size,
            "n_inner": shape.n_inner,
            "layer_norm_epsilon": shape.layer_norm_epsilon,
            "scale_attn_by_inverse_layer_idx": shape.scale_attn_by_inverse_layer_idx,
            # Only with a span: a coding field (in the fingerprint) where present.
            **({} if span is None else {"attention_span": span}),
        },
        "io": {
            "inputs": list(inputs),
            "outputs": list(outputs),
            "dynamic_axes": ["batch", "seq", "capacity"],
            "cache_layout": cache_layout,
        },
        "opset": opset,
        "exporter": EXACT_EXPORTER if exact else EXPORTER,
        "versions": package_versions(),
        "batch_invariant": True,
        "files": table,
        "parity": parity,
        "timing_s": timing,
        "created": dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat(),
    }
    if extra:
        manifest.update(extra)
    hashes = {n: e["sha256"] for n, e in table.items()}
    manifest["fingerprint"] = compute_fingerprint(hashes, coding_fields(manifest)).hex()
    return manifest
