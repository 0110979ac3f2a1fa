"""Golden files: streams written once (tests/golden/make_golden.py) and decoded forever.

They hold the format's promise: a change to the container, the coder, the exact graph
or the runner that stops them decoding to the committed tokens breaks files users have.
They also pin the encoder: the format is canonical and the exact profile deterministic,
so the same tokens must encode to the same bytes.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from igpt_codec import api
from igpt_codec.format.classical import ClassicalImageRecord
from igpt_codec.format.container import pack_stream, unpack_stream
from igpt_codec.format.records import CODING_ADAPTIVE, CODING_EXACT, CODING_MATCH, FullImageRecord
from igpt_codec.pipelines.fullres import FullImage, encode_full
from igpt_codec.pipelines.stream import TokenImage, encode
from igpt_codec.runtime.bundle import DEFAULT_BUNDLE_DIR, Bundle, load_bundle
from igpt_codec.runtime.exact_runner import ExactTokenModel
from igpt_codec.runtime.search import shipped_earlier

GOLDEN = Path(__file__).parent / "golden"
EXPECTED = json.loads((GOLDEN / "expected.json").read_text())


def bundles() -> dict[str, Bundle]:
    """Every bundle a golden file may need, by fingerprint."""
    dirs = [
        DEFAULT_BUNDLE_DIR,
        *shipped_earlier(),
        GOLDEN / "model",
        *sorted((GOLDEN / "models").glob("*")),
    ]
    found = {}
    for path in dirs:
        if (path / "manifest.json").is_file():
            bundle = load_bundle(path)
            found[bundle.fingerprint.hex()] = bundle
    return found


BUNDLES = bundles()


def test_every_golden_file_is_listed() -> None:
    files = sorted(p.name for p in GOLDEN.glob("*.igpt"))
    assert files == sorted(EXPECTED) and len(files) >= 4
    assert {EXPECTED[name]["fingerprint"] for name in files} <= set(BUNDLES)
    sides = {r["side"] for entry in EXPECTED.values() for r in entry["records"]}
    assert {1, 8, 16, 24, 32} <= sides  # several sizes, one and many records per stream
    full = [r for entry in EXPECTED.values() for r in entry["records"] if r.get("full")]
    assert {tuple(r["size"]) for r in full} >= {(70, 67), (1030, 3), (33, 35)}
    assert {len(entry["records"]) for entry in EXPECTED.values()} >= {1, 4}


def test_golden_files_hold_every_full_resolution_coding() -> None:
    """Plain exact tables (the first full-resolution files), adaptive mixing (coding 2) and
    the longer-reach levels after it (coding 3; writers keep the smaller of 2 and 3), each
    under the frozen tiny model; codings 2 and 3 also under a real one."""
    codings = {}
    for name in EXPECTED:
        for record in unpack_stream((GOLDEN / name).read_bytes()):
            if isinstance(record, FullImageRecord):
                codings.setdefault(record.header.coding, set()).add(name)
    assert set(codings) == {CODING_EXACT, CODING_ADAPTIVE, CODING_MATCH}
    assert "tiny_full.igpt" in codings[CODING_EXACT]
    assert {"tiny_full_adaptive.igpt", "default_full_adaptive.igpt"} <= codings[CODING_ADAPTIVE]
    assert {"tiny_full_match.igpt", "default_full_match.igpt"} <= codings[CODING_MATCH]


def test_golden_files_hold_both_segment_layouts() -> None:
    """One segment per band and chain (the first files) and one per chain (the CHAIN bit,
    written since 2026-12), the latter with several bands in a chain's segment."""
    layouts: dict[bool, set[str]] = {False: set(), True: set()}
    chains_over_bands = set()
    for name in EXPECTED:
        for record in unpack_stream((GOLDEN / name).read_bytes()):
            if isinstance(record, FullImageRecord):
                header = record.header
                layouts[header.chain_segments].add(name)
                if header.chain_segments and len(header.tiling.bands()) > 1:
                    chains_over_bands.add(name)
    assert {"tiny_full.igpt", "default_full_adaptive.igpt"} <= layouts[False]
    assert "tiny_full_chain.igpt" in layouts[True] and chains_over_bands


