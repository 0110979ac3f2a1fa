"""The shipped default model: present, intact, small, and lossless on a held-out photo."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from igpt_codec import api
from igpt_codec.runtime.bundle import DEFAULT_BUNDLE_DIR, load_bundle

SAMPLE = Path(__file__).resolve().parents[1] / "samples" / "bsds500_val_101085.jpg"


def test_default_bundle_matches_its_manifest_hashes() -> None:
    manifest = json.loads((DEFAULT_BUNDLE_DIR / "manifest.json").read_text())
    assert set(manifest["files"]) >= {"model.onnx", "palette.npy"}
    total = 0
    for name, entry in manifest["files"].items():
        data = (DEFAULT_BUNDLE_DIR / name).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"], name
        total += len(data)
    assert total <= 25 * 1024 * 1024, "the shipped bundle must stay within 25 MB"
    bundle = load_bundle(None)
    assert bundle.fingerprint.hex() == manifest["fingerprint"]
    assert manifest["parity"]["max_abs_logit_diff"] <= 1e-4
    # The default is the exact profile, and its integer model costs little over its float
    # parent on the calibration-disjoint check photos. Issue 9 shipped +0.035% (bound 0.1%);
    # the sharper v2 of issue 10 costs +0.15% with the same plan (its held-out photos agree,
    # +0.14%), a trade against 2.5% fewer bits than the model it replaced. v6 (2 layers)
    # costs +0.208% on the check photos, and its exact tables code the 105 held-out photos
    # 0.9% below v5's (codec/models/README.md).
    assert bundle.exact and manifest["profile"] == "exact-int-v1"
    assert manifest["exact"]["cost"]["relative_cost_percent"] <= 0.25


def test_default_bundle_round_trips_a_held_out_photo() -> None:
    data = api.compress([SAMPLE])
    (decoded,) = api.decompress(data)
    bundle = load_bundle(None)
    expected = api.tokenize([SAMPLE], bundle, 32)[0].tokens
    assert np.array_equal(decoded.tokens, expected)
    # A trained model must beat raw 9-bit tokens by a wide margin on a photo.
    assert len(data) * 8 / 1024 < 7.0
