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

from igpt_codec.export.errors import ExportError
from igpt_codec.export.onnx_export import export_bundle
from igpt_codec.export.palette_source import load_palette_file
from igpt_codec.format.errors import CodecError

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
    assert m["bundle_format_version"] == 2
    assert m["profile"] == "exact-int-v1" and m["graph_contract"] == "exact-int-v1"
    assert m["positions"] == "grid" and m["batch_invariant"] is True
    assert m["parity"]["max_abs_logit_diff"] <= 1e-4
    assert m["parity"]["positions"] >= 256 and m["parity"]["sequences"] >= 2
    assert m["parity"]["enforced"] is True
    assert m["opset"] == 17 and m["exporter"].startswith("export.exact_graph")
    assert {"torch", "transformers", "onnx", "onnxruntime", "numpy"} <= set(m["versions"])
    model = m["model"]
    assert (model["n_embd"], model["n_layer"], model["n_head"]) == (32, 2, 2)
    assert model["head_dim"] == 16 and model["n_positions"] == 1024 and model["vocab_size"] == 513
    assert m["io"]["inputs"] == [
        "input_ids",
        "position_ids",
        "past_length",
        "past.0.key",
        "past.0.value",
        "past.1.key",
        "past.1.value",
    ]
    assert m["io"]["outputs"] == ["freqs", "new.0.key", "new.0.value", "new.1.key", "new.1.value"]
    layout = m["io"]["cache_layout"]
    assert layout["chunk"] == 64
    assert layout["key"] == ["batch", "heads", "head_dim", "capacity"]
    assert layout["value"] == ["batch", "heads", "capacity", "head_dim"]
    assert set(m["files"]) == {"model.onnx", "palette.npy"}
    assert len(m["fingerprint"]) == 16
    exact = m["exact"]
    cost = exact["cost"]
    assert cost["check_tokens"] > 0 and cost["float_bits_per_token"] > 0
    assert abs(cost["relative_cost_percent"]) < 5  # a random tiny model; the default: 0.08
    assert exact["self_check"]["whole_equals_stepwise"] is True
    assert exact["self_check"]["batch_equals_alone"] is True
    source = m["source"]
    assert source["kind"] == "local" and source["path"] == str(tiny_checkpoint_dir.resolve())
    assert set(source["weights_sha256"]) == {"model.safetensors"}
    palette = np.load(tiny_bundle / "palette.npy")
    assert palette.dtype == np.float32 and np.array_equal(palette, np.load(CLUSTERS_NPY))


def test_exact_graph_uses_only_exact_ops(tiny_bundle: Path) -> None:
    """DESIGN.md rule 3: no op whose result is implementation-defined on floats."""
    import onnx

    graph = onnx.load(str(tiny_bundle / "model.onnx")).graph
    ops = {node.op_type for node in graph.node}
    forbidden = {"Exp", "Tanh", "Erf", "Sqrt", "Pow", "Softmax", "LayerNormalization", "Log"}
    forbidden |= {"Sigmoid", "ReduceMean", "DynamicQuantizeLinear", "MatMulInteger", "Reciprocal"}
    assert not ops & forbidden
    assert {"MatMul", "Gather", "Round", "ReduceSumSquare", "Div"} <= ops
    # Table lookups (exp, GELU, frequencies) go through GatherElements: Gather over a
    # long 1-D table is the slow path (export/exact_graph.py, _lookup).
    lookups = {node.input[0] for node in graph.node if node.op_type == "GatherElements"}
    gathered = {node.input[0] for node in graph.node if node.op_type == "Gather"}
    tables = {name for name in lookups | gathered if name.endswith((".exp", ".gelu", "freq_table"))}
    assert lookups == tables and len(tables) == 2 * 2 + 1  # exp, GELU per layer (2); freqs

    def dims(value) -> list:
        return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]

    inputs = {v.name: v for v in graph.input}
    outputs = {v.name: v for v in graph.output}
    assert dims(inputs["position_ids"]) == ["batch", "seq"]
    assert dims(inputs["past.1.key"]) == ["batch", 2, 16, "capacity"]
    assert dims(outputs["freqs"]) == ["batch", "seq", 512]
    assert outputs["freqs"].type.tensor_type.elem_type == onnx.TensorProto.INT32
    # The cache is only read (attention MatMuls; Shape for its capacity), never concatenated.
    readers = {n.op_type for n in graph.node for i in n.input if i.startswith("past.")}
    assert readers == {"MatMul", "Shape"}


