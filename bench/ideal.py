"""The two ideals our payload is measured against: float model bits and integer-table bits.

The pipeline reports Σ -log2 p of the float model. The coder, though, codes
under the integer tables `codec.freq` derives from p, where every symbol keeps a
frequency of at least 1 and the total is not exactly 2**bits. So:

    payload - float ideal = (table ideal - float ideal) + (payload - table ideal)
                            quantization                 range coder

Quantization is small either way, and can be negative: when the model gives the
actual token a probability below 2**-20, the floor of 1 pays for it, so an
overconfident model codes such tokens in fewer bits than its own -log2 p (a
random-weights model by ~15%; the first trained default model by ~0.3%). This
pass reruns the model over every image, in the pipeline's batches, to split the two.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from codec.bundle import Bundle
from codec.freq import FREQ_BITS, quantize_probs
from codec.model import SOS, TokenModel
from codec.pipeline import MAX_BATCH, TokenImage, plan_batches

_MIN_PROB = np.float64(2.0**-149)
"""As in the pipeline: an underflowed float32 probability still gives finite bits."""


@dataclass(frozen=True)
class Ideal:
    """Per-image bits under the float model and under the integer tables."""

    float_bits: float
    table_bits: float


def ideal_bits(
    images: list[TokenImage], bundle: Bundle, threads: int, freq_bits: int = FREQ_BITS
) -> list[Ideal]:
    """Both ideals for every image, computed exactly as the encoder would see them."""
    max_batch = MAX_BATCH if bundle.batch_invariant else 1
    model = TokenModel(bundle, threads=threads)
    result: list[Ideal | None] = [None] * len(images)
    for batch in plan_batches([image.side for image in images], max_batch):
        tokens = np.stack([images[i].tokens.astype(np.int64) for i in batch])
        rows = np.arange(len(batch))
        float_bits = np.zeros(len(batch))
        table_bits = np.zeros(len(batch))
        state = model.start(len(batch))
        feed = np.full(len(batch), SOS, dtype=np.int64)
        for t in range(tokens.shape[1]):
            probs, state = model.step(feed, state)
            feed = tokens[:, t]
            freqs = quantize_probs(probs, freq_bits)
            table_bits += np.log2(freqs.sum(axis=1)) - np.log2(freqs[rows, feed])
            float_bits -= np.log2(np.maximum(probs[rows, feed].astype(np.float64), _MIN_PROB))
        for row, index in enumerate(batch):
            result[index] = Ideal(float(float_bits[row]), float(table_bits[row]))
    return [item for item in result if item is not None]
