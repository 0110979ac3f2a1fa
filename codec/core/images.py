"""Any input Pillow can open -> one RGB image, plus the original geometry and mode.

The codec is lossless on the palette-token image, not on the original file, so
this module only has to turn every input into the RGB picture a person would
see, deterministically, and refuse clearly what it cannot. Choices:

- EXIF orientation is applied first (what viewers show); the stored original
  width and height are those of the oriented image. An unreadable EXIF block
  leaves the pixels as stored rather than refusing an otherwise good image.
- Transparency (RGBA, LA, PA, RGBa, La, palette or RGB/L images with a
  transparent colour) is composited on white with Pillow's integer
  `alpha_composite`. Dropping alpha instead would code whatever colours sit
  under fully transparent pixels (often black or junk), which nobody sees and
  which costs bits.
- 16-bit greyscale (I;16, I;16B, I;16L, ...) and 32-bit integer (I) images are
  read as 0..65535 and rounded to 8 bits; Pillow's own convert('L') clips at
  255 instead, which would turn most 16-bit images white. Values outside
  0..65535 in mode I are clipped.
- F (32-bit float) follows Pillow's own convention for that mode, 0..255 (what
  convert('L') assumes), rounded and clipped; NaN or infinity is refused.
- 1-bit, L, P, CMYK, YCbCr, LAB, HSV and anything else Pillow converts to RGB go through
  Pillow's `convert('RGB')`; CMYK with the plain formula (embedded ICC
  profiles are ignored for every mode, as ImageGPT's own processor ignores
  them). Modes Pillow cannot convert are refused.
- numpy arrays: H x W (grey), H x W x 3 (RGB) or H x W x 4 (RGBA) of uint8, as
  `PIL.Image.fromarray` reads them; other shapes and dtypes are refused.
- Multi-frame files (GIF, APNG, TIFF pages, ...) use their first frame only.
- Pillow's decompression-bomb limit stands: images past its hard limit are
  refused; its warning band below that is silenced so the CLI stays one line.
"""

from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps

from igpt_codec.core.errors import InputImageError

MAX_DIMENSION = 0xFFFF
"""The container stores the original width and height as varints of at most 65535."""

_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})
_WHITE = (255, 255, 255, 255)

ImageSource = str | os.PathLike[str] | bytes | BinaryIO | Image.Image | np.ndarray
"""What `load_image` accepts: a path, the bytes of an image file, a binary file object
opened on one, a PIL image, or a uint8 numpy array (H x W, H x W x 3, H x W x 4)."""


@dataclass(frozen=True)
class LoadedImage:
    """An input ready for the tokenizer, with what the container records about it."""

    rgb: Image.Image
    width: int
    height: int
    mode: str
    name: str


def load_image(source: ImageSource, name: str | None = None) -> LoadedImage:
    """Open a path, bytes, binary file object, PIL image or numpy array as an RGB image.

    `name` labels error messages (defaults to the path, "<bytes>", "<stream>",
    "<image>" or "<array>"). Every failure is an InputImageError with a one-line
    message.
    """
    if isinstance(source, Image.Image):
        return _normalise(source, name or "<image>")
    if isinstance(source, np.ndarray):
        return _normalise(_from_array(source, name or "<array>"), name or "<array>")
    if isinstance(source, bytes | bytearray | memoryview):
        label = name or "<bytes>"
        if not len(source):
            raise InputImageError(f"{label}: empty input")
        return _open_and_normalise(io.BytesIO(bytes(source)), label)
    if isinstance(source, str | os.PathLike):
        path = Path(source)
        label = name or str(path)
        _check_path(path, label)
        return _open_and_normalise(path, label)
    if hasattr(source, "read"):
        return _open_and_normalise(source, name or "<stream>")
    raise InputImageError(f"{name or '<input>'}: not a path, bytes or image: {type(source)}")


