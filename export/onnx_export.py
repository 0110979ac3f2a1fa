"""Checkpoint -> model bundle: load, trace the step graph, prove parity, write atomically.

The bundle is written into a temporary sibling directory and renamed into place
only after the parity check passed, so a failed or interrupted export never
leaves a half-written bundle where the codec would find it.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from igpt_codec.export.errors import ExportError, one_line
from igpt_codec.export.exact_export import build_exact, float_forward, float_weights
from igpt_codec.export.exact_graph import OPSET as EXACT_OPSET
from igpt_codec.export.manifest import build_manifest
from igpt_codec.export.parity import (
    default_parity_images,
    measure_parity,
    parity_sequences,
    torch_reference,
)
from igpt_codec.export.source import resolve_source
from igpt_codec.export.step_graph import DEFAULT_OPSET, export_step_graph
from igpt_codec.runtime.contract import (
    MANIFEST_FILE,
    MODEL_FILE,
    PALETTE_FILE,
    PROFILE_EXACT,
    PROFILE_FLOAT,
    exact_io_names,
)
from igpt_codec.runtime.positions import GRID, LAYOUTS
from igpt_codec.runtime.session import GRAPH_OPTIMIZATION

log = logging.getLogger(__name__)

PARITY_REFERENCE = "transformers ImageGPTForCausalImageModeling, full sequence, use_cache=False"
PARITY_METHOD = (
    "igpt_codec.runtime.TokenModel token by token (preallocated KV cache, codec's options)"
)
RUNTIME_NOTES = {
    "graph_optimization_level": GRAPH_OPTIMIZATION.name,
    "step_0": "past_length 0 (one all-hidden chunk), SOS",
}


PROFILES = {"exact": PROFILE_EXACT, "float": PROFILE_FLOAT}
"""CLI names of the bundle profiles (codec/runtime/bundle.py)."""


def export_bundle(
    source: str,
    out_dir: Path,
    palette: Path | None = None,
    profile: str = "exact",
    opset: int = DEFAULT_OPSET,
    parity_tokens: int = 256,
    parity_tol: float = 1e-4,
    parity_images: Sequence[Path] | None = None,
    force: bool = False,
    calibration_images: int | None = None,
    positions: str = GRID,
    attention_span: int | None = None,
) -> dict[str, Any]:
    """Export SOURCE to a bundle directory and return its manifest.

    profile "exact" (the default) writes the integer graph whose tables are the same on
    every machine; "float" the float32 step graph (parity and measurement only: its files
    decode only where they were written). Either way the float model must match
    transformers within parity_tol (max |logit difference|) or nothing is written.
    `positions` (exact only): "grid" gives token (row, col) of any N x N image the
    position row * 32 + col the model knows; "raster" feeds 0..N²-1 (codec/runtime/positions.py).
    `attention_span` S (exact only): token t attends to positions t-S..t, the cache is a ring
    of S slots (contract exact-int-v1-span, another fingerprint); None takes the checkpoint's
    config.json field `attention_span` (absent: full attention). Parity against transformers
    is measured without the span (transformers has none: it proves the weights were read
    right); the exact graph's cost is measured against the float model with the span.
    """
    if positions not in LAYOUTS:
        raise ExportError(f"unknown position layout {positions!r} (choose from {LAYOUTS})")
    if profile not in PROFILES:
        raise ExportError(f"unknown profile {profile!r} (choose from {', '.join(PROFILES)})")
    out_dir = Path(out_dir).expanduser().resolve()
    _check_target(out_dir, force)
    started = time.perf_counter()
    timing: dict[str, float] = {}

    resolved = resolve_source(source, palette)
    lean, shape = _lean_model(resolved.model, attention_span)
    if shape.attention_span is not None and profile != "exact":
        raise ExportError("an attention span is exported only with the exact profile")
    images = list(parity_images) if parity_images is not None else default_parity_images()
    sequences = parity_sequences(images, resolved.palette, min(parity_tokens, shape.n_positions))
    timing["load"] = _lap(started)

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; the bundle is meant to be shared read-only
    try:
        t = time.perf_counter()
        reference = torch_reference(resolved.model, sequences)
        extra: dict[str, Any] = {}
        if profile == "float":
            log.info("exporting %s (%d layers) to ONNX opset %d", source, shape.n_layer, opset)
            names = _trace(lean, tmp / MODEL_FILE, opset)
            timing["onnx_export"] = _lap(t)
            t = time.perf_counter()
            parity = measure_parity(tmp / MODEL_FILE, names, resolved.model, sequences, reference)
            if not parity.pop("batch_invariant"):
                raise ExportError("the float graph is not batch-invariant on this machine")
            parity["method"] = PARITY_METHOD
            inputs, outputs = names.inputs, names.outputs
        else:
            parity = exact_parity(lean, sequences, reference[0])
            _enforce(parity, parity_tol, sequences)
            log.info("building the exact graph of %s (%d layers)", source, shape.n_layer)
            result = build_exact(
                lean,
                tmp / MODEL_FILE,
                calibration=calibration_images,
                attention_span=shape.attention_span,
            )
            timing["exact_graph"] = _lap(t)
            extra["exact"] = result.report
            inputs, outputs = exact_io_names(shape.n_layer)
            opset = EXACT_OPSET
        timing["parity"] = _lap(t)
        log.info("float parity: max |dlogit| %.3g", parity["max_abs_logit_diff"])
        _enforce(parity, parity_tol, sequences)
        parity |= {"tolerance": parity_tol, "enforced": True, "reference": PARITY_REFERENCE}
        del lean

        np.save(tmp / PALETTE_FILE, np.ascontiguousarray(resolved.palette, dtype=np.float32))
        timing["total"] = _lap(started)
        manifest = build_manifest(
            bundle_dir=tmp,
            files=_bundle_files(tmp),
            source=resolved.info,
            shape=shape,
            profile=PROFILES[profile],
            inputs=inputs,
            outputs=outputs,
            opset=opset,
            parity=parity,
            timing={k: round(v, 3) for k, v in timing.items()},
            extra=extra | {"runtime": RUNTIME_NOTES},
            positions=positions,
        )
        (tmp / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
        _install(tmp, out_dir, force)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("bundle written to %s (fingerprint %s)", out_dir, manifest["fingerprint"])
    return manifest


def _enforce(parity: dict[str, Any], tol: float, sequences: np.ndarray) -> None:
    if not parity["max_abs_logit_diff"] <= tol:
        raise ExportError(
            f"parity check failed: max |logit difference| {parity['max_abs_logit_diff']:.3g} "
            f"> tolerance {tol:g} over {sequences.size} positions"
        )


def exact_parity(lean, sequences: np.ndarray, ref_logits: np.ndarray) -> dict[str, Any]:
    """The exact plan's float reference (numpy weights) against transformers' logits.

    Proves the weights were read the way transformers uses them; the integer model's own
    distance from this reference is a cost in bits, measured separately.
    """
    logp = float_forward(
        float_weights(lean),
        sequences,
        np.broadcast_to(np.arange(sequences.shape[1]), sequences.shape),
    )
    ref = ref_logits.astype(np.float64)
    ref_logp = ref - ref.max(-1, keepdims=True)
    ref_logp -= np.log(np.exp(ref_logp).sum(-1, keepdims=True))
    return {
        "max_abs_logit_diff": float(np.abs(logp - ref_logp).max()),
        "compared": "log-softmax of the float reference used for calibration",
        "positions": int(sequences.shape[1]),
        "sequences": int(sequences.shape[0]),
    }


def _lean_model(hf_model, attention_span: int | None = None):
    """The lean module and its shape; the span from the argument or else the checkpoint."""
    import dataclasses

    from igpt_codec.export.igpt_torch import IGPTShape, from_transformers

    try:
        shape = IGPTShape.from_config(hf_model.config)
    except (ValueError, RuntimeError) as exc:
        raise ExportError(f"unsupported ImageGPT checkpoint: {one_line(exc)}") from exc
    if attention_span is not None:
        if shape.attention_span not in (None, attention_span):
            raise ExportError(
                f"attention span {attention_span} differs from the checkpoint's "
                f"{shape.attention_span}"
            )
        try:
            shape = dataclasses.replace(shape, attention_span=attention_span)
        except ValueError as exc:
            raise ExportError(one_line(exc)) from exc
    try:
        return from_transformers(hf_model, shape.attention_span), shape
    except (ValueError, RuntimeError) as exc:
        raise ExportError(f"unsupported ImageGPT checkpoint: {one_line(exc)}") from exc


def _trace(lean, path: Path, opset: int):
    import onnx

    try:
        names = export_step_graph(lean, path, opset)
        onnx.checker.check_model(str(path))
    except Exception as exc:  # the exporter raises many types; the user needs the first line
        raise ExportError(f"ONNX export (opset {opset}) failed: {one_line(exc)}") from exc
    return names


def _bundle_files(tmp: Path) -> list[str]:
    """model.onnx, palette.npy and any external-data files the exporter wrote beside them."""
    others = sorted(p.name for p in tmp.iterdir() if p.name not in (MODEL_FILE, PALETTE_FILE))
    return [MODEL_FILE, PALETTE_FILE, *others]


def _check_target(out_dir: Path, force: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise ExportError(f"{out_dir} exists and is not a directory")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not force:
        raise ExportError(f"{out_dir} exists and is not empty (use --force to replace it)")


def _install(tmp: Path, out_dir: Path, force: bool) -> None:
    """Rename the finished bundle into place; an old bundle is removed only after that."""
    _check_target(out_dir, force)
    old = None
    if out_dir.is_dir():
        old = out_dir.with_name(f".{out_dir.name}.old-{time.time_ns()}")
        out_dir.rename(old)
    tmp.rename(out_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _lap(since: float) -> float:
    return time.perf_counter() - since
