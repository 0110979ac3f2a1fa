"""ImageGPT weights + calibration tokens -> the integer parameters of the exact graph.

The exact profile replaces every float operation whose result could depend on the
CPU, the kernel or the summation order with integer arithmetic (docs/exact-arithmetic.md).
This module decides all the numbers: int8 weights with per-output-channel scales,
integer biases, dyadic multipliers (m * 2^-k, at most 24 significant bits) that move
a matmul accumulator onto the next grid, activation grids calibrated on real photo
tokens, and the lookup tables for 1/sqrt (norms), exp (attention, output) and
quick_gelu. export/exact_graph.py turns the plan into ONNX; nothing here needs torch.

The integer model, per layer (X is the residual stream, integers in units 2^-Sx):
  A  = clip(round(X * NS[#{k: sum(X^2) >= NT_k}]), +-127)      norm (gain folded into W)
  Q,K,V = clip(round((A @ W + b) * M), +-127)                  attention scale folded into Q
  E  = EXP[min(max_j S_j - S, L-1)]                           S = Q @ K^T, masked: S - 2^23
  Y  = round((E @ V) / sum(E))                                 |Y| <= 127 (convex combination)
  X += round((Y @ Wp + bp) * Mp)
  G  = GELU[clip(round((A2 @ Wf + bf) * Mf), +-Zh)]            negative indices wrap (ONNX Gather)
  X += round((G @ Wq + bq) * Mq)
  freq = FREQ[min(max_j L_j - L, 1023)], L = round((Af @ Wlm) * Mlm) on a 1/64-nat grid
Every product and partial sum is an integer below 2^53, so float64 computes it exactly
in any order, with or without FMA; the bounds are checked here (`check_bounds`).

Just over 400 lines: the plan's numbers and the bounds that prove them exact belong
together (check_bounds reads every field the builder sets).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

INT8 = 127
MANTISSA_BITS = 24
"""Significant bits of every dyadic multiplier: acc (< 2^26) * m stays below 2^53."""
RESIDUAL_LIMIT = 2**20
"""Largest |X| any input can produce (static bound): sum(X^2) over 2^12 channels < 2^53."""
NORM_STEPS_PER_OCTAVE = 64
"""Thresholds per doubling of sum(X^2): the norm's scale is within 2^(1/256) (0.27%)."""
NORM_MARGIN_OCTAVES = 8
"""Threshold range beyond the calibrated sum(X^2) range, each side (clamped beyond)."""
EXP_ONE = 2**7
"""Attention weight of the row maximum. E @ V runs as a float32 MatMul, exact while every
partial sum stays below 2^24: 128 * 127 * 1024 < 2^24."""
FLOAT32_EXACT = 2**24
"""Integers up to 2^24 are exact in float32: the bound for every float32 MatMul sum."""
LOGIT_STEPS_PER_NAT = 64
"""Output logits on a 1/64-nat grid: costs far below 0.01% against exact logits."""
FREQ_ONE = 2**20
"""Frequency of the most likely symbol; totals stay below 512 * 2^20 = 2^29 < 2^32."""
FREQ_TABLE = 1024
"""Logit gaps beyond 1023/64 nats (2^-23) all get frequency 1."""
EXP_TABLE_MAX = 1 << 14
"""Longest attention exp table; a finer score grid is read in bins of 2^shift gap units."""
GELU_STEPS = 2048
"""Table entries each side of zero for quick_gelu's input grid."""
BIG = 2.0**23
"""Masked attention scores are S - 2^23: exact in float32 while |S| < 2^22, and their gap
to the row maximum is beyond every exp table, so their weight is exactly 0."""


def dyadic(value: np.ndarray | float, bits: int = MANTISSA_BITS) -> np.ndarray:
    """Nearest m * 2^-k with |m| < 2^bits (k per element): exactly representable, float64."""
    value = np.asarray(value, dtype=np.float64)
    out = np.zeros_like(value)
    nonzero = value != 0
    exponent = np.floor(np.log2(np.abs(value[nonzero]))) + 1
    scale = np.exp2(bits - exponent)
    out[nonzero] = np.round(value[nonzero] * scale) / scale
    return out


