"""The span graph's faster paths compute the integers of the paths they replace (issue 23).

The graph of contract exact-int-v1-span is built by its own node path (exact_graph.py,
`_span_nodes`: two-level norm lookups, biases inside Gemm, int32 exp indices, one mask per
call); these tests hold it to the full-attention graph of the same plan, whose node path is
the shipped one:

- with a span that hides nothing (S >= every position) both graphs give the same tables;
- with a real span, the full-attention graph stepped with a sliding cache of the last S
  positions (what a span means) gives the tables of the span graph's single call;
- the two-level norm lookup equals the plain count at, around and beyond every threshold;
- the stepper writes each step into the ring it was given: no copy, no new buffers.

The plan has random biases (a random checkpoint has none), so the Gemm path is exercised.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import CALIBRATION_IMAGES

from igpt_codec.runtime.contract import (
    EXACT_FREQS,
    INPUT_IDS,
    PAST_LENGTH,
    POSITION_IDS,
    SOS,
    exact_io_names,
)
from igpt_codec.runtime.positions import GRID, positions

SPAN = 40
"""Not a divisor of 1,024, so the sliding cache and the chunks end mid-span."""


@pytest.fixture(scope="module")
def plan(tiny_checkpoint_dir: Path):
    """The tiny checkpoint's exact plan, with random biases in every block (calibrated with
    the span, as the export does)."""
    pytest.importorskip("torch")
    from transformers import ImageGPTForCausalImageModeling

    from igpt_codec.export.exact_export import float_forward, float_weights, load_calibration
    from igpt_codec.export.exact_plan import Calibration, build_plan
    from igpt_codec.export.igpt_torch import from_transformers

    hf = ImageGPTForCausalImageModeling.from_pretrained(tiny_checkpoint_dir).eval()
    weights = float_weights(from_transformers(hf))
    rng = np.random.default_rng(11)
    for block in weights.blocks:
        for name in ("c_attn_b", "c_proj_b", "fc_b", "mproj_b"):
            block[name] = rng.normal(0.0, 0.2, block[name].shape)
    ranges = Calibration.empty(len(weights.blocks))
    ids, pos = inputs(load_calibration()[0][:CALIBRATION_IMAGES])
    float_forward(weights, ids, pos, ranges, SPAN)
    plan = build_plan(weights, ranges)
    assert all(np.any(layer.qkv.bias) and np.any(layer.fc.bias) for layer in plan.layers)
    return plan


def inputs(tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ids = np.concatenate([np.full((len(tokens), 1), SOS), tokens[:, :-1]], axis=1)
    return ids, np.broadcast_to(positions(32, GRID), ids.shape).copy()


@pytest.fixture(scope="module")
def photos() -> tuple[np.ndarray, np.ndarray]:
    """ids and positions [2, 1024] of two check photos."""
    from igpt_codec.export.exact_export import load_calibration

    return inputs(load_calibration()[1][:2])


def session(plan, path: Path, span: int | None):
    import onnxruntime as ort

    from igpt_codec.export.exact_graph import build_graph
    from igpt_codec.runtime.session import make_session_options

    build_graph(plan, path, span)
    return ort.InferenceSession(
        str(path), make_session_options(1), providers=["CPUExecutionProvider"]
    )


def feeds(plan, ids, pos, past: int, caches: list[np.ndarray] | None = None) -> dict:
    """Graph inputs; caches (k0, v0, k1, ...) default to one empty slot each."""
    names = exact_io_names(len(plan.layers))[0][3:]
    if caches is None:
        b, h, d = len(ids), plan.n_head, plan.head_dim
        caches = [
            np.zeros((b, h, d, 1) if i % 2 == 0 else (b, h, 1, d), np.float32)
            for i in range(len(names))
        ]
    out = {INPUT_IDS: ids, POSITION_IDS: pos, PAST_LENGTH: np.array(past, np.int64)}
    return out | dict(zip(names, caches, strict=True))


def test_span_graph_without_a_reach_limit_equals_the_full_graph(
    plan, photos, tmp_path: Path
) -> None:
    full = session(plan, tmp_path / "full.onnx", None)
    wide = session(plan, tmp_path / "wide.onnx", 1024)
    ids, pos = photos
    a = full.run([EXACT_FREQS], feeds(plan, ids, pos, 0))[0]
    b = wide.run([EXACT_FREQS], feeds(plan, ids, pos, 0))[0]
    assert a.min() >= 1 and np.array_equal(a, b)
    import onnx

    ops = {n.op_type for n in onnx.load(str(tmp_path / "wide.onnx")).graph.node}
    assert "Gemm" in ops  # the biased plan takes the Gemm path


def slide(cache: np.ndarray, new: np.ndarray, key: bool) -> np.ndarray:
    """The cache with the new position appended and only the last SPAN positions kept
    (keys [B, H, D, n], values [B, H, n, D])."""
    if key:
        return np.concatenate([cache, new], axis=-1)[..., -SPAN:]
    return np.concatenate([cache, new], axis=-2)[..., -SPAN:, :]


def test_span_graph_equals_the_full_graph_with_a_sliding_cache(
    plan, photos, tmp_path: Path
) -> None:
    """A span S means: token t attends to the S positions before it and itself. The
    full-attention graph, stepped with a cache that holds exactly those S positions
    (oldest dropped each step), computes that with the shipped node path."""
    full = session(plan, tmp_path / "full.onnx", None)
    span = session(plan, tmp_path / "span.onnx", SPAN)
    ids, pos = photos
    tokens = 300
    one_call = span.run([EXACT_FREQS], feeds(plan, ids[:, :tokens], pos[:, :tokens], 0))[0]
    b, h, d = len(ids), plan.n_head, plan.head_dim
    n = 2 * len(plan.layers)
    caches = [np.zeros((b, h, d, 0) if i % 2 == 0 else (b, h, 0, d), np.float32) for i in range(n)]
    names = [EXACT_FREQS, *exact_io_names(len(plan.layers))[1][1:]]
    stepped = []
    for t in range(tokens):
        past = caches[0].shape[-1]
        out = full.run(names, feeds(plan, ids[:, t : t + 1], pos[:, t : t + 1], past, caches))
        stepped.append(out[0][:, 0])
        pairs = enumerate(zip(caches, out[1:], strict=True))
        caches = [slide(c, new, i % 2 == 0) for i, (c, new) in pairs]
    assert np.array_equal(np.stack(stepped, axis=1), one_call)
    # The span matters here: the full graph's own tables differ beyond the first S tokens.
    whole = full.run([EXACT_FREQS], feeds(plan, ids[:, :tokens], pos[:, :tokens], 0))[0]
    assert np.array_equal(whole[:, : SPAN + 1], one_call[:, : SPAN + 1])
    assert not np.array_equal(whole[:, SPAN + 1 :], one_call[:, SPAN + 1 :])


def test_two_level_norm_lookup_equals_the_count(tmp_path: Path) -> None:
    import onnxruntime as ort
    from onnx import TensorProto, helper

    from igpt_codec.export.exact_graph import _Builder, _norm_scale
    from igpt_codec.export.exact_plan import Norm

    rng = np.random.default_rng(5)
    for k in (1, 2, 5, 64, 65, 1127):
        # Non-decreasing integer thresholds with repeats (ceil of a slow geometric series).
        thresholds = np.ceil(1.3 * np.exp2(np.arange(k) / 16)) + np.arange(k) // 7
        scales = rng.random(k + 1)
        norm = Norm(thresholds=thresholds, scales=scales, out_scale=1.0)
        g = _Builder()
        g.const("c.axis1", [1], np.int64)
        g.op("Identity", [_norm_scale(g, "ss", norm, "t")], out="scale")
        graph = helper.make_graph(
            g.nodes,
            "n",
            [helper.make_tensor_value_info("ss", TensorProto.DOUBLE, ["N", 1])],
            [helper.make_tensor_value_info("scale", TensorProto.DOUBLE, ["N", 1])],
            initializer=g.inits,
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        ss = np.unique(np.concatenate([thresholds - 1, thresholds, thresholds + 1, [0, 2.0**52]]))
        got = sess.run(None, {"ss": ss[:, None]})[0][:, 0]
        expected = scales[np.searchsorted(thresholds, ss, side="right")]
        assert np.array_equal(got, expected), k


def test_stepper_steps_the_ring_in_place(tiny_checkpoint_dir: Path, tmp_path: Path) -> None:
    """Every step writes its keys and values into the ring the stepper was bound to: the
    same arrays (no copy, no reallocation, no rebinding) across wrap-arounds."""
    from igpt_codec.export.onnx_export import export_bundle
    from igpt_codec.runtime.bundle import load_bundle
    from igpt_codec.runtime.exact_runner import ExactTokenModel
    from igpt_codec.runtime.ring_cache import RingCache

    export_bundle(
        str(tiny_checkpoint_dir), tmp_path / "b", calibration_images=4, attention_span=SPAN
    )
    model = ExactTokenModel(load_bundle(tmp_path / "b"), threads=1)
    state = model.start(2)
    ring = state.cache
    assert isinstance(ring, RingCache)
    keys, values, feeds_before = ring.all_keys, ring.all_values, list(ring.feeds)
    stepper = model.stepper(state)
    pos = positions(32, GRID)
    ids = np.full(2, SOS)
    for t in range(3 * SPAN + 7):
        ids = stepper.step(ids, int(pos[t])).argmax(axis=-1)
        assert stepper.state.cache is ring
    assert ring.all_keys is keys and ring.all_values is values and ring.feeds == feeds_before
    assert ring.length == 3 * SPAN + 7 and np.any(keys[..., 0])
