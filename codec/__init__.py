"""igpt-codec: lossless coding of ImageGPT's N x N palette-token thumbnails.

An image is resized to N x N (N <= 32) and quantized to ImageGPT's 512 colours;
that thumbnail is coded losslessly under an ImageGPT model's predictions. The
original photo is not stored (only its size and mode).

    import codec
    data = codec.compress("photo.jpg", size=32)     # bytes: one IGP stream
    images = codec.decompress(data)                  # [codec.DecodedImage]
    images[0].image.save("thumb.png")

`compress` takes a path, image-file bytes, a binary file object, a PIL image, a
uint8 numpy array, or an iterable of them; `decompress` takes a path, the
stream's bytes or a binary file object. Every input problem raises a subclass
of `CodecError` with a one-line message; all of them are importable from here.
`import codec.pillow` registers the format with Pillow ("IGPT", `.igpt`).

The API functions are imported on first use, so `import codec` (and the CLI's
`info`) does not load onnxruntime.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from format import errors as _errors

# Every error class of the library (format.errors.__all__), re-exported as they are.
globals().update({name: getattr(_errors, name) for name in _errors.__all__})

__version__ = "0.1.0"

if TYPE_CHECKING:
    from codec.api import (
        CompressSummary,
        DecodedImage,
        compress,
        compress_each,
        compress_to,
        decode_records,
        decompress,
        iter_decode,
        iter_decompress,
        resolve_bundle,
    )
    from codec.pipeline import DecodeLimits
    from codec.search import ModelNotFoundError, find_bundle

_LAZY = {
    "CompressSummary": "codec.api",
    "DecodedImage": "codec.api",
    "compress": "codec.api",
    "compress_each": "codec.api",
    "compress_to": "codec.api",
    "decode_records": "codec.api",
    "decompress": "codec.api",
    "iter_decode": "codec.api",
    "iter_decompress": "codec.api",
    "resolve_bundle": "codec.api",
    "DecodeLimits": "codec.pipeline",
    "ModelNotFoundError": "codec.search",
    "find_bundle": "codec.search",
}


def __getattr__(name: str) -> Any:
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module 'codec' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module_name), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


__all__ = [
    *_errors.__all__,
    "CompressSummary",
    "DecodeLimits",
    "DecodedImage",
    "ModelNotFoundError",
    "__version__",
    "compress",
    "compress_each",
    "compress_to",
    "decode_records",
    "decompress",
    "find_bundle",
    "iter_decode",
    "iter_decompress",
    "resolve_bundle",
]
