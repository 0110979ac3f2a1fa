"""The codec's own errors, above the container's: a bundle, an input image, a table.

Why here and not in format/: the container knows nothing of models or images. Every
error still derives from format's CodecError, so one `except CodecError` catches all.
"""

from __future__ import annotations

from igpt_codec.format.errors import CodecError


class BundleError(CodecError):
    """The model bundle is missing, incomplete or inconsistent."""


class InputImageError(CodecError):
    """The input is not an image the codec can use."""


class FrequencyError(CodecError, ValueError):
    """A probability vector or frequency table cannot be coded (NaN, inf, negative, too large)."""


__all__ = ["BundleError", "FrequencyError", "InputImageError"]