@dataclass
class Linear:
    """acc = A @ weight + bias (integers); output grid reached by acc * multiplier."""

    weight: np.ndarray  # [in, out] int8 values (float64)
    bias: np.ndarray  # [out] integers in accumulator units (float64)
    multiplier: np.ndarray  # [out] dyadic: accumulator units -> output grid
    in_scale: float
    channel_scale: np.ndarray  # [out]: real weight = weight * channel_scale

    def acc_bound(self) -> np.ndarray:
        """Largest |acc| per output for any int8 input."""
        return np.abs(self.weight).sum(axis=0) * INT8 + np.abs(self.bias)


@dataclass
class Norm:
    """RMS norm to int8: scale NS[i] where i counts thresholds NT at or below sum(X^2)."""

    thresholds: np.ndarray  # [K] increasing, float64 integers
    scales: np.ndarray  # [K + 1] dyadic
    out_scale: float


@dataclass
class Layer:
    norm1: Norm
    qkv: Linear
    exp_table: np.ndarray  # [L] integers indexed by floor(score gap / 2^exp_shift), last 0
    nats_per_step: float  # what one table step (2^exp_shift units of score gap) is worth
    exp_shift: int
    proj: Linear
    norm2: Norm
    fc: Linear
    gelu_table: np.ndarray  # [2 * GELU_STEPS + 1] int8 values; index -Zh..Zh (wraps)
    mlp_proj: Linear
    scales: dict[str, float] = field(default_factory=dict)


@dataclass
class ExactPlan:
    n_embd: int
    n_head: int
    head_dim: int
    residual_bits: int  # Sx
    wte: np.ndarray  # [vocab, E] integers
    wpe: np.ndarray  # [positions, E] integers
    layers: list[Layer]
    norm_f: Norm
    lm_head: Linear
    freq_table: np.ndarray  # [FREQ_TABLE] int64, >= 1
    residual_bound: float  # static max |X| in integer units
    calibration: dict[str, object] = field(default_factory=dict)


# ---------------------------------------------------------------- calibration


Span = tuple[float, float]
"""(smallest, largest) of sum(X^2) over a row of the residual stream."""
EMPTY_SPAN: Span = (math.inf, 0.0)


def widen(span: Span, low: float, high: float) -> Span:
    return (min(span[0], low), max(span[1], high))


@dataclass
class LayerRanges:
    """What calibration saw in one block: the largest |value| of each activation that gets
    an int8 grid, and the span of sum(X^2) entering each norm (for its thresholds)."""

    n1: float = 0.0
    q: float = 0.0
    k: float = 0.0
    v: float = 0.0
    n2: float = 0.0
    z: float = 0.0
    g: float = 0.0
    ss1: Span = EMPTY_SPAN
    ss2: Span = EMPTY_SPAN


@dataclass
class Calibration:
    """Activation ranges over every calibration batch (maxima and minima, so the order of
    the batches does not matter); `float_forward` fills it, `build_plan` reads it."""

    layers: list[LayerRanges]
    nf: float = 0.0
    ssf: Span = EMPTY_SPAN

    @classmethod
    def empty(cls, n_layer: int) -> Calibration:
        return cls([LayerRanges() for _ in range(n_layer)])


# ---------------------------------------------------------------- float reference


