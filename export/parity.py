"""Measure how far the exported graph, run the codec's way, is from transformers.

The reference is the real transformers class (not the lean module that was
traced), full sequence, use_cache=False, so that a tracing mistake in the lean
re-implementation cannot hide. The ONNX side runs token by token with the KV
cache and the codec's own session options, because that is the path whose
floats the codec codes with. The inputs are real photo tokens: random tokens
give near-uniform predictions that hide errors in confident ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from igpt_codec.core.palette import image_to_tokens
from igpt_codec.export.errors import ExportError, one_line
from igpt_codec.export.step_graph import IoNames
from igpt_codec.runtime.contract import SOS
from igpt_codec.runtime.float_runner import TokenModel

PARITY_IMAGES_DIR = Path(__file__).parent / "data" / "parity"
IMAGE_SIDE = 32


def default_parity_images() -> list[Path]:
    return sorted(PARITY_IMAGES_DIR.glob("*.png"))


def parity_sequences(images: Sequence[Path], palette: np.ndarray, positions: int) -> np.ndarray:
    """int64 [len(images), positions]: SOS then the first positions-1 tokens of each 32x32 image."""
    if len(images) < 2:
        raise ExportError("parity needs at least 2 images (it checks a batch of sequences)")
    if not 2 <= positions <= IMAGE_SIDE * IMAGE_SIDE:
        raise ExportError(f"parity positions must be in [2, 1024], got {positions}")
    rows = []
    for path in images:
        try:
            with Image.open(path) as image:
                tokens = image_to_tokens(image.convert("RGB"), palette, IMAGE_SIDE)
        except OSError as exc:
            raise ExportError(f"cannot read parity image {path}: {one_line(exc)}") from exc
        rows.append(np.concatenate([[SOS], tokens[: positions - 1]]))
    return np.asarray(rows, dtype=np.int64)


def torch_reference(hf_model, sequences: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Logits and softmax of the transformers model over whole sequences (float32)."""
    import torch

    with torch.no_grad():
        ids = torch.from_numpy(sequences)
        logits = hf_model(input_ids=ids, use_cache=False).logits.float()
        probs = torch.softmax(logits, dim=-1)
    return logits.numpy(), probs.numpy()


def ort_stepwise(
    model_path: Path,
    names: IoNames,
    n_head: int,
    head_dim: int,
    sequences: np.ndarray,
    n_positions: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Logits and probs of the ONNX graph fed one token per step, by the codec's own runner.

    igpt_codec.runtime.TokenModel does the stepping (session options, cache buffers and their
    chunked growth, past_length), so parity measures exactly the floats the codec codes with.
    """
    model = TokenModel.for_graph(
        model_path,
        n_layer=len(names.past) // 2,
        n_head=n_head,
        head_dim=head_dim,
        n_positions=n_positions or sequences.shape[1],
    )
    state = model.start(sequences.shape[0])
    logits, probs = [], []
    for t in range(sequences.shape[1]):
        step_logits, step_probs, state = model.run(sequences[:, t : t + 1], state, logits=True)
        logits.append(step_logits[:, 0])
        probs.append(step_probs[:, 0])
    return np.stack(logits, axis=1), np.stack(probs, axis=1)


def measure_parity(
    model_path: Path,
    names: IoNames,
    hf_model,
    sequences: np.ndarray,
    reference: tuple[np.ndarray, np.ndarray] | None = None,
) -> dict:
    """Max |logit| and |prob| differences, plus whether batch 1 reproduces the batch bit for bit.

    Batch invariance is measured, not assumed: the codec may batch sequences only
    when a sequence's probabilities do not depend on its batch neighbours.
    """
    config = hf_model.config
    head_dim = config.n_embd // config.n_head
    ref_logits, ref_probs = reference or torch_reference(hf_model, sequences)
    args = (model_path, names, config.n_head, head_dim)
    logits, probs = ort_stepwise(*args, sequences, config.n_positions)
    _, alone = ort_stepwise(*args, sequences[-1:], config.n_positions)
    return {
        "max_abs_logit_diff": float(np.abs(logits - ref_logits).max()),
        "max_abs_prob_diff": float(np.abs(probs - ref_probs).max()),
        "positions": int(sequences.shape[1]),
        "sequences": int(sequences.shape[0]),
        "batch_invariant": bool(np.array_equal(alone[0], probs[-1])),
    }
