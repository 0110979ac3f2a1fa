"""An ExactPlan -> the exact step graph (ONNX, opset 17), built node by node.

Contract `exact-int-v1` (codec/runtime/: exact_io_names; with an attention span,
`exact-int-v1-span`: the same names, the cache a ring, see `_span_masks`): inputs input_ids and
position_ids int64 [batch, seq], past_length int64 [], per layer past.{i}.key
float32 [batch, heads, head_dim, capacity] and past.{i}.value [batch, heads,
capacity, head_dim]; outputs freqs int32 [batch, seq, 512] (each >= 1: the range
coder's table, no float step after the graph) and per layer new.{i}.key / value.
Every tensor holds integers; the ops are only those whose result is exact on
integers below 2^53 (Gather, GatherElements, Add, Sub, Mul, MatMul, Gemm, ReduceSum(Square),
ReduceMax, Where, Min, Clip, Round, Div followed by Round; int64 Mod, Or, Less for the span
masks: see exact_plan.py).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from igpt_codec.export.exact_plan import BIG, MATMUL_CHUNK, ExactPlan, Linear, Norm
from igpt_codec.runtime.contract import (
    EXACT_FREQS,
    INPUT_IDS,
    PAST_LENGTH,
    POSITION_IDS,
    exact_io_names,
)

OPSET = 17
F64 = TensorProto.DOUBLE
F32 = TensorProto.FLOAT


class _Builder:
    """Collects nodes and initializers; every name is unique by construction."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self._count = 0

    def const(self, name: str, value: np.ndarray | float | int, dtype=np.float64) -> str:
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def op(self, op_type: str, inputs: list[str], out: str | None = None, **attrs) -> str:
        self._count += 1
        out = out or f"{op_type.lower()}_{self._count}"
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=f"n{self._count}", **attrs))
        return out

    def ops(self, op_type: str, inputs: list[str], n_out: int, **attrs) -> list[str]:
        self._count += 1
        outs = [f"{op_type.lower()}_{self._count}_{i}" for i in range(n_out)]
        self.nodes.append(helper.make_node(op_type, inputs, outs, name=f"n{self._count}", **attrs))
        return outs


def _norm(g: _Builder, x: str, norm: Norm, tag: str) -> str:
    """clip(round(X * scale[#thresholds <= sum X^2]), +-127) per row of X [N, E], as float32."""
    ss = g.op("ReduceSumSquare", [x], axes=[1], keepdims=1)
    above = g.op("GreaterOrEqual", [ss, g.const(f"{tag}.thresholds", norm.thresholds)])
    count = g.op("ReduceSum", [g.op("Cast", [above], to=TensorProto.INT32), "c.axis1"], keepdims=1)
    scale = g.op("Gather", [g.const(f"{tag}.scales", norm.scales), count])
    return _to_f32(g, _clip8(g, g.op("Round", [g.op("Mul", [x, scale])])))


def _lookup(g: _Builder, table: str, index: str) -> str:
    """table[index] for a 1-D table and an index tensor of any shape.

    GatherElements over the flattened index, not Gather: the same values, but onnxruntime's
    Gather copies each element through a generic block copy, measured 7x slower on the
    attention's exp lookups ([12, 2, 1, 769] indices: 156 against 20 us), a quarter of a
    decode step (docs/exact-arithmetic.md, "Speed").
    """
    flat = g.op("GatherElements", [table, g.op("Reshape", [index, "c.minus1"])], axis=0)
    return g.op("Reshape", [flat, g.op("Shape", [index])])


def _clip8(g: _Builder, x: str) -> str:
    return g.op("Clip", [x, "c.m127", "c.p127"])


def _to_f32(g: _Builder, x: str) -> str:
    return g.op("Cast", [x], to=TensorProto.FLOAT)


