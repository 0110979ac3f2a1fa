"""Trace the lean ImageGPT into one ONNX "step" graph that serves every decoding step.

The graph takes new tokens plus the per-layer KV cache and returns logits, the
softmax of the logits and the extended cache. Step 0 runs with an empty cache
(past length 0), so there is no separate first-step graph whose floats could
differ from the others. The softmax lives in the graph because the codec may not
compute exp or sums in numpy (DESIGN.md, numerics rule 2).

Exporter choice: the legacy TorchScript exporter (`dynamo=False`) traces this
explicit-op module in seconds; the dynamo exporter took minutes for the same
module (FINDINGS.md). Hugging Face optimum is not used: optimum-onnx pins
transformers < 4.58, whose ImageGPT attention divides by int(sqrt(head_dim))
(wrong for imagegpt-medium and -large), and its task registry refuses ImageGPT
for text-generation-with-past.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
from torch import nn

from export.igpt_torch import IGPT, Conv1D

# Opset 17: every opset from 14 to 21 traced and gave identical outputs (FINDINGS.md);
# 17 is the oldest one that still has everything this graph uses and is supported by
# every onnxruntime release since 1.13, so old runtimes can still load the bundle.
DEFAULT_OPSET = 17

INPUT_IDS = "input_ids"
LOGITS = "logits"
PROBS = "probs"


@dataclass(frozen=True)
class IoNames:
    """The graph's input and output names, in graph order (the codec's contract)."""

    inputs: list[str]
    outputs: list[str]

    @property
    def past(self) -> list[str]:
        return self.inputs[1:]

    @property
    def present(self) -> list[str]:
        return self.outputs[2:]


def io_names(n_layer: int) -> IoNames:
    past, present = [], []
    for i in range(n_layer):
        past += [f"past_key_values.{i}.key", f"past_key_values.{i}.value"]
        present += [f"present.{i}.key", f"present.{i}.value"]
    return IoNames(inputs=[INPUT_IDS, *past], outputs=[LOGITS, PROBS, *present])


def _matmul_add(layer: Conv1D, x: torch.Tensor) -> torch.Tensor:
    return torch.matmul(x, layer.weight) + layer.bias


class StepModule(nn.Module):
    """Flat-argument wrapper: ONNX export needs positional tensors, not a list.

    Conv1D layers are traced as MatMul + Add instead of the Gemm that addmm becomes,
    because onnxruntime's dynamic int8 quantizer only quantizes MatMul.
    """

    def __init__(self, lean: IGPT):
        super().__init__()
        self.lean = lean
        for layer in lean.modules():
            if isinstance(layer, Conv1D):
                layer.forward = partial(_matmul_add, layer)

    def forward(self, input_ids: torch.Tensor, *past: torch.Tensor):
        logits, presents = self.lean.forward_step(input_ids, list(past))
        return (logits, torch.softmax(logits, dim=-1), *presents)


def export_step_graph(lean: IGPT, path: Path, opset: int = DEFAULT_OPSET) -> IoNames:
    """Write the step graph to `path` (weights inline) and return its IO names."""
    shape = lean.shape
    names = io_names(shape.n_layer)
    # Sizes >= 2 on every dynamic axis so the tracer cannot specialise a 1 into the graph.
    batch, seq, past_len = 2, 3, 2
    input_ids = torch.zeros((batch, seq), dtype=torch.int64)
    past = [
        torch.zeros((batch, shape.n_head, past_len, shape.head_dim), dtype=torch.float32)
        for _ in names.past
    ]
    dynamic_axes = {INPUT_IDS: {0: "batch", 1: "seq"}}
    dynamic_axes |= {n: {0: "batch", 2: "past"} for n in names.past}
    dynamic_axes |= {LOGITS: {0: "batch", 1: "seq"}, PROBS: {0: "batch", 1: "seq"}}
    dynamic_axes |= {n: {0: "batch", 2: "past_plus_seq"} for n in names.present}
    # The tracer warns that n_embd becomes a constant (true and intended: only batch, seq
    # and past are dynamic) and that the legacy exporter is deprecated; neither helps a user.
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            StepModule(lean.eval()),
            (input_ids, *past),
            str(path),
            input_names=names.inputs,
            output_names=names.outputs,
            dynamic_axes=dynamic_axes,
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )
    return names
