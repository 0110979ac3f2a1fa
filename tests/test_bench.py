"""The benchmark's quick path end to end on the tiny bundle: every section runs, the
results have their keys, and the numbers obey the few laws they must (the coder cannot
beat its own tables, raw is 9 bits, the shared stream decodes).

The float-model ideal is not checked against the payload: with random weights the
model is confidently wrong, and the frequency floor codes such tokens in fewer bits
than -log2 p (docs/benchmarks.md). The integer-table ideal is the real floor.
Packages of the `bench` extra are optional here; what they provide is checked when present.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench import config as presets
from bench.classical import PACKINGS, pack_bits9, pack_planes
from bench.data import validation_images
from bench.run import CHART_PNG, RESULTS_JSON, RESULTS_MD, run

SIDE = 8
SLACK_BITS = 16
"""The range coder's flush may land a few bits either side of the table ideal."""


def _photos(directory: Path, count: int) -> Path:
    """Small synthetic photos: smooth gradients with noise, so every codec has work."""
    rng = np.random.default_rng(7)
    directory.mkdir()
    y, x = np.mgrid[0:48, 0:64]
    for i in range(count):
        base = np.stack([x * 4 + 40 * i, y * 5, (x + y) * 2], axis=-1)
        pixels = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(directory / f"photo_{i}.png")
    return directory


@pytest.fixture(scope="module")
def results(tiny_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("bench")
    config = presets.quick(
        images=_photos(root / "images", 3),
        model=tiny_bundle,
        out=root / "out",
        size=SIDE,
        igpt_s=str(tiny_bundle),  # any bundle exercises the iGPT-S probe path
        coder_symbols=4000,
        bandwidth_mib=16,
    )
    run(config, log=lambda message: None)
    for name in (RESULTS_JSON, RESULTS_MD):
        assert (config.out / name).stat().st_size > 0
    if importlib.util.find_spec("matplotlib") is not None:
        assert (config.out / CHART_PNG).read_bytes().startswith(b"\x89PNG")
    return json.loads((config.out / RESULTS_JSON).read_text())


def test_sections_present(results: dict) -> None:
    for key in ("machine", "config", "model", "images", "compression", "speed", "bounds", "coder"):
        assert key in results, key
    assert results["images"]["count"] == 3
    assert results["machine"]["cpu_model"]
    assert results["machine"]["versions"]["onnxruntime"]
    assert results["timings_s"]["total"] > 0


def test_compression_numbers_are_sane(results: dict) -> None:
    c = results["compression"]
    formats = c["formats"]
    assert formats["raw9"]["bits_per_token"] == 9.0
    for key in ("ours_alone", "ours_record", "ours_payload", "png_rgb", "lzma"):
        assert formats[key]["bits_per_token"] > 0, key
    tokens = SIDE * SIDE
    for row in c["per_image"]:
        ours = row["ours"]
        assert ours["alone_stream_bytes"] > ours["record_bytes"] > ours["payload_bytes"] > 0
        assert ours["table_ideal_bits"] <= 8 * ours["payload_bytes"] + SLACK_BITS
        assert ours["ideal_bits"] > 0
        assert row["bits_per_token"]["raw9"] == 9.0
        assert row["tokens"] == tokens
    shared = c["shared_stream"]
    assert shared["decoded_losslessly"]
    assert shared["payloads_identical_alone_vs_shared"] == 3
    assert c["ours"]["coder_overhead_pct"] < 1.0
    for name in ("brotli", "zstd", "lzma"):  # brotli and zstd only with the bench extra
        if name in formats:
            assert formats[name]["packing"] in PACKINGS


def test_speed_and_bounds(results: dict) -> None:
    speed = results["speed"]
    default = speed["sampled"]["default"]
    assert default["past_lengths"][-1] == SIDE * SIDE - 1
    for row in default["estimates"]:
        assert row["encode_tokens_per_s"] > 0 and row["decode_tokens_per_s"] > 0
    probe = speed["sampled"]["igpt_s"]["estimates"]
    assert [(r["batch"], r["threads"]) for r in probe] == [(1, 1)]
    assert speed["end_to_end"]["alone_encode"]["median_tokens_per_s"] > 0
    for command in ("compress", "decompress"):
        assert speed["cli"][command]["median_seconds"] > 0
        assert speed["cli"][command]["peak_rss_bytes"] > 10 * 2**20
    bounds = results["bounds"]
    assert bounds["memory_bandwidth"]["gb_per_s"] > 0
    assert all(r["gflop_per_s"] > 0 for r in bounds["matmul"].values())
    assert all(r["bound_ms"] > 0 for r in bounds["steps"]["default"])


def test_coder_comparison(results: dict) -> None:
    coder = results["coder"]
    ours = coder["ours"]
    assert ours["payload_bytes"] >= coder["ideal_bytes"] - 2
    if "constriction" in coder:
        assert coder["constriction"]["prebuilt"]["payload_bytes"] > 0


def test_packings_are_lossless_layouts() -> None:
    tokens = np.array([0, 511, 256, 255, 1, 300, 7, 8, 9], dtype=np.int64)
    assert len(pack_bits9(tokens)) == (9 * tokens.size + 7) // 8
    planes = pack_planes(tokens)
    low = np.frombuffer(planes[: tokens.size], dtype=np.uint8)
    high = np.unpackbits(np.frombuffer(planes[tokens.size :], dtype=np.uint8))[: tokens.size]
    assert np.array_equal(low.astype(np.int64) + 256 * high.astype(np.int64), tokens)


def test_validation_set_lists_held_out_photos() -> None:
    try:
        paths = validation_images()
    except FileNotFoundError:
        pytest.skip("shared validation photos not present")
    names = {p.name for p in paths if p.parent.name == "wikipedia-photos"}
    assert names == {f"{i:03d}.png" for i in range(45, 50)}
    assert all(p.parent.name in ("val", "wikipedia-photos") for p in paths)
