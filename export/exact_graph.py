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

import math
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from igpt_codec.export.exact_plan import (
    BIG,
    FLOAT32_EXACT,
    MATMUL_CHUNK,
    ExactPlan,
    Linear,
    Norm,
)
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

    def ops(
        self,
        op_type: str,
        inputs: list[str],
        n_out: int,
        names: dict[int, str] | None = None,
        **attrs,
    ) -> list[str]:
        self._count += 1
        outs = [f"{op_type.lower()}_{self._count}_{i}" for i in range(n_out)]
        for i, name in (names or {}).items():
            outs[i] = name
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

    if attention_span is None:
        _full_attention_nodes(g, plan)
    else:
        _span_nodes(g, plan, attention_span)

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


def _weighted_values(g: _Builder, weights: str, split_sizes: str, past_v: str, v: str) -> str:
    """Attention's output heads merged, [B, seq, C]: the integer weights' sums over the past
    and the new values, divided by the weights' total and rounded. Both graphs (full
    attention and span) emit these nodes in this order, so their bytes do not depend on
    which builder wrote them."""
    w_past, w_new = g.ops("Split", [weights, split_sizes], 2, axis=-1)
    num = g.op("Add", [g.op("MatMul", [w_past, past_v]), g.op("MatMul", [w_new, v])])
    total = g.op("ReduceSum", [weights, "c.axis_last"], keepdims=1)
    # round(num / total) in float64: an exact quotient is at least 1/(2 total) > 2^-18
    # from a rounding boundary, far beyond float64's division error (< 2^-45 here).
    y = g.op("Round", [g.op("Div", [g.op("Cast", [num], to=F64), g.op("Cast", [total], to=F64)])])
    return g.op("Reshape", [g.op("Transpose", [_to_f32(g, y)], perm=[0, 2, 1, 3]), "c.flat"])


def _full_attention_nodes(g: _Builder, plan: ExactPlan) -> None:
    """The nodes of contract exact-int-v1, in the order first written: a re-export of a bundle
    without a span must keep its bytes (its fingerprint), so nothing here may change."""
    h, d = plan.n_head, plan.head_dim
    inputs, outputs = exact_io_names(len(plan.layers))
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
    cache_pos = g.op("Range", [zero, g.op("Squeeze", [capacity, "c.i0"]), one])
    mask_past = g.op("Where", [g.op("GreaterOrEqual", [cache_pos, PAST_LENGTH]), f_big, f_zero])
    new_pos = g.op("Range", [zero, g.op("Squeeze", [seq, "c.i0"]), one])
    later = g.op(
        "Greater",
        [g.op("Unsqueeze", [new_pos, "c.i0"]), g.op("Unsqueeze", [new_pos, "c.axis1"])],
    )
    mask_new = g.op("Where", [later, f_big, f_zero])
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
        y = _weighted_values(g, weights, split_sizes, past_v, v)
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


# ---------------------------------------------------------------- the span graph

# Contract exact-int-v1-span is not shipped with any bundle yet, so its graph is free to
# differ from the full-attention graph above: the same plan, the same integers, fewer and
# cheaper nodes (issue 23; docs/speed.md, "Fewer nodes"). Each rewrite below computes the
# very values of the node chain it replaces (tests/test_span_speed_paths.py compares the
# tables of both builders on one plan, bit for bit).


def _norm_lean(g: _Builder, x: str, norm: Norm, tag: str) -> str:
    """_norm with the threshold count in two levels (_norm_scale); int8-valued float32."""
    ss = g.op("ReduceSumSquare", [x], axes=[1], keepdims=1)
    scale = _norm_scale(g, ss, norm, tag)
    return _to_f32(g, _clip8(g, g.op("Round", [g.op("Mul", [x, scale])])))