def test_float_profile_manifest_and_graph(float_bundle: Path) -> None:
    import onnx

    m = manifest_of(float_bundle)
    assert m["profile"] == "float32" and m["graph_contract"] == "kv-prealloc-chunk64-v1"
    assert m["positions"] == "raster" and m["parity"]["max_abs_logit_diff"] <= 1e-4
    assert m["parity"]["max_abs_prob_diff"] <= 1e-5
    graph = onnx.load(str(float_bundle / "model.onnx")).graph
    readers = {n.op_type for n in graph.node for i in n.input if i.startswith("past.")}
    assert readers == {"MatMul", "Shape"}
    assert m["fingerprint"] != manifest_of(float_bundle.parent / "tiny")["fingerprint"]


def test_float_bundle_as_a_source(tmp_path: Path) -> None:
    """The default model's float parent converts to an exact bundle (how the shipped one
    was made): the weights read back from ONNX must reproduce transformers' logits."""
    parent = Path(__file__).parent / "data" / "default-float"
    m = export_bundle(
        str(parent), tmp_path / "converted", calibration_images=4, parity_tokens=FAST_PARITY
    )
    assert m["source"]["kind"] == "float-bundle" and m["profile"] == "exact-int-v1"
    assert m["parity"]["max_abs_logit_diff"] <= 1e-4
    with pytest.raises(ExportError) as exc:
        export_bundle(str(tmp_path / "converted"), tmp_path / "again")
    assert_one_line(exc, "only float32 ones convert")


def test_float_bundle_with_shared_initializers_is_refused(
    float_bundle: Path, tmp_path: Path
) -> None:
    """An untrained model's identical zero biases are stored once: a clear refusal."""
    with pytest.raises(ExportError) as exc:
        export_bundle(str(float_bundle), tmp_path / "out")
    assert_one_line(exc, "does not name")


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


def test_unknown_profile(tiny_checkpoint_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ExportError) as exc:
        export_bundle(str(tiny_checkpoint_dir), tmp_path / "out", profile="int4")
    assert_one_line(exc, "int4")


@pytest.mark.slow
@pytest.mark.parametrize("profile", ["exact", "float"])
def test_igpt_s_shaped_export(profile: str, tmp_path: Path) -> None:
    """iGPT-S shape (512 wide, 24 layers, 8 heads), random weights: a few minutes, ~3 GB RAM.

    The exact graph splits the 2048-wide MLP projection into float32 MatMuls of at most
    1039 inputs (each sum exact), so iGPT-S needs no float64 MatMul.
    """
    from igpt_codec.export.make_random_checkpoint import write_random_checkpoint

    ckpt = write_random_checkpoint(
        tmp_path / "ckpt", n_embd=512, n_layer=24, n_head=8, n_positions=1024, lm_head_scale=10.0
    )
    m = export_bundle(str(ckpt), tmp_path / "bundle", profile=profile, calibration_images=16)
    assert m["parity"]["max_abs_logit_diff"] <= 1e-4
    if profile == "exact":
        assert m["exact"]["self_check"]["whole_equals_stepwise"] is True
        assert m["files"]["model.onnx"]["bytes"] > 70 * 2**20  # int8 values in float32
    else:
        assert m["files"]["model.onnx"]["bytes"] > 250 * 2**20
