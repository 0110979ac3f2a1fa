"""Image <-> palette tokens, the way ImageGPT's image processor does it.

Only the encoder tokenizes; the decoder turns decoded tokens straight back into
colours. So the float arithmetic here does not have to be bit-reproducible across
machines; it has to match transformers' ImageGPTImageProcessor, which the tests
check token for token.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

PALETTE_SIZE = 512
MAX_SIDE = 32


class PaletteError(ValueError):
    """The palette array is not a 512x3 colour table in [-1, 1]."""


def validate_palette(palette: np.ndarray) -> np.ndarray:
    """Return the palette as float32 (512, 3), refusing anything else."""
    arr = np.asarray(palette)
    if arr.shape != (PALETTE_SIZE, 3):
        raise PaletteError(f"palette must have shape (512, 3), got {arr.shape}")
    if not np.issubdtype(arr.dtype, np.floating):
        raise PaletteError(f"palette must be floating point, got {arr.dtype}")
    arr = arr.astype(np.float32)
    if not np.all(np.isfinite(arr)) or np.abs(arr).max() > 1.0:
        raise PaletteError("palette values must be finite and within [-1, 1]")
    return arr


def resize_rgb(image: Image.Image, size: int) -> np.ndarray:
    """Bilinear resize to size x size (aspect ratio not kept, as ImageGPT does)."""
    if not 1 <= size <= MAX_SIDE:
        raise ValueError(f"size must be between 1 and {MAX_SIDE}, got {size}")
    if image.mode != "RGB":
        raise ValueError(f"expected an RGB image, got mode {image.mode}")
    resized = image.resize((size, size), resample=Image.Resampling.BILINEAR)
    return np.asarray(resized, dtype=np.uint8)


TOKENIZE_CHUNK = 1 << 7
"""Colours per distance matrix (128 x 512 float64 = 512 kB): a full-resolution photo is
tokenized in chunks, so memory does not grow with its size. Small on purpose: the
matrices stay in the core's cache and the BLAS library runs each product on one thread.
Measured on a 1296 x 864 photo (one process, same tokens): 4,096 colours a chunk took
0.61 s wall and 1.17 CPU-s (two BLAS threads), 128 took 0.35 s and 0.35 CPU-s."""


DEDUPLICATE_CHUNK = 1 << 20
"""Pixels deduplicated at a time: a 24-megapixel photo's np.unique at once would hold about
600 MB of sort indices; a megapixel at a time holds about 25 MB and still finds a photo's
colours repeated hundreds of times."""


def pixels_to_tokens(rgb: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """Nearest palette colour per pixel, raster order, as uint16.

    Mirrors the processor's arithmetic: the pixels are scaled in float64 and
    stored as float32, the clusters are float64, and the distance is expanded
    as a^2 - 2ab + b^2, so near-ties break the same way. Each distinct colour of a
    megapixel is measured once: a photo's megapixel holds far fewer colours than
    pixels (tens of thousands against a million), and the distance matrix is the
    whole cost.
    """
    flat = np.asarray(rgb, dtype=np.uint8).reshape(-1, 3)
    out = np.empty(flat.shape[0], dtype=np.uint16)
    for start in range(0, flat.shape[0], DEDUPLICATE_CHUNK):
        chunk = flat[start : start + DEDUPLICATE_CHUNK]
        packed = (chunk[:, 0].astype(np.uint32) << 16) | (chunk[:, 1].astype(np.uint32) << 8)
        packed |= chunk[:, 2]
        colours, inverse = np.unique(packed, return_inverse=True)
        unique_rgb = np.stack([colours >> 16, (colours >> 8) & 0xFF, colours & 0xFF], axis=1)
        out[start : start + len(chunk)] = _nearest(unique_rgb.astype(np.uint8), palette)[inverse]
    return out


def _nearest(flat: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """The nearest palette colour of each uint8 RGB row, by the processor's arithmetic."""
    pal64 = np.asarray(palette, dtype=np.float64)
    b2 = np.sum(np.square(pal64.T), axis=0)
    out = np.empty(flat.shape[0], dtype=np.uint16)
    for start in range(0, flat.shape[0], TOKENIZE_CHUNK):
        chunk = flat[start : start + TOKENIZE_CHUNK]
        x = (chunk.astype(np.float64) * (1 / 127.5)).astype(np.float32) - 1
        a2 = np.sum(np.square(x), axis=1)
        distance = a2[:, None] - 2 * np.matmul(x, pal64.T) + b2[None, :]
        out[start : start + len(chunk)] = np.argmin(distance, axis=1)
    return out


def image_to_tokens(image: Image.Image, palette: np.ndarray, size: int) -> np.ndarray:
    """An RGB image -> size*size palette tokens in raster order."""
    return pixels_to_tokens(resize_rgb(image, size), palette)


def tokens_to_rgb(tokens: np.ndarray, palette: np.ndarray, size: int) -> np.ndarray:
    """Palette tokens -> uint8 (size, size, 3) with ImageGPT's rint(127.5 * (c + 1))."""
    tokens = np.asarray(tokens)
    if tokens.shape != (size * size,):
        raise ValueError(f"expected {size * size} tokens, got shape {tokens.shape}")
    return grid_to_rgb(tokens.reshape(size, size), palette)


def grid_to_rgb(tokens: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """Palette tokens [H, W] -> uint8 [H, W, 3], the colours of `tokens_to_rgb`."""
    tokens = np.asarray(tokens)
    if tokens.ndim != 2:
        raise ValueError(f"expected [height, width] tokens, got shape {tokens.shape}")
    if tokens.size and int(tokens.max()) >= PALETTE_SIZE:
        raise ValueError("token outside the 512-colour palette")
    return palette_colours(palette)[tokens]


def palette_colours(palette: np.ndarray) -> np.ndarray:
    """Each palette entry's RGB colour, uint8 [n, 3], by ImageGPT's rint(127.5 * (c + 1)).

    Why a table: grid_to_rgb used to apply the formula to every pixel, in float32
    temporaries four times the size of the image (a 24-megapixel image's were about
    550 MB, the peak of its encode and decode); a lookup in the 512 colours computed
    once gives the same bytes with no temporary."""
    colours = np.rint(127.5 * (np.asarray(palette, dtype=np.float32) + 1))
    return np.clip(colours, 0, 255).astype(np.uint8)


def tokens_to_image(tokens: np.ndarray, palette: np.ndarray, size: int) -> Image.Image:
    return Image.fromarray(tokens_to_rgb(tokens, palette, size))
