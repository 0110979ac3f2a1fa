"""The ideals our payload is measured against: the model's own bits and the coder's tables.

Float bundles (profile float32): the pipeline reports Σ -log2 p of the float model,
but the coder codes under the integer tables `igpt_codec.core.freq` derives from p, where
every symbol keeps a frequency of at least 1 and the total is not exactly 2**bits:

    payload - float ideal = (table ideal - float ideal) + (payload - table ideal)
                            quantization                 range coder

Quantization is small either way, and can be negative: when the model gives the
actual token a probability below 2**-20, the floor of 1 pays for it, so an
overconfident model codes such tokens in fewer bits than its own -log2 p.

Exact bundles (profile exact-int-v1): the graph's output IS the integer table
(every entry >= 1), so the model's ideal is the table ideal, Σ -log2 f/Σf, and
there is no quantization step: both figures below are that one number.

This pass reruns the model over every image the way the encoder does (exact: one
whole-sequence call per image; float: token by token in the pipeline's batches).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bench.runners import StepRunner
from igpt_codec.core.freq import FREQ_BITS, quantize_probs
from igpt_codec.pipelines.stream import MAX_BATCH, TokenImage, plan_batches
from igpt_codec.runtime.bundle import Bundle
from igpt_codec.runtime.contract import SOS

_MIN_PROB = np.float64(2.0**-149)
"""As in the pipeline: an underflowed float32 probability still gives finite bits."""


@dataclass(frozen=True)
class Ideal:
    """Per-image bits under the model (float: -log2 p; exact: the table) and the tables."""

    float_bits: float
    table_bits: float


def table_bits(freqs: np.ndarray, tokens: np.ndarray) -> np.ndarray:
    """Σ_t -log2 f[t, token_t] / Σ f[t] per row; freqs [..., T, 512], tokens [..., T]."""
    freqs = np.asarray(freqs, np.float64)
    chosen = np.take_along_axis(freqs, tokens[..., None], axis=-1)[..., 0]
    return (np.log2(freqs.sum(axis=-1)) - np.log2(chosen)).sum(axis=-1)


def ideal_bits(images: list[TokenImage], bundle: Bundle, threads: int) -> list[Ideal]:
    """Both ideals for every image, computed exactly as the encoder would see them."""
    runner = StepRunner(bundle, threads=threads)
    if bundle.exact:
        result = []
        for image in images:
            tokens = image.tokens.astype(np.int64)
            bits = float(table_bits(runner.whole_sequence(tokens, image.side), tokens))
            result.append(Ideal(bits, bits))
        return result
    return _float_ideals(images, runner)


def _float_ideals(images: list[TokenImage], runner: StepRunner) -> list[Ideal]:
    model = runner.model
    found: list[Ideal | None] = [None] * len(images)
    for batch in plan_batches([image.side for image in images], MAX_BATCH):
        tokens = np.stack([images[i].tokens.astype(np.int64) for i in batch])
        rows = np.arange(len(batch))
        float_bits = np.zeros(len(batch))
        tables = np.zeros(len(batch))
        state = model.start(len(batch))
        feed = np.full(len(batch), SOS, dtype=np.int64)
        for t in range(tokens.shape[1]):
            probs, state = model.step(feed, state)
            feed = tokens[:, t]
            tables += table_bits(quantize_probs(probs, FREQ_BITS)[:, None], feed[:, None])
            float_bits -= np.log2(np.maximum(probs[rows, feed].astype(np.float64), _MIN_PROB))
        for row, index in enumerate(batch):
            found[index] = Ideal(float(float_bits[row]), float(tables[row]))
    return [item for item in found if item is not None]
