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


def _per_pixel_tokens(rgb: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """The processor's arithmetic on every pixel (no deduplication of colours)."""
    pal64 = palette.astype(np.float64)
    x = (rgb.reshape(-1, 3).astype(np.float64) * (1 / 127.5)).astype(np.float32) - 1
    distance = (
        np.sum(np.square(x), axis=1)[:, None] - 2 * np.matmul(x, pal64.T) + np.sum(pal64**2, 1)
    )
    return np.argmin(distance, axis=1).astype(np.uint16)


@pytest.mark.parametrize("colours", [1, 7, 300, 40_000])
@pytest.mark.parametrize("deduplicate_chunk", [None, 1_000])
def test_each_colour_measured_once_gives_every_pixel_its_own_token(
    colours: int, deduplicate_chunk: int | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pixels_to_tokens measures each distinct colour once and spreads the result back: the
    tokens must be the per-pixel ones, in raster order, whatever the number of colours
    (one chunk or several: TOKENIZE_CHUNK colours per distance matrix, DEDUPLICATE_CHUNK
    pixels deduplicated at a time)."""
    from igpt_codec.core import palette as palette_module
    from igpt_codec.core.palette import TOKENIZE_CHUNK, pixels_to_tokens

    if deduplicate_chunk is not None:  # several deduplicated chunks, the last one short
        monkeypatch.setattr(palette_module, "DEDUPLICATE_CHUNK", deduplicate_chunk)
    rng = np.random.default_rng(colours)
    palette = np.load(CLUSTERS).astype(np.float32)
    table = rng.integers(0, 256, size=(colours, 3), dtype=np.uint8)
    # Palette colours themselves, and values one step off them, are the near-ties.
    exact = np.rint(127.5 * (palette[rng.integers(0, 512, 64)] + 1)).astype(np.uint8)
    table = np.concatenate([table, exact, np.clip(exact.astype(int) + 1, 0, 255).astype(np.uint8)])
    shape = (150, 150) if colours > TOKENIZE_CHUNK else (37, 53)
    rgb = table[rng.integers(0, len(table), size=shape)]
    got = pixels_to_tokens(rgb, palette)
    assert got.dtype == np.uint16 and got.shape == (shape[0] * shape[1],)
    assert np.array_equal(got, _per_pixel_tokens(rgb, palette))
    assert len(np.unique(rgb.reshape(-1, 3), axis=0)) <= colours + 128
    if colours > TOKENIZE_CHUNK:
        assert len(np.unique(rgb.reshape(-1, 3), axis=0)) > TOKENIZE_CHUNK


def test_no_pixels_give_no_tokens() -> None:
    from igpt_codec.core.palette import pixels_to_tokens

    palette = np.load(CLUSTERS).astype(np.float32)
    assert pixels_to_tokens(np.zeros((0, 5, 3), np.uint8), palette).shape == (0,)


def _rgb_per_pixel(tokens: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """ImageGPT's colour of every token, the formula applied pixel by pixel in float32
    (what grid_to_rgb computed before its colour table)."""
    colours = np.rint(127.5 * (np.asarray(palette, dtype=np.float32)[tokens] + 1))
    return np.clip(colours, 0, 255).astype(np.uint8)


def test_grid_to_rgb_is_the_formula_for_every_token() -> None:
    from igpt_codec.core.palette import grid_to_rgb

    for dtype in (np.float32, np.float64):
        palette = np.load(CLUSTERS).astype(dtype)
        every = np.arange(512).reshape(16, 32)
        assert np.array_equal(grid_to_rgb(every, palette), _rgb_per_pixel(every, palette))
        grid = np.random.default_rng(7).integers(0, 512, (37, 53)).astype(np.uint16)
        out = grid_to_rgb(grid, palette)
        assert out.dtype == np.uint8 and out.shape == (37, 53, 3)
        assert np.array_equal(out, _rgb_per_pixel(grid, palette))


def test_grid_to_rgb_allocates_only_its_output() -> None:
    """A 24-megapixel decode or encode peaked on grid_to_rgb's float32 temporaries (about
    550 MB); the colour table needs none the size of the image."""
    import tracemalloc

    from igpt_codec.core.palette import grid_to_rgb

    palette = np.load(CLUSTERS).astype(np.float32)
    grid = np.random.default_rng(3).integers(0, 512, (1000, 1000)).astype(np.uint16)
    tracemalloc.start()
    try:
        out = grid_to_rgb(grid, palette)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1.25 * out.nbytes, (peak, out.nbytes)
