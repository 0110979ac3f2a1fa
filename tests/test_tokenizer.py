"""igpt_codec.core.palette must tokenize exactly as transformers' ImageGPT image processor does.

The codec cannot import transformers at run time, so it re-implements the
processor; this test holds the two together token for token on real photos.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from igpt_codec.core.images import load_image
from igpt_codec.core.palette import image_to_tokens

CLUSTERS = Path(__file__).resolve().parents[1] / "export" / "data" / "imagegpt_clusters.npy"
SIDE = 32
PHOTOS = 104


def _processor_class():
    """The numpy + Pillow processor of transformers 5.x, else the default one; else skip."""
    try:
        from transformers import ImageGPTImageProcessorPil

        return ImageGPTImageProcessorPil
    except ImportError:
        pass
    try:
        from transformers import ImageGPTImageProcessor

        return ImageGPTImageProcessor
    except ImportError:
        pytest.skip("transformers has no importable ImageGPT image processor")


def _spread(paths: list[Path], count: int) -> list[Path]:
    """Evenly spaced over the sorted list, so every source folder and format is sampled."""
    if len(paths) < count:
        pytest.skip(f"need {count} photos, found {len(paths)}")
    return [paths[i * len(paths) // count] for i in range(count)]


def test_tokens_match_transformers(photo_paths: list[Path]) -> None:
    processor_class = _processor_class()
    clusters = np.load(CLUSTERS)
    # As a checkpoint loads them: preprocessor_config.json holds lists, which the processor
    # turns into float64. Handing it the float32 array instead makes it compute distances in
    # float32, and near-ties then break differently (1 token in ~1 photo of 30).
    processor = processor_class(clusters=clusters.tolist(), size={"height": SIDE, "width": SIDE})
    images = [load_image(path).rgb for path in _spread(photo_paths, PHOTOS)]
    expected = processor(images, return_tensors="np")["input_ids"]
    assert expected.shape == (PHOTOS, SIDE * SIDE)
    ours = np.stack([image_to_tokens(image, clusters, SIDE) for image in images])
    mismatched = int((ours != expected).any(axis=1).sum())
    assert mismatched == 0, f"{mismatched} of {PHOTOS} photos tokenize differently"
