"""The contract between export and run time: bundle layout, io names, constants, fingerprint.

Why one module: the exporter writes what the runners read, so both import these names
from here and neither imports the other. Changing anything here changes which bundles
load or which numbers a graph computes; the fingerprint rule is part of it because a
bundle's fingerprint is what a stream names.

Standard library only.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

BUNDLE_FORMAT_VERSION = 2
MANIFEST_FILE = "manifest.json"
MODEL_FILE = "model.onnx"
PALETTE_FILE = "palette.npy"
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
EXACT_SPAN_CONTRACT = "exact-int-v1-span"
"""The exact graph with a bounded attention span S (manifest model.attention_span): token t
sees positions t-S..t only, and its cache is a ring of `capacity` slots in which position p
lives in slot p mod capacity (codec/runtime/ring_cache.py; the runner keeps capacity = S).
Same io names as exact-int-v1; another contract, so another fingerprint."""

SOS = 512
VOCAB = 512
INPUT_IDS = "input_ids"
PAST_LENGTH = "past_length"
LOGITS_OUTPUT = "logits"
PROBS_OUTPUT = "probs"
POSITION_IDS = "position_ids"
EXACT_FREQS = "freqs"


def graph_io_names(n_layer: int) -> tuple[list[str], list[str]]:
    """(inputs, outputs) of the step graph in graph order: the bundle contract's names.

    inputs: input_ids int64 [batch, seq], past_length int64 [] (valid cache positions),
    then per layer past.{i}.key float32 [batch, heads, head_dim, capacity] and
    past.{i}.value [batch, heads, capacity, head_dim]. outputs: logits and probs
    [batch, seq, 512], then per layer new.{i}.key [batch, heads, head_dim, seq] and
    new.{i}.value [batch, heads, seq, head_dim]: the keys and values of the fed tokens only.
    """
    past, new = [], []
    for i in range(n_layer):
        past += [f"past.{i}.key", f"past.{i}.value"]
        new += [f"new.{i}.key", f"new.{i}.value"]
    return [INPUT_IDS, PAST_LENGTH, *past], [LOGITS_OUTPUT, PROBS_OUTPUT, *new]


def exact_io_names(n_layer: int) -> tuple[list[str], list[str]]:
    """(inputs, outputs) of the exact step graph (contract exact-int-v1), in graph order.

    inputs: input_ids and position_ids int64 [batch, seq], past_length int64 [], then per
    layer past.{i}.key float32 [batch, heads, head_dim, capacity] and past.{i}.value
    [batch, heads, capacity, head_dim], all integer-valued. outputs: freqs int32
    [batch, seq, 512] (every entry >= 1: the coder's table), then per layer new.{i}.key
    [batch, heads, head_dim, seq] and new.{i}.value [batch, heads, seq, head_dim].
    """
    past, new = [], []
    for i in range(n_layer):
        past += [f"past.{i}.key", f"past.{i}.value"]
        new += [f"new.{i}.key", f"new.{i}.value"]
    return [INPUT_IDS, POSITION_IDS, PAST_LENGTH, *past], [EXACT_FREQS, *new]


def cache_capacity(length: int) -> int:
    """Cache positions allocated for a sequence of `length` tokens: whole chunks, at least one.

    A function of the length alone, never of batch size or threads: the capacity is the
    softmax length inside the graph, so encoder and decoder must feed the same one.
    """
    return KV_CHUNK * max(1, -(-length // KV_CHUNK))


_HASH_CACHE: dict[tuple[str, int, int, int], str] = {}


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
    shape = {k: model.get(k) for k in ("n_layer", "n_head", "head_dim", "n_positions")}
    # Only where present: bundles without a span keep the fields (and fingerprints) they had.
    if "attention_span" in model:
        shape["attention_span"] = model["attention_span"]
    return {
        "bundle_format_version": manifest.get("bundle_format_version"),
        "profile": manifest.get("profile"),
        "graph_contract": manifest.get("graph_contract"),
        "positions": manifest.get("positions"),
        "model": shape,
        "io": {k: io.get(k) for k in ("inputs", "outputs")},
    }


def compute_fingerprint(file_hashes: dict[str, str], coding: dict[str, Any]) -> bytes:
    """First 8 bytes of sha256(file digests in fingerprint order || sha256(coding fields JSON))."""
    joined = b"".join(bytes.fromhex(file_hashes[n]) for n in fingerprint_order(list(file_hashes)))
    fields = json.dumps(coding, sort_keys=True, separators=(",", ":")).encode()
    joined += hashlib.sha256(fields).digest()
    return hashlib.sha256(joined).digest()[:FINGERPRINT_BYTES]