def _from_array(array: np.ndarray, label: str) -> Image.Image:
    """A uint8 H x W, H x W x 3 or H x W x 4 array as an L, RGB or RGBA image."""
    shape = array.shape
    channels = 1 if array.ndim == 2 else (shape[2] if array.ndim == 3 else 0)
    if array.dtype != np.uint8 or channels not in (1, 3, 4) or 0 in shape:
        raise InputImageError(
            f"{label}: an image array must be uint8 H x W, H x W x 3 or H x W x 4, "
            f"got {array.dtype} {shape}"
        )
    height, width = shape[:2]
    if width > MAX_DIMENSION or height > MAX_DIMENSION:
        raise InputImageError(
            f"{label}: {width}x{height} is outside the supported 1..{MAX_DIMENSION} per side"
        )
    return Image.fromarray(np.ascontiguousarray(array))


def _check_path(path: Path, label: str) -> None:
    """Name the common file problems plainly before Pillow words them its own way."""
    try:
        info = path.stat()
    except FileNotFoundError:
        raise InputImageError(f"{label}: no such file") from None
    except OSError as exc:
        raise InputImageError(f"{label}: cannot read: {exc.strerror or exc}") from None
    if path.is_dir():
        raise InputImageError(f"{label}: is a directory, not an image")
    if info.st_size == 0 and path.is_file():
        raise InputImageError(f"{label}: empty file")


def _open_and_normalise(fp: Path | BinaryIO, label: str) -> LoadedImage:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(fp) as image:
                image.seek(0)
                image.load()
                return _normalise(image, label)
    except InputImageError:
        raise
    except Image.DecompressionBombError as exc:
        raise InputImageError(f"{label}: image too large to open safely ({exc})") from None
    except Image.UnidentifiedImageError:
        raise InputImageError(f"{label}: not an image Pillow can read") from None
    except PermissionError:
        raise InputImageError(f"{label}: permission denied") from None
    except IsADirectoryError:
        raise InputImageError(f"{label}: is a directory, not an image") from None
    except Exception as exc:  # Pillow's parsers raise many types on corrupt data
        detail = " ".join(str(exc).split()) or type(exc).__name__
        raise InputImageError(f"{label}: cannot decode image: {detail}") from None


def _normalise(image: Image.Image, label: str) -> LoadedImage:
    """Orient, then convert to RGB by the rules in the module docstring."""
    mode = image.mode
    image = _oriented(image)
    width, height = image.size
    if not (1 <= width <= MAX_DIMENSION and 1 <= height <= MAX_DIMENSION):
        raise InputImageError(
            f"{label}: {width}x{height} is outside the supported 1..{MAX_DIMENSION} per side"
        )
    return LoadedImage(_to_rgb(image, label), width, height, mode, label)


def _oriented(image: Image.Image) -> Image.Image:
    try:
        return ImageOps.exif_transpose(image)
    except Exception:  # a broken EXIF block should not cost the pixels
        return image


def _to_rgb(image: Image.Image, label: str) -> Image.Image:
    mode = image.mode
    if mode in _SIXTEEN_BIT_MODES or mode == "I":
        wide = np.clip(np.asarray(image).astype(np.int64), 0, 0xFFFF)
        return _grey_to_rgb((wide * 255 + 32767) // 65535)
    if mode == "F":
        values = np.asarray(image, dtype=np.float64)
        if not np.isfinite(values).all():
            raise InputImageError(f"{label}: float image contains NaN or infinity")
        return _grey_to_rgb(np.clip(np.rint(values), 0, 255))
    if mode in _ALPHA_MODES or "transparency" in image.info:
        return _on_white(image, label)
    if mode == "RGB":
        return image.copy()
    try:
        return image.convert("RGB")
    except (ValueError, OSError) as exc:
        raise InputImageError(f"{label}: cannot convert mode {mode} to RGB ({exc})") from None


def _grey_to_rgb(values: np.ndarray) -> Image.Image:
    return Image.fromarray(values.astype(np.uint8)).convert("RGB")


def _on_white(image: Image.Image, label: str) -> Image.Image:
    try:
        # Pillow converts premultiplied La only to LA; RGBa and the rest go straight to RGBA.
        rgba = (image.convert("LA") if image.mode == "La" else image).convert("RGBA")
    except (ValueError, OSError) as exc:
        raise InputImageError(f"{label}: cannot convert mode {image.mode} to RGB ({exc})") from None
    background = Image.new("RGBA", rgba.size, _WHITE)
    return Image.alpha_composite(background, rgba).convert("RGB")
