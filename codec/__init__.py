"""igpt-codec: lossless coding of ImageGPT palette images.

Which mode: by default an image is resized to N x N (N <= 32) and quantized to
ImageGPT's 512 colours, and that thumbnail comes back token for token. With
full=True the photo keeps its size, every pixel mapped to the 512 colours, and
that palette image comes back pixel for pixel. Neither is the original photo,
which is not stored (only its size and mode).

    import igpt_codec
    data = igpt_codec.compress("photo.jpg", size=32)  # bytes: one IGP stream
    images = igpt_codec.decompress(data)              # [igpt_codec.DecodedImage]
    images[0].image.save("thumb.png")

`compress` takes a path, image-file bytes, a binary file object, a PIL image, a
uint8 numpy array, or an iterable of them; `decompress` takes a path, the
stream's bytes or a binary file object. Every input problem raises a subclass
of `CodecError` with a one-line message; all of them are importable from here.
`import igpt_codec.pillow` registers the format with Pillow ("IGPT", `.igpt`).

The API functions are imported on first use, so `import codec` (and the CLI's
`info`) does not load onnxruntime.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from igpt_codec.core import errors as _core_errors
from igpt_codec.format import errors as _format_errors

# Every error class of the library (the container's and the codec's), re-exported as they are.
_ERRORS = [*_format_errors.__all__, *_core_errors.__all__]
globals().update(
    {name: getattr(_core_errors, name, None) or getattr(_format_errors, name) for name in _ERRORS}
)

__version__ = "0.1.0"

if TYPE_CHECKING:
    from igpt_codec.api import (
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
    from igpt_codec.pipelines.stream import DecodeLimits
    from igpt_codec.runtime.search import ModelNotFoundError, find_bundle

_LAZY = {
    "CompressSummary": "igpt_codec.api",
    "DecodedImage": "igpt_codec.api",
    "compress": "igpt_codec.api",
    "compress_each": "igpt_codec.api",
    "compress_to": "igpt_codec.api",
    "decode_records": "igpt_codec.api",
    "decompress": "igpt_codec.api",
    "iter_decode": "igpt_codec.api",
    "iter_decompress": "igpt_codec.api",
    "resolve_bundle": "igpt_codec.api",
    "DecodeLimits": "igpt_codec.pipelines.stream",
    "ModelNotFoundError": "igpt_codec.runtime.search",
    "find_bundle": "igpt_codec.runtime.search",
}


def __getattr__(name: str) -> Any:
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module 'igpt_codec' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module_name), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


__all__ = [
    *_ERRORS,
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
