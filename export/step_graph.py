"""Trace the lean ImageGPT into one ONNX "step" graph that serves every decoding step.

The graph takes new tokens, the number of valid cache positions and the runner's
preallocated per-layer KV buffers, and returns logits, the softmax of the logits
and only the new tokens' keys and values (codec/runtime/: graph_io_names; the
runner writes them into its buffers, so the cache is never copied per step).
Step 0 runs with an empty cache (past length 0, one all-hidden chunk), so there
is no separate first-step graph whose floats could differ from the others. The
softmax lives in the graph because the codec may not compute exp or sums in numpy
(DESIGN.md, numerics rule 2).

Exporter choice: the legacy TorchScript exporter (`dynamo=False`) traces this
explicit-op module in seconds; the dynamo exporter took minutes for the same
module (FINDINGS.md). Hugging Face optimum is not used: optimum-onnx pins
transformers < 4.58, whose ImageGPT attention divides by int(sqrt(head_dim))
(wrong for imagegpt-medium and -large), and its task registry refuses ImageGPT
for text-generation-with-past.
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
from torch import nn

from igpt_codec.export.igpt_torch import IGPT, Conv1D
from igpt_codec.runtime.contract import INPUT_IDS, LOGITS_OUTPUT, PROBS_OUTPUT, graph_io_names

LOGITS = LOGITS_OUTPUT
PROBS = PROBS_OUTPUT

# Opset 17: every opset from 14 to 21 traced and gave identical outputs (FINDINGS.md);
# 17 is the oldest one that still has everything this graph uses and is supported by
# every onnxruntime release since 1.13, so old runtimes can still load the bundle.
DEFAULT_OPSET = 17


@dataclass(frozen=True)
class IoNames:
    """The graph's input and output names, in graph order (the codec's contract)."""

    inputs: list[str]
    outputs: list[str]

    @property
    def past(self) -> list[str]:
        return self.inputs[2:]

    @property
    def new(self) -> list[str]:
        return self.outputs[2:]


def io_names(n_layer: int) -> IoNames:
    inputs, outputs = graph_io_names(n_layer)
    return IoNames(inputs=inputs, outputs=outputs)


def _matmul_add(layer: Conv1D, x: torch.Tensor) -> torch.Tensor:
    return torch.matmul(x, layer.weight) + layer.bias


class StepModule(nn.Module):
    """Flat-argument wrapper: ONNX export needs positional tensors, not a list.

    Conv1D layers are traced as MatMul + Add instead of the Gemm that addmm becomes,
    because onnxruntime's dynamic int8 quantizer only quantizes MatMul. The attention
    scale 1/sqrt(head_dim) is folded into the query weights, which saves a division
    over the scores in every layer and step (floats move by ~1e-7; parity checks it).
    """

    def __init__(self, lean: IGPT, fold_scale: bool = True):
        super().__init__()
        # A copy: folding the attention scale edits weights, and the caller's module stays intact.
        self.lean = copy.deepcopy(lean)
        for layer in self.lean.modules():
            if isinstance(layer, Conv1D):
                layer.forward = partial(_matmul_add, layer)
        if fold_scale:
            for block in self.lean.transformer.h:
                block.attn.fold_scale_into_query()

    def forward(self, input_ids: torch.Tensor, past_length: torch.Tensor, *past: torch.Tensor):
        logits, news = self.lean.forward_step(input_ids, past_length, list(past))
        return (logits, torch.softmax(logits, dim=-1), *news)


def export_step_graph(
    lean: IGPT, path: Path, opset: int = DEFAULT_OPSET, fold_scale: bool = True
) -> IoNames:
    """Write the step graph to `path` (weights inline) and return its IO names."""
    shape = lean.shape
    names = io_names(shape.n_layer)
    # Sizes >= 2 on every dynamic axis so the tracer cannot specialise a 1 into the graph.
    batch, seq, capacity = 2, 3, 4
    input_ids = torch.zeros((batch, seq), dtype=torch.int64)
    past_length = torch.tensor(2, dtype=torch.int64)
    key = (batch, shape.n_head, shape.head_dim, capacity)
    value = (batch, shape.n_head, capacity, shape.head_dim)
    past = [torch.zeros(key if i % 2 == 0 else value) for i in range(len(names.past))]
    dynamic_axes = {INPUT_IDS: {0: "batch", 1: "seq"}}
    dynamic_axes |= {n: {0: "batch", 3 - i % 2: "capacity"} for i, n in enumerate(names.past)}
    dynamic_axes |= {LOGITS: {0: "batch", 1: "seq"}, PROBS: {0: "batch", 1: "seq"}}
    dynamic_axes |= {n: {0: "batch", 3 - i % 2: "seq"} for i, n in enumerate(names.new)}
    # The tracer warns that n_embd becomes a constant (true and intended: only batch, seq
    # and past are dynamic) and that the legacy exporter is deprecated; neither helps a user.
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            StepModule(lean.eval(), fold_scale),
            (input_ids, past_length, *past),
            str(path),
            input_names=names.inputs,
            output_names=names.outputs,
            dynamic_axes=dynamic_axes,
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )
    _static_reshapes(path)
    return names


def _static_reshapes(path: Path) -> None:
    """Replace each Reshape's Shape/Gather/Unsqueeze/Concat chain by a constant shape.

    The tracer computes `z.view(z.shape[0], z.shape[1], H, D)` at run time: about seven
    tiny kernels per reshape, ~40 per step on the default model, where a step is only
    ~170 kernels. ONNX Reshape copies a dimension from its input where the shape says 0,
    so a target whose entries are either constants or the input's own dimension at the
    same index becomes a constant like [0, 0, 2, 48]. Only that provable case is
    rewritten (Reshape semantics, no arithmetic: the floats do not change); the chains
    left without consumers are removed.
    """
    import numpy as np
    import onnx
    from onnx import numpy_helper

    # External weight files (models over 2 GB) stay where they are: only the graph changes.
    model = onnx.load(str(path), load_external_data=False)
    graph = model.graph
    producer = {out: node for node in graph.node for out in node.output}

    def constant(name: str) -> np.ndarray | None:
        node = producer.get(name)
        if node is None or node.op_type != "Constant" or len(node.attribute) != 1:
            return None
        attr = node.attribute[0]
        return numpy_helper.to_array(attr.t) if attr.name == "value" else None

    def shape_of(name: str, data: str) -> bool:
        node = producer.get(name)
        return (
            node is not None
            and node.op_type == "Shape"
            and node.input[0] == data
            and not any(a.name in ("start", "end") for a in node.attribute)
        )

    def entries(name: str, data: str) -> list[int | tuple[str, int]] | None:
        """The shape tensor's entries: ints, or ("dim", i) for the input's dimension i."""
        value = constant(name)
        if value is not None:
            return [int(v) for v in value.reshape(-1)]
        node = producer.get(name)
        if node is None:
            return None
        if node.op_type == "Concat":
            parts = [entries(i, data) for i in node.input]
            if any(part is None for part in parts):
                return None
            return [e for part in parts for e in part]
        if node.op_type == "Unsqueeze" and node.input[0] in producer:
            gather = producer[node.input[0]]
            index = constant(gather.input[1]) if gather.op_type == "Gather" else None
            if index is None or index.ndim or not shape_of(gather.input[0], data):
                return None
            return [("dim", int(index))]
        if node.op_type == "Slice" and shape_of(node.input[0], data) and len(node.input) == 4:
            start, end, axes = (constant(i) for i in node.input[1:])
            if start is None or end is None or axes is None or list(axes.reshape(-1)) != [0]:
                return None
            return [("dim", i) for i in range(int(start.reshape(-1)[0]), int(end.reshape(-1)[0]))]
        return None

    changed = False
    for node in graph.node:
        if node.op_type != "Reshape" or any(a.name == "allowzero" and a.i for a in node.attribute):
            continue
        found = entries(node.input[1], node.input[0])
        if found is None:
            continue
        target = []
        for position, entry in enumerate(found):
            if isinstance(entry, tuple):
                if entry[1] != position:
                    break
                target.append(0)
            elif entry == 0:  # a literal 0 would mean "copy" once written
                break
            else:
                target.append(entry)
        else:
            if all(t != 0 for t in target):
                continue  # already constant
            name = f"{node.name}/static_shape"
            graph.initializer.append(numpy_helper.from_array(np.array(target, np.int64), name))
            node.input[1] = name
            changed = True
    if not changed:
        return
    # Drop nodes whose outputs nothing uses any more (the orphaned shape chains).
    while True:
        used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
        dead = [n for n in graph.node if not any(o in used for o in n.output)]
        if not dead:
            break
        for n in dead:
            graph.node.remove(n)
    onnx.save(model, str(path))
