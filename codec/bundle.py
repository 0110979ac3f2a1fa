"""Load and verify a model bundle: model.onnx + palette.npy + manifest.json.

Every file is checked against the sha256 in the manifest before use, because a
corrupted model does not crash: it silently yields other probabilities, so a
stream would decode to garbage (or, worse, encode fine and never decode). The
fingerprint the container stores is recomputed from those hashes, never trusted
from the manifest alone.

Run-time module: numpy and the standard library only (no torch).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from codec.positions import LAYOUTS, RASTER
from format.errors import BundleError

BUNDLE_FORMAT_VERSION = 2
MANIFEST_FILE = "manifest.json"
MODEL_FILE = "model.onnx"
PALETTE_FILE = "palette.npy"
DEFAULT_BUNDLE_DIR = Path(__file__).parent / "models" / "default"
FINGERPRINT_BYTES = 8

# The runner owns a preallocated KV cache: keys [batch, heads, head_dim, capacity], values
# [batch, heads, capacity, head_dim], capacity grown in whole chunks of KV_CHUNK positions.
# The float graph's softmax runs over the whole capacity, so for it the chunk size changes
# the floats and is part of the contract (docs/runtime-notes.md, "Decode speed").
GRAPH_CONTRACT = "kv-prealloc-chunk64-v1"
KV_CHUNK = 64

PROFILE_EXACT = "exact-int-v1"
"""Integer-valued graph (export/exact_graph.py): outputs frequency tables that are the same
bits on every CPU and onnxruntime release. What the codec codes with by default."""
PROFILE_FLOAT = "float32"
"""The float32 step graph: its probabilities round differently on other CPUs and runtimes,
so its files decode only where they were written. Kept for parity and measurement."""
PROFILE_CONTRACTS = {PROFILE_EXACT: PROFILE_EXACT, PROFILE_FLOAT: GRAPH_CONTRACT}

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_HASH_CACHE: dict[tuple[str, int, int, int], str] = {}


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

    @property
    def exact(self) -> bool:
        return self.profile == PROFILE_EXACT


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file, cached per (path, mtime, size, inode) for this process.

    Bundles are written once and never edited in place, so the stat key is enough
    to avoid hashing the same model twice when encoder and decoder share a process.
    """
    path = Path(path).resolve()
    st = path.stat()
    key = (str(path), st.st_mtime_ns, st.st_size, st.st_ino)
    cached = _HASH_CACHE.get(key)
    if cached is None:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            while block := f.read(1 << 20):
                digest.update(block)
        cached = _HASH_CACHE[key] = digest.hexdigest()
    return cached


def fingerprint_order(names: Sequence[str]) -> list[str]:
    """model.onnx, palette.npy, then any other file (external weights) by name."""
    rest = sorted(n for n in names if n not in (MODEL_FILE, PALETTE_FILE))
    return [MODEL_FILE, PALETTE_FILE, *rest]


def coding_fields(manifest: dict[str, Any]) -> dict[str, Any]:
    """The manifest entries the runner acts on: changing any of them changes the numbers.

    They are covered by the fingerprint, so an edited manifest (another position layout,
    another head count) is refused as a fingerprint mismatch instead of reaching
    onnxruntime or decoding differently. Provenance (versions, dates, parity figures) is
    left out: rewriting notes must not orphan the files made with a bundle.
    """
    model = manifest.get("model") if isinstance(manifest.get("model"), dict) else {}
    io = manifest.get("io") if isinstance(manifest.get("io"), dict) else {}
    return {
        "bundle_format_version": manifest.get("bundle_format_version"),
        "profile": manifest.get("profile"),
        "graph_contract": manifest.get("graph_contract"),
        "positions": manifest.get("positions"),
        "model": {k: model.get(k) for k in ("n_layer", "n_head", "head_dim", "n_positions")},
        "io": {k: io.get(k) for k in ("inputs", "outputs")},
    }


def compute_fingerprint(file_hashes: dict[str, str], coding: dict[str, Any]) -> bytes:
    """First 8 bytes of sha256(file digests in fingerprint order || sha256(coding fields JSON))."""
    joined = b"".join(bytes.fromhex(file_hashes[n]) for n in fingerprint_order(list(file_hashes)))
    fields = json.dumps(coding, sort_keys=True, separators=(",", ":")).encode()
    joined += hashlib.sha256(fields).digest()
    return hashlib.sha256(joined).digest()[:FINGERPRINT_BYTES]


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
    if contract != PROFILE_CONTRACTS[profile]:
        raise BundleError(f"graph contract {contract} does not belong to profile {profile}")
    layout = manifest.get("positions")
    if layout not in LAYOUTS or (profile == PROFILE_FLOAT and layout != RASTER):
        raise BundleError(f"position layout {layout!r} is not valid for profile {profile}")
    if math.isqrt(n_positions) ** 2 != n_positions:
        raise BundleError(f"n_positions {n_positions} is not a square grid")
    io = _section(manifest, "io")
    inputs, outputs = (_names(io, k) for k in ("inputs", "outputs"))
    # Imported here: codec.model imports this module.
    from codec.model import exact_io_names, graph_io_names

    expected = (exact_io_names if profile == PROFILE_EXACT else graph_io_names)(n_layer)
    if (list(inputs), list(outputs)) != expected:
        raise BundleError(f"manifest io names do not follow the {contract} contract")
    cache = io.get("cache_layout")
    if not isinstance(cache, dict) or cache.get("chunk") != KV_CHUNK:
        raise BundleError(f"manifest io.cache_layout must give chunk {KV_CHUNK}")
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