@dataclass
class FloatWeights:
    """The model's weights as float64 numpy arrays (transformers names, no torch)."""

    wte: np.ndarray
    wpe: np.ndarray
    blocks: list[dict[str, np.ndarray]]
    ln_f: np.ndarray
    lm_head: np.ndarray  # [vocab-1, E]
    n_head: int
    eps: float
    divisors: list[float]

    @classmethod
    def from_state_dict(
        cls,
        state: dict[str, np.ndarray],
        n_layer: int,
        n_head: int,
        eps: float,
        scale_by_layer: bool,
    ) -> FloatWeights:
        get = lambda k: np.asarray(state[k], dtype=np.float64)  # noqa: E731
        blocks = []
        for i in range(n_layer):
            p = f"transformer.h.{i}."
            blocks.append(
                {
                    "ln_1": get(p + "ln_1.weight"),
                    "c_attn_w": get(p + "attn.c_attn.weight"),
                    "c_attn_b": get(p + "attn.c_attn.bias"),
                    "c_proj_w": get(p + "attn.c_proj.weight"),
                    "c_proj_b": get(p + "attn.c_proj.bias"),
                    "ln_2": get(p + "ln_2.weight"),
                    "fc_w": get(p + "mlp.c_fc.weight"),
                    "fc_b": get(p + "mlp.c_fc.bias"),
                    "mproj_w": get(p + "mlp.c_proj.weight"),
                    "mproj_b": get(p + "mlp.c_proj.bias"),
                }
            )
        e = get("transformer.wte.weight").shape[1]
        head_dim = e // n_head
        divisors = [
            math.sqrt(head_dim) * ((i + 1) if scale_by_layer else 1) for i in range(n_layer)
        ]
        return cls(
            get("transformer.wte.weight"),
            get("transformer.wpe.weight"),
            blocks,
            get("transformer.ln_f.weight"),
            get("lm_head.weight"),
            n_head,
            eps,
            divisors,
        )


def quick_gelu(x: np.ndarray) -> np.ndarray:
    return x / (1.0 + np.exp(-1.702 * x))


# ---------------------------------------------------------------- quantization