def _linear(g: _Builder, x: str, lin: Linear, tag: str) -> str:
    """round((x @ W + b) * M) in float64: integers on the output grid (not clipped).

    x and W are int8-valued float32; the MatMul is exact while its inner dimension is at
    most MATMUL_CHUNK (each partial sum < 2^24), so a longer one is split into chunks
    whose sums are added in float64. The bias is added already scaled (b * M, exact).
    """
    n_in = lin.weight.shape[0]
    parts = []
    for start in range(0, n_in, MATMUL_CHUNK):
        stop = min(n_in, start + MATMUL_CHUNK)
        xs = x
        if (start, stop) != (0, n_in):
            xs = g.op(
                "Slice",
                [
                    x,
                    g.const(f"{tag}.lo{start}", [start], np.int64),
                    g.const(f"{tag}.hi{start}", [stop], np.int64),
                    "c.axis1",
                ],
            )
        # Stored as int8 (a quarter of the bytes); the Cast of a constant is folded into a
        # float32 initializer when the session loads, so it costs nothing per step.
        w = g.op("Cast", [g.const(f"{tag}.weight{start}", lin.weight[start:stop], np.int8)], to=F32)
        parts.append(g.op("Cast", [g.op("MatMul", [xs, w])], to=F64))
    acc = parts[0]
    for part in parts[1:]:
        acc = g.op("Add", [acc, part])
    out = g.op("Mul", [acc, g.const(f"{tag}.multiplier", lin.multiplier)])
    if np.any(lin.bias):
        out = g.op("Add", [out, g.const(f"{tag}.bias", lin.bias * lin.multiplier)])
    return g.op("Round", [out])


def _span_masks(g: _Builder, span: int, capacity: str, new_pos: str) -> tuple[str, str]:
    """(hidden cache slots [seq, C], hidden new tokens [seq, seq]) for an attention span S.

    The cache is a ring of C slots (C from the buffers' shape): position a lives in slot
    a mod C, so after past_length p tokens slot j holds a(j) = p - 1 - back(j) with
    back(j) = (p - 1 - j) mod C, computed as (p + (C - 1 - j)) mod C (a non-negative
    operand, so Mod's sign convention never matters). Query i of this call (position p + i)
    sees slot j iff the slot was written (a(j) >= 0, i.e. back(j) < p) and lies within the
    span ((p + i) - a(j) <= S, i.e. i + back(j) < S); it sees new token i' iff
    i - S <= i' <= i. Any past_length and any seq are then valid: a step, a whole window at
    past 0, a chunk of a window after earlier chunks. With C >= every position (a plain
    linear cache), a(j) = j: the same masks, so a ring and a linear cache give the same
    tables. All integer ops on int64 (exact); the masks are built once per call.
    """
    c = g.op("Squeeze", [capacity, "c.i0"])
    minus_one = g.const("c.span.minus1", -1, np.int64)
    reverse = g.op(
        "Range", [g.op("Sub", [c, g.const("c.span.one", 1, np.int64)]), minus_one, minus_one]
    )
    back = g.op("Mod", [g.op("Add", [reverse, PAST_LENGTH]), c])
    unwritten = g.op("GreaterOrEqual", [back, PAST_LENGTH])
    s = g.const("c.span", span, np.int64)
    query = g.op("Unsqueeze", [new_pos, "c.axis1"])
    too_old = g.op("GreaterOrEqual", [g.op("Add", [query, back]), s])
    hidden_past = g.op("Or", [unwritten, too_old])
    offset = g.op("Sub", [query, g.op("Unsqueeze", [new_pos, "c.i0"])])
    hidden_new = g.op(
        "Or",
        [g.op("Less", [offset, g.const("c.span.zero", 0, np.int64)]), g.op("Greater", [offset, s])],
    )
    return hidden_past, hidden_new


