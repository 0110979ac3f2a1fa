"""The iGPT-S-shaped bundle for the speed section: given, made here, or skipped.

iGPT-S (512 wide, 24 layers, 8 heads, 76M parameters) is the smallest real
ImageGPT and the speed reference the default model is judged against. Random
weights run exactly as fast as trained ones, so `auto` exports a random-weights
checkpoint of that shape through the project's own export path (needs torch and
transformers) and caches the bundle under the output directory; later runs
reuse it after the usual sha256 verification. The export uses the profile the
codec ships (exact: integer graph, calibrated on 16 photos; calibration changes
the tables, not the speed); a given DIR may be either profile.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from igpt_codec.core.errors import BundleError
from igpt_codec.runtime.bundle import Bundle, load_bundle

IGPT_S_SHAPE = {"n_embd": 512, "n_layer": 24, "n_head": 8, "n_positions": 1024}
CACHE_NAME = "igpt_s_bundle"
EXPORT_PARITY_TOKENS = 64
"""Parity positions checked at export; 64 instead of 256 saves ~30 s and still catches a
broken graph (the fp32 check is enforced all the same)."""
EXPORT_PROFILE = "exact"
EXPORT_CALIBRATION_IMAGES = 16
"""As the export's own iGPT-S test: enough for a working integer plan; speed is the same."""


@dataclass(frozen=True)
class Resolved:
    """The bundle to time, or None with the reason in `note`."""

    bundle: Bundle | None
    note: str | None
    exported: bool = False


def export_igpt_s(target: Path, seed: int = 0, profile: str = EXPORT_PROFILE) -> None:
    """A random-weights iGPT-S checkpoint exported to `target` (exact profile by default)."""
    from transformers.utils import logging as hf_logging

    from igpt_codec.export.make_random_checkpoint import write_random_checkpoint
    from igpt_codec.export.onnx_export import export_bundle

    hf_logging.disable_progress_bar()  # keep the benchmark's stderr to its own lines
    with tempfile.TemporaryDirectory(prefix="igpt_s_ckpt_", dir=target.parent) as tmp:
        checkpoint = write_random_checkpoint(
            Path(tmp), **IGPT_S_SHAPE, seed=seed, lm_head_scale=10.0
        )
        export_bundle(
            str(checkpoint),
            target,
            profile=profile,
            parity_tokens=EXPORT_PARITY_TOKENS,
            calibration_images=EXPORT_CALIBRATION_IMAGES if profile == "exact" else None,
            force=True,
        )


def resolve_igpt_s(spec: str, out_dir: Path) -> Resolved:
    """`none`, a bundle directory, or `auto` (the cached export, made if missing)."""
    if spec == "none":
        return Resolved(None, "iGPT-S speed skipped (--igpt-s none)")
    if spec != "auto":
        try:
            return Resolved(load_bundle(Path(spec)), None)
        except BundleError as exc:
            return Resolved(None, f"iGPT-S speed skipped: {exc}")
    target = out_dir / CACHE_NAME
    note = None
    if target.is_dir():
        try:
            return Resolved(load_bundle(target), None)
        except BundleError as exc:
            shutil.rmtree(target, ignore_errors=True)
            note = f"the cached iGPT-S bundle was unusable ({exc}) and was exported again"
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError:
        return Resolved(None, "iGPT-S speed skipped: --igpt-s auto needs torch and transformers")
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        export_igpt_s(target)
        bundle = load_bundle(target)
    except Exception as exc:  # the exporter raises many types; the run goes on without it
        return Resolved(None, f"iGPT-S speed skipped: export failed ({type(exc).__name__}: {exc})")
    return Resolved(bundle, note, exported=True)