def norm_blocks(norm: Norm) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(coarse [J], rows [J + 1, B], row_scales [J + 1, B + 1]) for _norm_scale.

    The thresholds T (K of them, non-decreasing) in J blocks of B = ceil(sqrt(K)): coarse
    holds each block's first threshold; row c (c >= 1) holds block c - 1, padded with +inf;
    row 0 is all +inf. row_scales[c, f] = scales[B (c - 1) + f], row 0 all scales[0]. With
    c = #{coarse <= ss} and f = #{rows[c] <= ss}: the count #{T <= ss} is B (c - 1) + f for
    c >= 1 (the block's first threshold is <= ss, so f >= 1) and 0 for c = 0 (f = 0), so
    row_scales[c, f] = scales[count], what _norm gathers.
    """
    thresholds, scales = norm.thresholds, norm.scales
    k = len(thresholds)
    block = math.isqrt(k - 1) + 1 if k > 1 else 1
    n_blocks = -(-k // block)
    rows = np.full((n_blocks + 1, block), np.inf)
    row_scales = np.full((n_blocks + 1, block + 1), scales[0])
    for c in range(1, n_blocks + 1):
        lo, hi = block * (c - 1), min(block * c, k)
        rows[c, : hi - lo] = thresholds[lo:hi]
        row_scales[c, : hi - lo + 1] = scales[lo : hi + 1]
    return thresholds[::block], rows, row_scales


def _norm_scale(g: _Builder, ss: str, norm: Norm, tag: str) -> str:
    """scales[#{T <= ss}] per row of ss [N, 1], as _norm finds it, in two levels.

    Why: _norm compares every row with all ~1,100 thresholds (three passes over N x K), a
    quarter of a chunked encode and a tenth of a batch-16 step; here a row meets about
    2 sqrt(K) of them (norm_blocks), for 5 more nodes. Integer counts and lookups only.
    """
    coarse, rows, row_scales = norm_blocks(norm)
    above = g.op("GreaterOrEqual", [ss, g.const(f"{tag}.coarse", coarse)])
    c = g.op("ReduceSum", [g.op("Cast", [above], to=TensorProto.INT32), "c.axis1"], keepdims=0)
    row = g.op("Gather", [g.const(f"{tag}.rows", rows), c])
    within = g.op("GreaterOrEqual", [ss, row])
    f = g.op("ReduceSum", [g.op("Cast", [within], to=TensorProto.INT32), "c.axis1"], keepdims=1)
    chosen = g.op("Gather", [g.const(f"{tag}.row_scales", row_scales), c])
    return g.op("GatherElements", [chosen, f], axis=1)


def _linear_lean(g: _Builder, x: str, lin: Linear, tag: str) -> str:
    """_linear with the bias inside the float32 product (Gemm) where that stays exact.

    round((x @ W + b) * M) equals _linear's round(x @ W * M + b * M) bit for bit: both sums
    are exact (every term a multiple of M's power of two, below 2^53). Gemm adds the bias
    among the float32 partial sums, exact while |x @ W| + |b| < 2^24 (acc_bound); a layer
    beyond that, or one split into chunks, keeps _linear. One Add fewer per biased layer.
    """
    if lin.weight.shape[0] > MATMUL_CHUNK or float(lin.acc_bound().max()) >= FLOAT32_EXACT:
        return _linear(g, x, lin, tag)
    w = g.op("Cast", [g.const(f"{tag}.weight0", lin.weight, np.int8)], to=F32)
    if np.any(lin.bias):
        acc = g.op("Gemm", [x, w, g.const(f"{tag}.bias", lin.bias, np.float32)])
    else:
        acc = g.op("MatMul", [x, w])
    scaled = g.op(
        "Mul", [g.op("Cast", [acc], to=F64), g.const(f"{tag}.multiplier", lin.multiplier)]
    )
    return g.op("Round", [scaled])


def _flat_lookup(g: _Builder, table: str, index: str, shape: str) -> str:
    """_lookup with the output shape given (computed once per call, or a constant) instead
    of a Shape node per lookup."""
    flat = g.op("GatherElements", [table, g.op("Reshape", [index, "c.minus1"])], axis=0)
    return g.op("Reshape", [flat, shape])


def _span_nodes(g: _Builder, plan: ExactPlan, span: int) -> None:
    """The nodes of contract exact-int-v1-span: _full_attention_nodes' arithmetic on the
    ring, with fewer nodes per call.

    Against that graph: shapes and the mask built once per call (one additive mask over
    cache slots and new tokens, added once per layer after one Concat of the scores); q, k
    and v cut from one Reshape/Transpose/Split; table lookups without a Shape node each;
    the exp index binned in int32 (Cast, Div by 2^shift: the gap is a non-negative integer,
    so truncation is the floor); biases inside Gemm (_linear_lean); norms in two levels
    (_norm_scale).
    """
    h, d = plan.n_head, plan.head_dim
    inputs, outputs = exact_io_names(len(plan.layers))
    ids_shape = g.op("Shape", [INPUT_IDS])
    batch = g.op("Slice", [ids_shape, g.const("c.i0", [0], np.int64), "c.axis1"])
    seq = g.op("Slice", [ids_shape, "c.axis1", g.const("c.i2", [2], np.int64)])
    cache_shape = g.op("Shape", [inputs[3]])
    capacity = g.op(
        "Slice", [cache_shape, g.const("c.i3", [3], np.int64), g.const("c.i4", [4], np.int64)]
    )
    qkv_shape = g.op("Concat", [batch, seq, g.const("c.qkv_hd", [3 * h, d], np.int64)], axis=0)
    width = g.op("Add", [capacity, seq])
    heads = g.const("c.h", [h], np.int64)
    weights_shape = g.op("Concat", [batch, heads, seq, width], axis=0)
    split_sizes = g.op("Concat", [capacity, seq], axis=0)
    out_shape = g.op("Concat", [batch, seq, g.const("c.vocab", [512], np.int64)], axis=0)

    # Embeddings as in _full_attention_nodes: int32 tables, their sum cast once to float64.
    x = g.op(
        "Add",
        [
            g.op("Gather", [g.const("wte", plan.wte, np.int32), INPUT_IDS]),
            g.op("Gather", [g.const("wpe", plan.wpe, np.int32), POSITION_IDS]),
        ],
    )
    x = g.op("Reshape", [g.op("Cast", [x], to=F64), "c.flat"])

    zero, one = g.const("c.zero", 0, np.int64), g.const("c.one", 1, np.int64)
    new_pos = g.op("Range", [zero, g.op("Squeeze", [seq, "c.i0"]), one])
    hidden_past, hidden_new = _span_masks(g, span, capacity, new_pos)
    hidden = g.op("Concat", [hidden_past, hidden_new], axis=-1)
    f_big, f_zero = g.const("c.big", -BIG, np.float32), g.const("c.fzero", 0.0, np.float32)
    mask = g.op("Where", [hidden, f_big, f_zero])

    for i, layer in enumerate(plan.layers):
        t = f"h{i}"
        a = _norm_lean(g, x, layer.norm1, f"{t}.ln_1")
        qkv = _to_f32(g, _clip8(g, _linear_lean(g, a, layer.qkv, f"{t}.qkv")))
        # Columns are (q, k, v) x heads x head_dim: [B, seq, 3H, D] -> [B, 3H, seq, D].
        qkv = g.op("Transpose", [g.op("Reshape", [qkv, qkv_shape])], perm=[0, 2, 1, 3])
        q, k, v = g.ops("Split", [qkv], 3, names={2: outputs[2 + 2 * i]}, axis=1)
        k = g.op("Transpose", [k], perm=[0, 1, 3, 2], out=outputs[1 + 2 * i])
        past_k, past_v = inputs[3 + 2 * i], inputs[4 + 2 * i]
        # One row of scores per query over cache slots and new tokens (the Concat copies
        # scores, never the cache), masked by one Add.
        scores = g.op("Concat", [g.op("MatMul", [q, past_k]), g.op("MatMul", [q, k])], axis=-1)
        scores = g.op("Add", [scores, mask])
        # The gap to the row maximum is a non-negative integer below 2^24 (|scores| < 2^22,
        # mask -2^23: exact_plan.check_bounds), so int32 holds it and Div is the floor.
        gap = g.op("Sub", [g.op("ReduceMax", [scores], axes=[-1], keepdims=1), scores])
        index = g.op("Cast", [gap], to=TensorProto.INT32)
        if layer.exp_shift:
            index = g.op("Div", [index, g.const(f"{t}.exp_bin", 2**layer.exp_shift, np.int32)])
        last = g.const(f"{t}.exp_last", len(layer.exp_table) - 1, np.int32)
        table = g.const(f"{t}.exp", layer.exp_table, np.float32)
        weights = _flat_lookup(g, table, g.op("Min", [index, last]), weights_shape)
        y = _weighted_values(g, weights, split_sizes, past_v, v)
        x = g.op("Add", [x, _linear_lean(g, y, layer.proj, f"{t}.proj")])
        a2 = _norm_lean(g, x, layer.norm2, f"{t}.ln_2")
        zh = float(len(layer.gelu_table) // 2)
        z = _linear_lean(g, a2, layer.fc, f"{t}.fc")
        z = g.op("Clip", [z, g.const(f"{t}.zlo", -zh), g.const(f"{t}.zhi", zh)])
        gelu = _flat_lookup(
            g,
            g.const(f"{t}.gelu", layer.gelu_table, np.float32),
            g.op("Cast", [z], to=TensorProto.INT32),
            g.const(f"{t}.fc_shape", [-1, layer.fc.weight.shape[1]], np.int64),
        )
        x = g.op("Add", [x, _linear_lean(g, gelu, layer.mlp_proj, f"{t}.mlp_proj")])

    af = _norm_lean(g, x, plan.norm_f, "ln_f")
    logits = _linear_lean(g, af, plan.lm_head, "lm_head")
    top = g.op("ReduceMax", [logits], axes=[1], keepdims=1)
    last = g.const("freq_last", float(len(plan.freq_table) - 1))
    gap = g.op("Cast", [g.op("Min", [g.op("Sub", [top, logits]), last])], to=TensorProto.INT32)
    table = g.const("freq_table", plan.freq_table, np.int32)
    flat = g.op("GatherElements", [table, g.op("Reshape", [gap, "c.minus1"])], axis=0)
    g.op("Reshape", [flat, out_shape], out=EXACT_FREQS)