def _channel_quant(weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 per output column: (integers, scale per column)."""
    scale = np.abs(weight).max(axis=0) / INT8
    scale = np.where(scale > 0, scale, 1.0)
    return np.clip(np.round(weight / scale), -INT8, INT8), scale


def _linear(
    weight: np.ndarray, bias: np.ndarray | None, in_scale: float, out_scale: np.ndarray | float
) -> Linear:
    wq, ch = _channel_quant(weight)
    acc_unit = in_scale * ch
    b = np.zeros(weight.shape[1]) if bias is None else bias
    return Linear(
        weight=wq,
        bias=np.round(b / acc_unit),
        multiplier=dyadic(acc_unit / out_scale),
        in_scale=in_scale,
        channel_scale=ch,
    )


def _norm(ss_min: float, ss_max: float, n_embd: int, eps_units: float, out_scale: float) -> Norm:
    """Thresholds over the calibrated range (plus margins), geometric, and the bin scales."""
    lo = max(1.0, ss_min / 2.0**NORM_MARGIN_OCTAVES)
    hi = max(lo * 2, ss_max * 2.0**NORM_MARGIN_OCTAVES)
    count = math.ceil(math.log2(hi / lo) * NORM_STEPS_PER_OCTAVE)
    thresholds = np.ceil(lo * np.exp2(np.arange(count) / NORM_STEPS_PER_OCTAVE))
    # Bin i holds sum(X^2) in [T_{i-1}, T_i); its scale is taken at the geometric middle.
    edges = np.concatenate(
        [
            [thresholds[0] / 2 ** (1 / NORM_STEPS_PER_OCTAVE)],
            thresholds,
            [thresholds[-1] * 2 ** (1 / NORM_STEPS_PER_OCTAVE)],
        ]
    )
    middle = np.sqrt(edges[:-1] * edges[1:])
    scales = dyadic(math.sqrt(n_embd) / out_scale / np.sqrt(middle + eps_units))
    return Norm(thresholds=thresholds, scales=scales, out_scale=out_scale)


def _grid(absmax: float) -> float:
    return max(absmax, 1e-8) / INT8


ACTIVATION_CLIP = 0.8
"""Each int8 activation grid spans this share of its calibrated maximum: the rarest outliers
saturate, everything else gets a finer grid. Chosen on the calibration-disjoint check photos
(default model: 1.0 +0.079%, 0.9 +0.096%, 0.8 +0.048%, 0.7 +0.11%); the held-out photos
agree (1.0 +0.136%, 0.8 +0.115%)."""


def build_plan(w: FloatWeights, ranges: Calibration, clip: float = ACTIVATION_CLIP) -> ExactPlan:
    """Integer parameters from float weights and calibration ranges.

    `clip` scales every activation range (ACTIVATION_CLIP); 1.0 clips none of the
    calibration data. The residual stream's unit comes first, from a static bound on |X|
    (the embeddings plus every projection's largest output), because the projections'
    multipliers and the norms' thresholds are expressed in it.
    """
    e = w.wte.shape[1]
    residual_bits, bound = _residual_bits(w, ranges, clip)
    unit = 2.0**-residual_bits
    eps_units = w.eps * e / unit**2
    layers = [
        _layer(w, i, blk, ranges.layers[i], clip, unit, eps_units) for i, blk in enumerate(w.blocks)
    ]
    s_nf = _grid(ranges.nf * clip)
    lm_w = w.lm_head.T * w.ln_f[:, None]
    freq_table = np.maximum(
        1, np.round(FREQ_ONE * np.exp(-np.arange(FREQ_TABLE) / LOGIT_STEPS_PER_NAT))
    )
    plan = ExactPlan(
        n_embd=e,
        n_head=w.n_head,
        head_dim=e // w.n_head,
        residual_bits=residual_bits,
        wte=np.round(w.wte / unit),
        wpe=np.round(w.wpe / unit),
        layers=layers,
        norm_f=_norm_from(ranges.ssf, unit, e, eps_units, s_nf),
        lm_head=_linear(lm_w, None, s_nf, 1.0 / LOGIT_STEPS_PER_NAT),
        freq_table=freq_table.astype(np.int64),
        residual_bound=bound / unit,
        calibration={"clip": clip},
    )
    check_bounds(plan, w.wpe.shape[0])
    return plan


def _residual_bits(w: FloatWeights, ranges: Calibration, clip: float) -> tuple[int, float]:
    """(Sx, static max |X| in real units): the finest grid 2^-Sx whose integers stay within
    RESIDUAL_LIMIT for any input."""
    bound = np.abs(w.wte).max() + np.abs(w.wpe).max()
    for blk, seen in zip(w.blocks, ranges.layers, strict=True):
        for weight, bias, in_scale in (
            (blk["c_proj_w"], blk["c_proj_b"], _grid(seen.v * clip)),
            (blk["mproj_w"], blk["mproj_b"], _grid(seen.g * clip)),
        ):
            lin = _linear(weight, bias, in_scale, 1.0)
            bound += float((lin.acc_bound() * lin.in_scale * lin.channel_scale).max()) + 1.0
    return math.floor(math.log2(RESIDUAL_LIMIT / bound)), bound


def _norm_from(span: Span, unit: float, n_embd: int, eps_units: float, out_scale: float) -> Norm:
    return _norm(span[0] / unit**2, span[1] / unit**2, n_embd, eps_units, out_scale)


def _layer(
    w: FloatWeights,
    i: int,
    blk: dict[str, np.ndarray],
    seen: LayerRanges,
    clip: float,
    unit: float,
    eps_units: float,
) -> Layer:
    """One block's integer parameters: grids, norms, linears and tables."""
    e = w.wte.shape[1]
    s_n1 = _grid(seen.n1 * clip)
    s_q, s_k, s_v = (_grid(peak * clip) for peak in (seen.q, seen.k, seen.v))
    qkv_w = blk["c_attn_w"] * blk["ln_1"][:, None]
    qkv_w = np.concatenate([qkv_w[:, :e] / w.divisors[i], qkv_w[:, e:]], axis=1)
    qkv_b = np.concatenate([blk["c_attn_b"][:e] / w.divisors[i], blk["c_attn_b"][e:]])
    qkv = _linear(qkv_w, qkv_b, s_n1, np.repeat([s_q, s_k, s_v], e))
    # The score gap to the row maximum indexes the table (one unit of gap is s_q * s_k
    # nats); past ln(2 * EXP_ONE) nats the weight rounds to 0. Where that would take
    # more than EXP_TABLE_MAX entries, the gap is read in bins of 2^shift units (exact:
    # floor of a float32 integer times a power of two), each at its middle.
    step = s_q * s_k
    reach = math.log(2 * EXP_ONE) / step
    shift = max(0, math.ceil(math.log2(reach / (EXP_TABLE_MAX - 2))))
    length = math.ceil(reach / 2.0**shift) + 2
    middle = np.arange(length) * 2.0**shift + (2.0**shift - 1) / 2
    exp_table = np.round(EXP_ONE * np.exp(-middle * step))
    exp_table[-1] = 0
    s_n2 = _grid(seen.n2 * clip)
    s_z = seen.z * clip / GELU_STEPS
    s_g = _grid(seen.g * clip)
    grid = np.arange(2 * GELU_STEPS + 1)
    grid = np.where(grid <= GELU_STEPS, grid, grid - (2 * GELU_STEPS + 1))  # wrap order
    return Layer(
        norm1=_norm_from(seen.ss1, unit, e, eps_units, s_n1),
        qkv=qkv,
        exp_table=exp_table,
        nats_per_step=step * 2.0**shift,
        exp_shift=shift,
        # Residual projections land on the residual grid (units of 2^-Sx).
        proj=_linear(blk["c_proj_w"], blk["c_proj_b"], s_v, unit),
        norm2=_norm_from(seen.ss2, unit, e, eps_units, s_n2),
        fc=_linear(blk["fc_w"] * blk["ln_2"][:, None], blk["fc_b"], s_n2, s_z),
        gelu_table=np.clip(np.round(quick_gelu(grid * s_z) / s_g), -INT8, INT8),
        mlp_proj=_linear(blk["mproj_w"], blk["mproj_b"], s_g, unit),
        scales={"n1": s_n1, "q": s_q, "k": s_k, "v": s_v, "n2": s_n2, "z": s_z, "g": s_g},
    )


MATMUL_CHUNK = FLOAT32_EXACT // (INT8 * INT8) - 1
"""Largest inner dimension of an exact float32 int8 x int8 MatMul (1039); longer ones split."""


class PlanBoundError(ValueError):
    """Some integer of the plan could leave the exact range of its float type."""


def check_bounds(plan: ExactPlan, n_positions: int) -> None:
    """Refuse a plan where some value could leave the exact range of its float type.

    float64 values must stay below 2^53, float32 MatMul partial sums below 2^24; the
    bounds are worst cases over every possible input, not calibration maxima.
    """
    f64 = 2.0**53

    def need(ok: bool, what: str) -> None:
        if not ok:
            raise PlanBoundError(f"exact plan out of range: {what}")

    need(plan.residual_bound <= RESIDUAL_LIMIT, "residual stream")
    need(plan.n_embd * RESIDUAL_LIMIT**2 < f64, "sum of squares")
    need(plan.head_dim * INT8 * INT8 * 2 < BIG, "attention scores against the mask offset")
    need(EXP_ONE * INT8 * n_positions < FLOAT32_EXACT, "attention numerator in float32")
    lins = [plan.lm_head]
    for layer in plan.layers:
        lins += [layer.qkv, layer.proj, layer.fc, layer.mlp_proj]
        for norm in (layer.norm1, layer.norm2, plan.norm_f):
            need(RESIDUAL_LIMIT * np.abs(norm.scales).max() < f64, "norm product")
    for lin in lins:
        acc = float(lin.acc_bound().max())
        need(acc * 2.0**MANTISSA_BITS < f64, "accumulator times multiplier")
        need(float(np.abs(lin.bias * lin.multiplier).max()) * 2 < f64, "scaled bias")