def test_golden_files_hold_a_span_bundles_ring() -> None:
    """Files of a model with an attention span (exact-int-v1-span, the ring cache): a
    thumbnail longer than the ring (it wraps), and a full-resolution band whose known-rows
    call is longer than the ring (only its last S positions stay)."""
    span_bundles = [b for b in BUNDLES.values() if b.attention_span is not None]
    assert len(span_bundles) >= 2  # the tiny span-64 bundle and the shipped default (v5)
    for span_bundle in span_bundles:
        span = span_bundle.attention_span
        assert span is not None and span_bundle.manifest["io"]["cache_layout"]["ring"] == span
        fingerprint = span_bundle.fingerprint.hex()
        names = [n for n in EXPECTED if EXPECTED[n]["fingerprint"] == fingerprint]
        thumbs, known = [], []
        for name in names:
            for record in unpack_stream((GOLDEN / name).read_bytes()):
                if isinstance(record, FullImageRecord):
                    known += [
                        band.known * record.header.grid + 1 for band in record.header.tiling.bands()
                    ]
                else:
                    thumbs.append(record.header.side**2)
        assert max(thumbs) > span and max(known) > span, fingerprint


@pytest.mark.parametrize("name", sorted(EXPECTED))
@pytest.mark.parametrize(("threads", "max_batch"), [(1, 16), (2, 1)])
def test_golden_file_decodes_to_its_tokens(name: str, threads: int, max_batch: int) -> None:
    entry = EXPECTED[name]
    data = (GOLDEN / name).read_bytes()
    assert len(data) == entry["bytes"]
    bundle = BUNDLES[entry["fingerprint"]]
    records = unpack_stream(data)
    from igpt_codec.pipelines.stream import decode

    decoded = list(decode(records, bundle, threads=threads, max_batch=max_batch))
    assert len(decoded) == len(entry["records"])
    for got, want in zip(decoded, entry["records"], strict=True):
        assert isinstance(got, FullImage) == want.get("full", False)
        assert getattr(got, "side", None) == want["side"]
        assert [got.width, got.height] == want["size"] and got.mode == want["mode"]
        assert np.array_equal(got.tokens, np.array(want["tokens"]))


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_same_tokens_encode_to_the_same_bytes(name: str) -> None:
    """Thumbnails from their tokens alone; a full-resolution image from its tokens and the
    layout its header chose (context rows and segment width are the writer's choice)."""
    entry = EXPECTED[name]
    bundle = BUNDLES[entry["fingerprint"]]
    stored = unpack_stream((GOLDEN / name).read_bytes())
    model = ExactTokenModel(bundle, threads=1)
    records = []
    for want, old in zip(entry["records"], stored, strict=True):
        tokens = np.array(want["tokens"], np.uint16)
        if isinstance(old, ClassicalImageRecord):  # a PNG/WebP file: its bytes are the
            records.append(old)  # encoder library's, not the format's (no canonical file)
            continue
        if want.get("full"):
            image = FullImage(tokens, want["mode"])
            records.append(encode_full(model, image, old.header)[0])
        else:
            thumb = TokenImage(tokens, want["side"], *want["size"], want["mode"])
            records.append(next(iter(encode([thumb], bundle, threads=1))).record)
    assert pack_stream(records) == (GOLDEN / name).read_bytes()


def test_golden_files_through_the_public_api(monkeypatch: pytest.MonkeyPatch) -> None:
    """No model named: the stream's fingerprint finds the frozen bundle on the search path."""
    monkeypatch.setenv("IGPT_CODEC_MODELS", os.pathsep.join([str(GOLDEN), str(GOLDEN / "models")]))
    monkeypatch.setenv("XDG_CACHE_HOME", str(GOLDEN / "no-cache-here"))
    names = ("tiny_many.igpt", "default_one_32.igpt", "tiny_full.igpt", "tiny_full_adaptive.igpt")
    for name in names:
        decoded = api.decompress(GOLDEN / name)
        for got, want in zip(decoded, EXPECTED[name]["records"], strict=True):
            assert np.array_equal(got.tokens, np.array(want["tokens"]))
