"""Load and verify a model bundle: model.onnx + palette.npy + manifest.json.

Every file is checked against the sha256 in the manifest before use, because a
corrupted model does not crash: it silently yields other probabilities, so a
stream would decode to garbage (or, worse, encode fine and never decode). The
fingerprint the container stores is recomputed from those hashes, never trusted
from the manifest alone.

Run-time module: numpy and the standard library only (no torch).
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from igpt_codec.core.errors import BundleError
from igpt_codec.runtime.contract import (
    BUNDLE_FORMAT_VERSION,
    EXACT_SPAN_CONTRACT,
    KV_CHUNK,
    MANIFEST_FILE,
    MODEL_FILE,
    PALETTE_FILE,
    PROFILE_CONTRACTS,
    PROFILE_EXACT,
    PROFILE_FLOAT,
    coding_fields,
    compute_fingerprint,
    file_sha256,
)
from igpt_codec.runtime.positions import LAYOUTS, RASTER

DEFAULT_BUNDLE_DIR = Path(__file__).resolve().parents[1] / "models" / "default"

_HEX64 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True, eq=False)
class Bundle:
    """A verified bundle. `fingerprint` identifies everything that decides the numbers."""

    path: Path
    manifest: dict[str, Any] = field(repr=False)
    palette: np.ndarray = field(repr=False)
    fingerprint: bytes
    model_path: Path
    n_layer: int
    n_head: int
    head_dim: int
    n_positions: int
    profile: str
    position_layout: str
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    attention_span: int | None = None
    """S of contract exact-int-v1-span (token t sees t-S..t; the runner's cache is a ring of
    S slots, codec/runtime/ring_cache.py); None: full attention over a linear cache."""

    @property
    def exact(self) -> bool:
        return self.profile == PROFILE_EXACT


def load_bundle(path: str | Path | None = None) -> Bundle:
    """Read and verify the bundle at `path` (None: the bundle shipped with the package)."""
    root = Path(DEFAULT_BUNDLE_DIR if path is None else path)
    if not root.is_dir():
        raise BundleError(f"no model bundle at {root} (directory not found)")
    manifest = _read_manifest(root)
    version = manifest.get("bundle_format_version")
    if version != BUNDLE_FORMAT_VERSION or isinstance(version, bool):
        hint = "; re-export it with this version" if version == 1 else ""
        raise BundleError(f"unsupported bundle format version {version}{hint}")
    hashes = _verify_files(root, manifest.get("files"))
    fingerprint = compute_fingerprint(hashes, coding_fields(manifest))
    if manifest.get("fingerprint") != fingerprint.hex():
        raise BundleError(
            f"bundle fingerprint mismatch in {root}: manifest says "
            f"{manifest.get('fingerprint')}, files and coding fields give {fingerprint.hex()}"
        )
    model = _section(manifest, "model")
    n_layer, n_head, head_dim, n_positions = (
        _positive_int(model, k) for k in ("n_layer", "n_head", "head_dim", "n_positions")
    )
    profile = manifest.get("profile")
    if profile not in PROFILE_CONTRACTS:
        raise BundleError(f"unknown bundle profile {profile!r}; re-export with this version")
    contract = manifest.get("graph_contract")
    span = model.get("attention_span")
    if span is not None and (not isinstance(span, int) or isinstance(span, bool) or span < 1):
        raise BundleError("manifest model.attention_span must be a positive integer")
    if span is not None and (profile != PROFILE_EXACT or contract != EXACT_SPAN_CONTRACT):
        raise BundleError(f"an attention span needs graph contract {EXACT_SPAN_CONTRACT}")
    if span is None and contract != PROFILE_CONTRACTS[profile]:
        raise BundleError(f"graph contract {contract} does not belong to profile {profile}")
    layout = manifest.get("positions")
    if layout not in LAYOUTS or (profile == PROFILE_FLOAT and layout != RASTER):
        raise BundleError(f"position layout {layout!r} is not valid for profile {profile}")
    if math.isqrt(n_positions) ** 2 != n_positions:
        raise BundleError(f"n_positions {n_positions} is not a square grid")
    io = _section(manifest, "io")
    inputs, outputs = (_names(io, k) for k in ("inputs", "outputs"))
    # Imported here: igpt_codec.runtime imports this module.
    from igpt_codec.runtime.contract import exact_io_names, graph_io_names

    expected = (exact_io_names if profile == PROFILE_EXACT else graph_io_names)(n_layer)
    if (list(inputs), list(outputs)) != expected:
        raise BundleError(f"manifest io names do not follow the {contract} contract")
    cache = io.get("cache_layout")
    if not isinstance(cache, dict) or cache.get("chunk") != KV_CHUNK:
        raise BundleError(f"manifest io.cache_layout must give chunk {KV_CHUNK}")
    if span is not None and (cache.get("ring") != span or isinstance(cache.get("ring"), bool)):
        raise BundleError(f"manifest io.cache_layout must give ring {span} (the span)")
    return Bundle(
        path=root,
        manifest=manifest,
        palette=_load_palette(root / PALETTE_FILE),
        fingerprint=fingerprint,
        model_path=root / MODEL_FILE,
        n_layer=n_layer,
        n_head=n_head,
        head_dim=head_dim,
        n_positions=n_positions,
        profile=profile,
        position_layout=layout,
        input_names=inputs,
        output_names=outputs,
        attention_span=span,
    )


def _read_manifest(root: Path) -> dict[str, Any]:
    path = root / MANIFEST_FILE
    if not path.is_file():
        raise BundleError(f"bundle {root} has no {MANIFEST_FILE}")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise BundleError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(manifest, dict):
        raise BundleError(f"{path} must hold a JSON object")
    return manifest


def _verify_files(root: Path, files: object) -> dict[str, str]:
    """Check presence, size and sha256 of every listed file; returns name -> hex digest."""
    if not isinstance(files, dict):
        raise BundleError("manifest has no 'files' table")
    for required in (MODEL_FILE, PALETTE_FILE):
        if required not in files:
            raise BundleError(f"manifest does not list {required}")
    hashes: dict[str, str] = {}
    for name, entry in files.items():
        if not isinstance(name, str) or os.path.basename(name) != name or name in ("", ".", ".."):
            raise BundleError(f"manifest lists an invalid file name {name!r}")
        expected = entry.get("sha256") if isinstance(entry, dict) else None
        size = entry.get("bytes") if isinstance(entry, dict) else None
        if not isinstance(expected, str) or not _HEX64.match(expected) or not isinstance(size, int):
            raise BundleError(f"manifest entry for {name} needs a sha256 and a byte count")
        path = root / name
        if not path.is_file():
            raise BundleError(f"bundle file {name} is missing from {root}")
        if path.stat().st_size != size:
            raise BundleError(
                f"bundle file {name} has {path.stat().st_size} bytes, expected {size}"
            )
        actual = file_sha256(path)
        if actual != expected:
            raise BundleError(f"bundle file {name} is corrupted (sha256 mismatch)")
        hashes[name] = actual
    return hashes


def _load_palette(path: Path) -> np.ndarray:
    try:
        palette = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise BundleError(f"cannot read {path.name}: {exc}") from exc
    if palette.shape != (512, 3) or palette.dtype != np.float32:
        raise BundleError(
            f"{path.name} must be float32 (512, 3), got {palette.dtype} {palette.shape}"
        )
    if not np.all(np.isfinite(palette)):
        raise BundleError(f"{path.name} holds non-finite values")
    palette.flags.writeable = False
    return palette


def _section(manifest: dict[str, Any], key: str) -> dict[str, Any]:
    value = manifest.get(key)
    if not isinstance(value, dict):
        raise BundleError(f"manifest has no '{key}' section")
    return value


def _positive_int(section: dict[str, Any], key: str) -> int:
    value = section.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise BundleError(f"manifest model.{key} must be a positive integer")
    return value


def _names(section: dict[str, Any], key: str) -> tuple[str, ...]:
    value = section.get(key)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise BundleError(f"manifest io.{key} must be a list of names")
    return tuple(value)
