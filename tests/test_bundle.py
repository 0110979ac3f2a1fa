"""Bundle loading: a verified bundle loads; any corruption is a BundleError naming the cause."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

import igpt_codec.runtime.bundle as bundle_mod
import igpt_codec.runtime.contract as contract_mod
from igpt_codec.core.errors import BundleError
from igpt_codec.runtime.bundle import Bundle, load_bundle
from igpt_codec.runtime.contract import (
    PROFILE_EXACT,
    coding_fields,
    compute_fingerprint,
    file_sha256,
)
from igpt_codec.runtime.exact_runner import ExactTokenModel

REPO_ROOT = Path(__file__).resolve().parents[1]


def flip_byte(path: Path, offset: int | None = None) -> None:
    data = bytearray(path.read_bytes())
    at = len(data) // 2 if offset is None else offset
    data[at] ^= 0x01
    path.write_bytes(bytes(data))


def edit_manifest(bundle: Path, edit: Callable[[dict], None], resign: bool = False) -> None:
    """Edit manifest.json; resign=True also recomputes the fingerprint, as a user who
    "fixes" a manifest by hand would, so the checks behind the fingerprint are reached."""
    manifest = json.loads((bundle / "manifest.json").read_text())
    edit(manifest)
    if resign:
        hashes = {name: entry["sha256"] for name, entry in manifest["files"].items()}
        manifest["fingerprint"] = compute_fingerprint(hashes, coding_fields(manifest)).hex()
    (bundle / "manifest.json").write_text(json.dumps(manifest))


def one_line_error(path: Path) -> str:
    with pytest.raises(BundleError) as exc:
        load_bundle(path)
    message = str(exc.value)
    assert message and "\n" not in message
    return message


def test_loads(tiny_bundle: Path) -> None:
    b = load_bundle(tiny_bundle)
    manifest = json.loads((tiny_bundle / "manifest.json").read_text())
    assert isinstance(b, Bundle)
    assert b.fingerprint == bytes.fromhex(manifest["fingerprint"]) and len(b.fingerprint) == 8
    assert (b.n_layer, b.n_head, b.head_dim, b.n_positions) == (2, 2, 16, 1024)
    assert b.profile == PROFILE_EXACT and b.exact and b.position_layout == "grid"
    assert b.model_path == tiny_bundle / "model.onnx"
    assert b.input_names == tuple(manifest["io"]["inputs"])
    assert b.output_names == tuple(manifest["io"]["outputs"])
    assert b.palette.dtype == np.float32 and b.palette.shape == (512, 3)
    assert not b.palette.flags.writeable


def test_fingerprint_covers_file_digests_and_coding_fields(tiny_bundle: Path) -> None:
    import hashlib

    model, palette = (file_sha256(tiny_bundle / n) for n in ("model.onnx", "palette.npy"))
    manifest = json.loads((tiny_bundle / "manifest.json").read_text())
    fields = json.dumps(coding_fields(manifest), sort_keys=True, separators=(",", ":"))
    joined = bytes.fromhex(model) + bytes.fromhex(palette)
    joined += hashlib.sha256(fields.encode()).digest()
    expected = hashlib.sha256(joined).digest()[:8]
    hashes = {"palette.npy": palette, "model.onnx": model}
    assert compute_fingerprint(hashes, coding_fields(manifest)) == expected
    assert load_bundle(tiny_bundle).fingerprint == expected
    assert coding_fields(manifest)["positions"] == "grid"


def test_different_models_have_different_fingerprints(
    tiny_bundle: Path, other_bundle: Path
) -> None:
    assert load_bundle(tiny_bundle).fingerprint != load_bundle(other_bundle).fingerprint


def test_default_bundle_dir(tiny_bundle: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bundle_mod, "DEFAULT_BUNDLE_DIR", tiny_bundle)
    assert load_bundle().path == tiny_bundle
    monkeypatch.setattr(bundle_mod, "DEFAULT_BUNDLE_DIR", tiny_bundle / "missing")
    assert "no model bundle" in one_line_error(None)


@pytest.mark.parametrize("name", ["model.onnx", "palette.npy"])
def test_flipped_byte_is_detected(name: str, tiny_bundle: Path, copy_bundle) -> None:
    bundle = copy_bundle(tiny_bundle)
    flip_byte(bundle / name)
    message = one_line_error(bundle)
    assert name in message and "corrupted" in message


def test_truncated_file_is_detected(tiny_bundle: Path, copy_bundle) -> None:
    bundle = copy_bundle(tiny_bundle)
    data = (bundle / "model.onnx").read_bytes()
    (bundle / "model.onnx").write_bytes(data[:-10])
    assert "model.onnx" in one_line_error(bundle)


@pytest.mark.parametrize("name", ["model.onnx", "palette.npy", "manifest.json"])
def test_missing_file(name: str, tiny_bundle: Path, copy_bundle) -> None:
    bundle = copy_bundle(tiny_bundle)
    (bundle / name).unlink()
    assert name in one_line_error(bundle)


def test_unknown_format_version(tiny_bundle: Path, copy_bundle) -> None:
    bundle = copy_bundle(tiny_bundle)
    edit_manifest(bundle, lambda m: m.update(bundle_format_version=7))
    assert one_line_error(bundle) == "unsupported bundle format version 7"
    edit_manifest(bundle, lambda m: m.update(bundle_format_version=1))
    assert "re-export" in one_line_error(bundle)


def test_bad_json(tiny_bundle: Path, copy_bundle) -> None:
    bundle = copy_bundle(tiny_bundle)
    (bundle / "manifest.json").write_text('{"bundle_format_version": 2,')
    assert "not valid JSON" in one_line_error(bundle)


def test_fingerprint_tamper(tiny_bundle: Path, copy_bundle) -> None:
    bundle = copy_bundle(tiny_bundle)
    edit_manifest(bundle, lambda m: m.update(fingerprint="00" * 8))
    assert "fingerprint" in one_line_error(bundle)


def test_swapped_palette_with_matching_hash_changes_fingerprint(
    tiny_bundle: Path, copy_bundle
) -> None:
    """Re-hashing a replaced palette is not enough: the fingerprint covers it too."""
    bundle = copy_bundle(tiny_bundle)
    np.save(bundle / "palette.npy", np.load(bundle / "palette.npy")[::-1].copy())
    digest = file_sha256(bundle / "palette.npy")
    edit_manifest(bundle, lambda m: m["files"]["palette.npy"].update(sha256=digest))
    assert "fingerprint" in one_line_error(bundle)


def test_unsafe_file_name(tiny_bundle: Path, copy_bundle) -> None:
    bundle = copy_bundle(tiny_bundle)
    entry = {"sha256": "0" * 64, "bytes": 1}
    edit_manifest(bundle, lambda m: m["files"].update({"../escape": entry}))
    assert "invalid file name" in one_line_error(bundle)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda m: m.update(graph_contract="kv-concat-v0"), "does not belong to profile"),
        (lambda m: m.update(profile="int4"), "unknown bundle profile"),
        (lambda m: m.update(positions="spiral"), "position layout 'spiral'"),
        (lambda m: m["io"]["inputs"].pop(), "io names"),
        (lambda m: m["model"].update(n_positions=1000), "not a square grid"),
        (lambda m: m["model"].update(n_layer=0), "n_layer must be a positive"),
    ],
)
def test_coding_fields_are_fingerprinted_then_checked(
    edit: Callable[[dict], None], message: str, tiny_bundle: Path, copy_bundle
) -> None:
    """Editing a coding field breaks the fingerprint; re-signing it reaches its own check."""
    bundle = copy_bundle(tiny_bundle)
    edit_manifest(bundle, edit)
    assert "fingerprint mismatch" in one_line_error(bundle)
    edit_manifest(bundle, lambda m: None, resign=True)
    assert message in one_line_error(bundle)


def test_other_cache_chunk_is_refused(tiny_bundle: Path, copy_bundle) -> None:
    bundle = copy_bundle(tiny_bundle)
    edit_manifest(bundle, lambda m: m["io"]["cache_layout"].update(chunk=32))
    assert "chunk 64" in one_line_error(bundle)


@pytest.mark.parametrize(
    "model", [{"head_dim": 47}, {"n_head": 1, "head_dim": 32}, {"n_head": 4, "head_dim": 8}]
)
def test_manifest_shapes_are_checked_against_the_graph(
    model: dict, tiny_bundle: Path, copy_bundle
) -> None:
    """Issue 12 finding 6: a re-signed manifest with other head sizes gets a BundleError
    naming both, not an onnxruntime traceback (before: InvalidArgument from session.run)."""
    bundle = copy_bundle(tiny_bundle)
    edit_manifest(bundle, lambda m: m["model"].update(model), resign=True)
    loaded = load_bundle(bundle)
    model = ExactTokenModel(loaded, threads=1)  # sessions open on first use
    with pytest.raises(BundleError, match="the manifest says") as info:
        _ = model.session
    assert "\n" not in str(info.value)


def test_corrupt_graph_with_rehashed_manifest(tiny_bundle: Path, copy_bundle) -> None:
    """A model.onnx that onnxruntime cannot parse, hashes "fixed": one-line BundleError."""
    bundle = copy_bundle(tiny_bundle)
    data = bytearray((bundle / "model.onnx").read_bytes())
    data[10:60] = b"\xff" * 50
    (bundle / "model.onnx").write_bytes(bytes(data))
    digest = file_sha256(bundle / "model.onnx")
    edit_manifest(bundle, lambda m: m["files"]["model.onnx"].update(sha256=digest), resign=True)
    model = ExactTokenModel(load_bundle(bundle), threads=1)
    with pytest.raises(BundleError, match=r"onnxruntime cannot load model\.onnx") as info:
        model.stepper(model.start(1))  # the first session it opens
    assert "\n" not in str(info.value)


def test_hashes_are_cached(tiny_bundle: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    load_bundle(tiny_bundle)

    def no_rehash(*args, **kwargs):
        raise AssertionError("a bundle file was hashed twice")

    monkeypatch.setattr(contract_mod.hashlib, "sha256", no_rehash)
    monkeypatch.setattr(bundle_mod, "compute_fingerprint", lambda hashes, fields: bytes(8))
    with pytest.raises(BundleError, match="fingerprint"):  # reached without re-hashing files
        load_bundle(tiny_bundle)


def test_runtime_modules_do_not_import_torch() -> None:
    code = (
        "import sys, igpt_codec.runtime.bundle, igpt_codec.runtime.exact_runner;"
        " sys.exit('torch' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True)
    assert result.returncode == 0, result.stderr.decode()


def test_graph_replaced_after_loading_is_refused(
    tiny_bundle: Path, other_bundle: Path, copy_bundle
) -> None:
    """The session is built from the bytes whose hash matches the manifest: a model.onnx
    swapped after load_bundle verified the bundle is refused, not silently used."""
    bundle_dir = copy_bundle(tiny_bundle)
    loaded = load_bundle(bundle_dir)
    model = ExactTokenModel(loaded, threads=1)
    (bundle_dir / "model.onnx").write_bytes((other_bundle / "model.onnx").read_bytes())
    with pytest.raises(BundleError, match="changed since its bundle was verified"):
        model.run(np.full((1, 1), 512), np.zeros((1, 1), np.int64), model.start(1))
