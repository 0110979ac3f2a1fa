"""Classical lossless codecs on the very same palette-token thumbnails.

Two kinds of competitor:
- image codecs (PNG, WebP lossless, JPEG XL lossless) get the palette-quantized
  RGB thumbnail, the picture our decoder reproduces; PNG also gets an indexed
  (palette) version when at most 256 colours occur, and the 9-bit token values
  as a 16-bit greyscale image;
- general-purpose compressors (brotli, zstd, lzma) get the token stream in
  several byte layouts, since which layout suits which compressor is not obvious.
Every size is a complete file, headers included. Image codecs are decoded again
and compared, so a lossy setting can never slip into the table.
"""

from __future__ import annotations

import io
import lzma
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from igpt_codec.core.palette import tokens_to_rgb

MAX_INDEXED_COLOURS = 256

Compressor = Callable[[bytes], bytes]
ImageCodec = Callable[[np.ndarray, np.ndarray], tuple[bytes, bool]]
"""(tokens, rgb) -> (file bytes, decoded back exactly)."""


def pack_u16le(tokens: np.ndarray) -> bytes:
    """Each token as a little-endian uint16: 2 bytes per token, byte-aligned values."""
    return tokens.astype("<u2").tobytes()


def pack_planes(tokens: np.ndarray) -> bytes:
    """The low 8 bits of every token, then the 9th bits packed 8 to a byte."""
    low = (tokens & 0xFF).astype(np.uint8).tobytes()
    return low + np.packbits((tokens >> 8).astype(np.uint8)).tobytes()


def pack_bits9(tokens: np.ndarray) -> bytes:
    """Exactly 9 bits per token, most significant bit first, zero padded to a byte."""
    bits = ((tokens.astype(np.uint16)[:, None] >> np.arange(8, -1, -1)) & 1).astype(np.uint8)
    return np.packbits(bits.reshape(-1)).tobytes()


PACKINGS: dict[str, Callable[[np.ndarray], bytes]] = {
    "u16le": pack_u16le,
    "planes": pack_planes,
    "bits9": pack_bits9,
}


@dataclass
class Competitors:
    """The codecs available in this environment, and why any are missing."""

    compressors: dict[str, Compressor] = field(default_factory=dict)
    image_codecs: dict[str, ImageCodec] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def _lzma(data: bytes) -> bytes:
    # `lzma -9e`: the .lzma ("alone") file, 13-byte header; .xz would add ~50 bytes of framing.
    return lzma.compress(data, format=lzma.FORMAT_ALONE, preset=9 | lzma.PRESET_EXTREME)


def _save(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _same_rgb(data: bytes, rgb: np.ndarray) -> bool:
    with Image.open(io.BytesIO(data)) as decoded:
        return np.array_equal(np.asarray(decoded.convert("RGB")), rgb)


def png_rgb(tokens: np.ndarray, rgb: np.ndarray) -> tuple[bytes, bool]:
    data = _save(Image.fromarray(rgb), "PNG", optimize=True)
    return data, _same_rgb(data, rgb)


def png_indexed(tokens: np.ndarray, rgb: np.ndarray) -> tuple[bytes, bool]:
    """8-bit (or fewer) palette PNG of the colours that occur; RGB PNG past 256 colours."""
    used, index = np.unique(tokens, return_inverse=True)
    if used.size > MAX_INDEXED_COLOURS:
        return png_rgb(tokens, rgb)
    flat = rgb.reshape(-1, 3)
    colours = np.zeros((used.size, 3), dtype=np.uint8)
    colours[index] = flat
    image = Image.fromarray(index.reshape(rgb.shape[:2]).astype(np.uint8), mode="P")
    image.putpalette(colours.reshape(-1).tolist())
    data = _save(image, "PNG", optimize=True)
    return data, _same_rgb(data, rgb)


def png_tokens16(tokens: np.ndarray, rgb: np.ndarray) -> tuple[bytes, bool]:
    """The token values themselves as a 16-bit greyscale PNG (9 significant bits)."""
    grey = Image.fromarray(tokens.reshape(rgb.shape[:2]).astype(np.uint16))
    data = _save(grey, "PNG", optimize=True)
    with Image.open(io.BytesIO(data)) as decoded:
        same = np.array_equal(np.asarray(decoded).astype(np.int64).reshape(-1), tokens)
    return data, same


def webp_lossless(tokens: np.ndarray, rgb: np.ndarray) -> tuple[bytes, bool]:
    data = _save(Image.fromarray(rgb), "WEBP", lossless=True, quality=100, method=6, exact=True)
    return data, _same_rgb(data, rgb)


def jxl_lossless(tokens: np.ndarray, rgb: np.ndarray) -> tuple[bytes, bool]:
    data = _save(Image.fromarray(rgb), "JXL", lossless=True, effort=9)
    return data, _same_rgb(data, rgb)


def find_competitors() -> Competitors:
    """Every codec that imports and works here; a missing one becomes a note, not a failure."""
    found = Competitors()
    try:
        import brotli

        found.compressors["brotli"] = lambda data: brotli.compress(data, quality=11)
    except ImportError:
        found.notes.append("brotli skipped: the brotli package is not installed")
    try:
        import zstandard

        zstd = zstandard.ZstdCompressor(level=19)
        found.compressors["zstd"] = zstd.compress
    except ImportError:
        found.notes.append("zstd skipped: the zstandard package is not installed")
    found.compressors["lzma"] = _lzma

    found.image_codecs["png_rgb"] = png_rgb
    found.image_codecs["png_indexed"] = png_indexed
    found.image_codecs["png_tokens16"] = png_tokens16
    from PIL import features

    if features.check("webp"):
        found.image_codecs["webp_ll"] = webp_lossless
    else:
        found.notes.append("WebP skipped: this Pillow was built without WebP")
    try:
        import pillow_jxl  # noqa: F401  (registers the JXL format with Pillow)

        probe = np.zeros((4, 4, 3), dtype=np.uint8)
        jxl_lossless(np.zeros(16, dtype=np.int64), probe)
        found.image_codecs["jxl_ll"] = jxl_lossless
    except Exception as exc:  # an import error or a plugin that cannot encode
        found.notes.append(f"JPEG XL skipped: pillow_jxl unusable ({type(exc).__name__}: {exc})")
    return found


def measure(
    competitors: Competitors, tokens: np.ndarray, palette: np.ndarray, side: int
) -> tuple[dict[str, int], list[str]]:
    """File bytes per codec (and per compressor/packing pair) for one thumbnail.

    Returns (sizes, problems); a problem is an image codec that did not decode exactly.
    """
    tokens = np.asarray(tokens, dtype=np.int64)
    rgb = tokens_to_rgb(tokens, palette, side)
    sizes: dict[str, int] = {}
    problems: list[str] = []
    for name, codec in competitors.image_codecs.items():
        data, exact = codec(tokens, rgb)
        sizes[name] = len(data)
        if not exact:
            problems.append(f"{name} did not decode to the same pixels")
    packed = {name: pack(tokens) for name, pack in PACKINGS.items()}
    for name, compress in competitors.compressors.items():
        for packing, data in packed.items():
            sizes[f"{name}/{packing}"] = len(compress(data))
    return sizes, problems
