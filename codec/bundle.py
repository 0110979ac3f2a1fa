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
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from format.errors import BundleError

BUNDLE_FORMAT_VERSION = 1
MANIFEST_FILE = "manifest.json"
MODEL_FILE = "model.onnx"
PALETTE_FILE = "palette.npy"
DEFAULT_BUNDLE_DIR = Path(__file__).parent / "models" / "default"
FINGERPRINT_BYTES = 8

# The step graph's calling convention (docs/runtime-notes.md, "Decode speed"). The runner
# owns a preallocated KV cache: keys [batch, heads, head_dim, capacity], values [batch,
# heads, capacity, head_dim], capacity grown in whole chunks of KV_CHUNK positions as a
# function of the sequence length only; the graph gets input_ids, past_length and the
# buffers and returns logits, probs and only the new tokens' keys and values. The chunk
# size changes the floats (softmax length), so it is part of the contract, not a setting.
GRAPH_CONTRACT = "kv-prealloc-chunk64-v1"
KV_CHUNK = 64

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_HASH_CACHE: dict[tuple[str, int, int, int], str] = {}


@dataclass(frozen=True, eq=False)
class Bundle:
    """A verified bundle. `fingerprint` identifies model + palette in every coded record."""

    path: Path
    manifest: dict[str, Any] = field(repr=False)
    palette: np.ndarray = field(repr=False)
    fingerprint: bytes
    model_path: Path
    n_layer: int
    n_head: int
    head_dim: int
    n_positions: int
    batch_invariant: bool
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    past_length_name: str
    past_names: tuple[str, ...]
    new_names: tuple[str, ...]
    quantization: str


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


def compute_fingerprint(file_hashes: dict[str, str]) -> bytes:
    """First 8 bytes of sha256 over the concatenated raw sha256 digests of the files."""
    joined = b"".join(bytes.fromhex(file_hashes[n]) for n in fingerprint_order(list(file_hashes)))
    return hashlib.sha256(joined).digest()[:FINGERPRINT_BYTES]


def load_bundle(path: str | Path | None = None) -> Bundle:
    """Read and verify the bundle at `path` (None: the bundle shipped with the package)."""
    root = Path(DEFAULT_BUNDLE_DIR if path is None else path)
    if not root.is_dir():
        raise BundleError(f"no model bundle at {root} (directory not found)")
    manifest = _read_manifest(root)
    version = manifest.get("bundle_format_version")
    if version != BUNDLE_FORMAT_VERSION or isinstance(version, bool):
        raise BundleError(f"unsupported bundle format version {version}")
    hashes = _verify_files(root, manifest.get("files"))
    fingerprint = compute_fingerprint(hashes)
    if manifest.get("fingerprint") != fingerprint.hex():
        raise BundleError(
            f"bundle fingerprint mismatch in {root}: manifest says "
            f"{manifest.get('fingerprint')}, files give {fingerprint.hex()}"
        )
    model = _section(manifest, "model")
    n_layer, n_head, head_dim, n_positions = (
        _positive_int(model, k) for k in ("n_layer", "n_head", "head_dim", "n_positions")
    )
    contract = manifest.get("graph_contract")
    if contract != GRAPH_CONTRACT:
        raise BundleError(
            f"bundle graph contract {contract} is not supported; re-export with this version"
        )
    io = _section(manifest, "io")
    inputs, outputs, past, new = (_names(io, k) for k in ("inputs", "outputs", "past", "new"))
    if len(past) != 2 * n_layer or len(new) != 2 * n_layer:
        raise BundleError(f"manifest io lists {len(past)} past tensors for {n_layer} layers")
    past_length = io.get("past_length")
    if (
        inputs != ("input_ids", past_length, *past)
        or outputs[:2] != ("logits", "probs")
        or outputs[2:] != new
    ):
        raise BundleError(
            "manifest io names do not follow the input_ids/past_length/past -> "
            "logits/probs/new contract"
        )
    layout = io.get("cache_layout")
    if not isinstance(layout, dict) or layout.get("chunk") != KV_CHUNK:
        raise BundleError(f"manifest io.cache_layout must give chunk {KV_CHUNK}")
    batch_invariant = manifest.get("batch_invariant")
    if not isinstance(batch_invariant, bool):
        raise BundleError("manifest batch_invariant must be true or false")
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
        batch_invariant=batch_invariant,
        input_names=inputs,
        output_names=outputs,
        past_length_name=past_length,
        past_names=past,
        new_names=new,
        quantization=str(manifest.get("quantization", "none")),
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
