"""Export: tiny checkpoints become verified bundles; bad SOURCEs fail on one line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import CLUSTERS_NPY, shared_data_dir

pytest.importorskip("torch")
pytest.importorskip("transformers")

from export.errors import ExportError
from export.onnx_export import export_bundle
from export.palette_source import load_palette_file
from format.errors import CodecError

FAST_PARITY = 16  # positions; enough to prove a bundle is written, far quicker than 256


def manifest_of(bundle: Path) -> dict:
    return json.loads((bundle / "manifest.json").read_text())


def assert_one_line(exc: pytest.ExceptionInfo, *fragments: str) -> None:
    message = str(exc.value)
    assert "\n" not in message and message
    for fragment in fragments:
        assert fragment in message


def test_tiny_export_manifest(tiny_bundle: Path, tiny_checkpoint_dir: Path) -> None:
    m = manifest_of(tiny_bundle)
    assert m["bundle_format_version"] == 1
    assert m["parity"]["max_abs_logit_diff"] <= 1e-4
    assert m["parity"]["max_abs_prob_diff"] <= 1e-5
    assert m["parity"]["positions"] >= 256 and m["parity"]["sequences"] >= 2
    assert m["parity"]["enforced"] is True
    assert m["quantization"] == "none" and m["batch_invariant"] is True
    assert m["opset"] == 17 and m["exporter"] == "torch.onnx legacy (dynamo=False)"
    assert {"torch", "transformers", "onnx", "onnxruntime", "numpy"} <= set(m["versions"])
    model = m["model"]
    assert (model["n_embd"], model["n_layer"], model["n_head"]) == (32, 2, 2)
    assert model["head_dim"] == 16 and model["n_positions"] == 1024 and model["vocab_size"] == 513
    assert m["graph_contract"] == "kv-prealloc-chunk64-v1"
    assert m["io"]["inputs"] == [
        "input_ids",
        "past_length",
        "past.0.key",
        "past.0.value",
        "past.1.key",
        "past.1.value",
    ]
    assert m["io"]["outputs"] == [
        "logits",
        "probs",
        "new.0.key",
        "new.0.value",
        "new.1.key",
        "new.1.value",
    ]
    assert m["io"]["new"] == m["io"]["outputs"][2:] and m["io"]["past"] == m["io"]["inputs"][2:]
    layout = m["io"]["cache_layout"]
    assert layout["chunk"] == 64
    assert layout["key"] == ["batch", "heads", "head_dim", "capacity"]
    assert layout["value"] == ["batch", "heads", "capacity", "head_dim"]
    assert set(m["files"]) == {"model.onnx", "palette.npy"}
    assert len(m["fingerprint"]) == 16
    source = m["source"]
    assert source["kind"] == "local" and source["path"] == str(tiny_checkpoint_dir.resolve())
    assert set(source["weights_sha256"]) == {"model.safetensors"}
    palette = np.load(tiny_bundle / "palette.npy")
    assert palette.dtype == np.float32 and np.array_equal(palette, np.load(CLUSTERS_NPY))


def test_onnx_graph_io_contract(tiny_bundle: Path) -> None:
    import onnx

    graph = onnx.load(str(tiny_bundle / "model.onnx")).graph

    def dims(value) -> list:
        return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]

    inputs = {v.name: v for v in graph.input}
    outputs = {v.name: v for v in graph.output}
    assert dims(inputs["input_ids"]) == ["batch", "seq"]
    assert inputs["input_ids"].type.tensor_type.elem_type == onnx.TensorProto.INT64
    assert dims(inputs["past_length"]) == []
    assert inputs["past_length"].type.tensor_type.elem_type == onnx.TensorProto.INT64
    assert dims(inputs["past.1.key"]) == ["batch", 2, 16, "capacity"]
    assert dims(inputs["past.1.value"]) == ["batch", 2, "capacity", 16]
    assert dims(outputs["probs"]) == ["batch", "seq", 512]
    assert dims(outputs["logits"]) == ["batch", "seq", 512]
    assert dims(outputs["new.0.key"]) == ["batch", 2, 16, "seq"]
    assert dims(outputs["new.0.value"]) == ["batch", 2, "seq", 16]
    assert len(graph.input) == 6 and len(graph.output) == 6
    # The cache is only read (attention MatMuls; Shape for its capacity), never concatenated.
    readers = {n.op_type for n in graph.node for i in n.input if i.startswith("past.")}
    assert readers == {"MatMul", "Shape"}


def test_int8_export_records_parity_and_is_smaller(int8_bundle: Path, tiny_bundle: Path) -> None:
    m = manifest_of(int8_bundle)
    assert m["quantization"] == "int8-dynamic" and m["batch_invariant"] is False
    assert m["parity"]["enforced"] is False and m["parity"]["max_abs_logit_diff"] > 1e-4
    assert m["parity"]["fp32"]["max_abs_logit_diff"] <= 1e-4
    assert (
        m["files"]["model.onnx"]["bytes"] < manifest_of(tiny_bundle)["files"]["model.onnx"]["bytes"]
    )
    assert m["fingerprint"] != manifest_of(tiny_bundle)["fingerprint"]


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(ExportError) as exc:
        export_bundle(str(tmp_path / "nope"), tmp_path / "out")
    assert_one_line(exc, "does not exist")
    assert isinstance(exc.value, CodecError)


def test_directory_without_config(tmp_path: Path) -> None:
    (tmp_path / "ckpt").mkdir()
    with pytest.raises(ExportError) as exc:
        export_bundle(str(tmp_path / "ckpt"), tmp_path / "out")
    assert_one_line(exc, "config.json")


def test_not_imagegpt(tmp_path: Path) -> None:
    ckpt = tmp_path / "gpt2"
    ckpt.mkdir()
    (ckpt / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_embd": 32}))
    with pytest.raises(ExportError) as exc:
        export_bundle(str(ckpt), tmp_path / "out")
    assert_one_line(exc, "'gpt2'", "imagegpt")


def test_hub_id_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.chdir(tmp_path)  # so "openai/imagegpt-small" is not a local path by accident
    with pytest.raises(ExportError) as exc:
        export_bundle("openai/imagegpt-small", tmp_path / "out")
    assert_one_line(exc, "openai/imagegpt-small", "hub")
    assert not (tmp_path / "out").exists()


def checkpoint_without_palette(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("preprocessor_config.json"))
    return dst


def test_missing_palette_names_the_option(tiny_checkpoint_dir: Path, tmp_path: Path) -> None:
    ckpt = checkpoint_without_palette(tiny_checkpoint_dir, tmp_path / "ckpt")
    with pytest.raises(ExportError) as exc:
        export_bundle(str(ckpt), tmp_path / "out")
    assert_one_line(exc, "--palette")


def test_palette_option_fills_in(tiny_checkpoint_dir: Path, tmp_path: Path) -> None:
    ckpt = checkpoint_without_palette(tiny_checkpoint_dir, tmp_path / "ckpt")
    m = export_bundle(str(ckpt), tmp_path / "out", palette=CLUSTERS_NPY, parity_tokens=FAST_PARITY)
    assert m["source"]["palette_from"] == str(CLUSTERS_NPY.resolve())
    assert np.array_equal(np.load(tmp_path / "out" / "palette.npy"), np.load(CLUSTERS_NPY))


def test_palette_file_formats(tmp_path: Path) -> None:
    clusters = np.load(CLUSTERS_NPY)
    bare = tmp_path / "bare.json"
    bare.write_text(json.dumps(clusters.tolist()))
    assert np.array_equal(load_palette_file(bare), clusters)
    shared_json = shared_data_dir() / "imagegpt_clusters.json"
    if shared_json.is_file():
        assert np.array_equal(load_palette_file(shared_json), clusters)
    for bad, fragment in [
        (np.zeros((511, 3), np.float32), "(512, 3)"),
        (np.full((512, 3), 2.0, np.float32), "[-1, 1]"),
    ]:
        np.save(tmp_path / "bad.npy", bad)
        with pytest.raises(ExportError) as exc:
            load_palette_file(tmp_path / "bad.npy")
        assert_one_line(exc, fragment)
    (tmp_path / "p.txt").write_text("x")
    with pytest.raises(ExportError, match=r"\.npy or \.json"):
        load_palette_file(tmp_path / "p.txt")


def test_conflicting_palette_refused(tiny_checkpoint_dir: Path, tmp_path: Path) -> None:
    other = np.load(CLUSTERS_NPY)[::-1].copy()
    np.save(tmp_path / "other.npy", other)
    with pytest.raises(ExportError) as exc:
        export_bundle(str(tiny_checkpoint_dir), tmp_path / "out", palette=tmp_path / "other.npy")
    assert_one_line(exc, "differs")


def test_refuses_non_empty_out_dir_unless_forced(tiny_checkpoint_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    with pytest.raises(ExportError) as exc:
        export_bundle(str(tiny_checkpoint_dir), out, parity_tokens=FAST_PARITY)
    assert_one_line(exc, "not empty")
    assert (out / "keep.txt").exists()
    export_bundle(str(tiny_checkpoint_dir), out, parity_tokens=FAST_PARITY, force=True)
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "model.onnx", "palette.npy"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temp or old dirs left behind


def test_parity_failure_writes_nothing(tiny_checkpoint_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ExportError) as exc:
        export_bundle(str(tiny_checkpoint_dir), tmp_path / "out", parity_tol=0.0, parity_tokens=32)
    assert_one_line(exc, "parity check failed", "tolerance")
    assert list(tmp_path.iterdir()) == []


def test_unknown_quantization(tiny_checkpoint_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ExportError) as exc:
        export_bundle(str(tiny_checkpoint_dir), tmp_path / "out", quantize="int4")
    assert_one_line(exc, "int4")


@pytest.mark.slow
def test_igpt_s_shaped_export(tmp_path: Path) -> None:
    """iGPT-S shape (512 wide, 24 layers, 8 heads), random weights: ~1-2 min, ~2 GB RAM."""
    from export.make_random_checkpoint import write_random_checkpoint

    ckpt = write_random_checkpoint(
        tmp_path / "ckpt", n_embd=512, n_layer=24, n_head=8, n_positions=1024, lm_head_scale=10.0
    )
    m = export_bundle(str(ckpt), tmp_path / "bundle")
    assert m["parity"]["max_abs_logit_diff"] <= 1e-4
    assert m["batch_invariant"] is True
    assert m["files"]["model.onnx"]["bytes"] > 250 * 2**20