def build_graph(plan: ExactPlan, path: Path, attention_span: int | None = None) -> None:
    """Write the exact step graph for `plan` to `path`.

    attention_span S (None: full causal attention, contract exact-int-v1): token t attends
    to positions t-S..t only, and the cache buffers are a ring (contract exact-int-v1-span,
    `_span_masks`). The arithmetic per attended position is the same, so the tables of a
    whole sequence and of steps through the ring are the same integers.
    """
    if attention_span is not None and (
        isinstance(attention_span, bool)
        or not isinstance(attention_span, int)
        or attention_span < 1
    ):
        raise ValueError(f"attention_span must be a positive integer, got {attention_span!r}")
    g = _Builder()
    e, h, d = plan.n_embd, plan.n_head, plan.head_dim
    n_layer = len(plan.layers)
    inputs, outputs = exact_io_names(n_layer)
    g.const("c.m127", -127.0)
    g.const("c.p127", 127.0)
    g.const("c.flat", [-1, e], np.int64)
    g.const("c.axis1", [1], np.int64)
    g.const("c.axis_last", [-1], np.int64)
    g.const("c.minus1", [-1], np.int64)

    ids_shape = g.op("Shape", [INPUT_IDS])
    batch = g.op("Slice", [ids_shape, g.const("c.i0", [0], np.int64), "c.axis1"])
    seq = g.op("Slice", [ids_shape, "c.axis1", g.const("c.i2", [2], np.int64)])
    heads4 = g.op("Concat", [batch, seq, g.const("c.hd", [h, d], np.int64)], axis=0)

    # The embeddings are integers below 2^20 (RESIDUAL_LIMIT): stored as int32, half the
    # bytes of float64, and their sum (below 2^21) is cast once to float64, exactly.
    x = g.op(
        "Add",
        [
            g.op("Gather", [g.const("wte", plan.wte, np.int32), INPUT_IDS]),
            g.op("Gather", [g.const("wpe", plan.wpe, np.int32), POSITION_IDS]),
        ],
    )
    x = g.op("Reshape", [g.op("Cast", [x], to=F64), "c.flat"])

    # Additive masks (0 or -2^23), shared by every layer: cache slots at or past past_length,
    # and new tokens later than the query.
    capacity = g.op(
        "Slice",
        [
            g.op("Shape", [inputs[3]]),
            g.const("c.i3", [3], np.int64),
            g.const("c.i4", [4], np.int64),
        ],
    )
    zero = g.const("c.zero", 0, np.int64)
    one = g.const("c.one", 1, np.int64)
    f_zero = g.const("c.fzero", 0.0, np.float32)
    f_big = g.const("c.big", -BIG, np.float32)
    if attention_span is None:
        # Node order as first written: a re-export of a bundle without a span keeps its bytes.
        cache_pos = g.op("Range", [zero, g.op("Squeeze", [capacity, "c.i0"]), one])
        mask_past = g.op("Where", [g.op("GreaterOrEqual", [cache_pos, PAST_LENGTH]), f_big, f_zero])
        new_pos = g.op("Range", [zero, g.op("Squeeze", [seq, "c.i0"]), one])
        later = g.op(
            "Greater",
            [g.op("Unsqueeze", [new_pos, "c.i0"]), g.op("Unsqueeze", [new_pos, "c.axis1"])],
        )
        mask_new = g.op("Where", [later, f_big, f_zero])
    else:
        new_pos = g.op("Range", [zero, g.op("Squeeze", [seq, "c.i0"]), one])
        hidden_past, hidden_new = _span_masks(g, attention_span, capacity, new_pos)
        mask_past = g.op("Where", [hidden_past, f_big, f_zero])
        mask_new = g.op("Where", [hidden_new, f_big, f_zero])
    split_sizes = g.op("Concat", [capacity, seq], axis=0)

    for i, layer in enumerate(plan.layers):
        t = f"h{i}"
        a = _norm(g, x, layer.norm1, f"{t}.ln_1")
        qkv = _to_f32(g, _clip8(g, _linear(g, a, layer.qkv, f"{t}.qkv")))
        q, k, v = g.ops("Split", [qkv], 3, axis=1)
        q = g.op("Transpose", [g.op("Reshape", [q, heads4])], perm=[0, 2, 1, 3])
        k = g.op(
            "Transpose", [g.op("Reshape", [k, heads4])], perm=[0, 2, 3, 1], out=outputs[1 + 2 * i]
        )
        v = g.op(
            "Transpose", [g.op("Reshape", [v, heads4])], perm=[0, 2, 1, 3], out=outputs[2 + 2 * i]
        )
        past_k, past_v = inputs[3 + 2 * i], inputs[4 + 2 * i]
        s_past = g.op("Add", [g.op("MatMul", [q, past_k]), mask_past])
        s_new = g.op("Add", [g.op("MatMul", [q, k]), mask_new])
        # One row of scores per query over cache and new tokens: the concatenation copies
        # scores, never the cache.
        scores = g.op("Concat", [s_past, s_new], axis=-1)
        gap = g.op("Sub", [g.op("ReduceMax", [scores], axes=[-1], keepdims=1), scores])
        if layer.exp_shift:
            scale = g.const(f"{t}.exp_bin", 2.0**-layer.exp_shift, np.float32)
            gap = g.op("Floor", [g.op("Mul", [gap, scale])])
        last = g.const(f"{t}.exp_last", float(len(layer.exp_table) - 1), np.float32)
        index = g.op("Cast", [g.op("Min", [gap, last])], to=TensorProto.INT32)
        weights = _lookup(g, g.const(f"{t}.exp", layer.exp_table, np.float32), index)
        w_past, w_new = g.ops("Split", [weights, split_sizes], 2, axis=-1)
        num = g.op("Add", [g.op("MatMul", [w_past, past_v]), g.op("MatMul", [w_new, v])])
        total = g.op("ReduceSum", [weights, "c.axis_last"], keepdims=1)
        # round(num / total) in float64: an exact quotient is at least 1/(2 total) > 2^-18
        # from a rounding boundary, far beyond float64's division error (< 2^-45 here).
        y = g.op(
            "Round", [g.op("Div", [g.op("Cast", [num], to=F64), g.op("Cast", [total], to=F64)])]
        )
        y = g.op("Reshape", [g.op("Transpose", [_to_f32(g, y)], perm=[0, 2, 1, 3]), "c.flat"])
        x = g.op("Add", [x, _linear(g, y, layer.proj, f"{t}.proj")])
        a2 = _norm(g, x, layer.norm2, f"{t}.ln_2")
        zh = float(len(layer.gelu_table) // 2)
        z = g.op(
            "Clip",
            [
                _linear(g, a2, layer.fc, f"{t}.fc"),
                g.const(f"{t}.zlo", -zh),
                g.const(f"{t}.zhi", zh),
            ],
        )
        gelu = _lookup(
            g,
            g.const(f"{t}.gelu", layer.gelu_table, np.float32),
            g.op("Cast", [z], to=TensorProto.INT32),
        )
        x = g.op("Add", [x, _linear(g, gelu, layer.mlp_proj, f"{t}.mlp_proj")])

    af = _norm(g, x, plan.norm_f, "ln_f")
    logits = _linear(g, af, plan.lm_head, "lm_head")
    top = g.op("ReduceMax", [logits], axes=[1], keepdims=1)
    last = g.const("freq_last", float(len(plan.freq_table) - 1))
    gap = g.op("Cast", [g.op("Min", [g.op("Sub", [top, logits]), last])], to=TensorProto.INT32)
    freqs = _lookup(g, g.const("freq_table", plan.freq_table, np.int32), gap)
    out_shape = g.op("Concat", [batch, seq, g.const("c.vocab", [512], np.int64)], axis=0)
    g.op("Reshape", [freqs, out_shape], out=EXACT_FREQS)

    value_infos_in = [
        helper.make_tensor_value_info(INPUT_IDS, TensorProto.INT64, ["batch", "seq"]),
        helper.make_tensor_value_info(POSITION_IDS, TensorProto.INT64, ["batch", "seq"]),
        helper.make_tensor_value_info(PAST_LENGTH, TensorProto.INT64, []),
    ]
    value_infos_out = [
        helper.make_tensor_value_info(EXACT_FREQS, TensorProto.INT32, ["batch", "seq", 512])
    ]
    for i in range(n_layer):
        value_infos_in += [
            helper.make_tensor_value_info(inputs[3 + 2 * i], F32, ["batch", h, d, "capacity"]),
            helper.make_tensor_value_info(inputs[4 + 2 * i], F32, ["batch", h, "capacity", d]),
        ]
        value_infos_out += [
            helper.make_tensor_value_info(outputs[1 + 2 * i], F32, ["batch", h, d, "seq"]),
            helper.make_tensor_value_info(outputs[2 + 2 * i], F32, ["batch", h, "seq", d]),
        ]
    graph = helper.make_graph(
        g.nodes, "igpt_exact_step", value_infos_in, value_infos_out, initializer=g.inits
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        # Part of the file, hence of the fingerprint: the exporter's name as first written
        # (before the package moved into igpt_codec), so a re-export keeps the same bytes.
        producer_name="igpt-codec export.exact_graph",
    )
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
