"""Compression pipeline: palette tokens, model probabilities, frequency tables, range coder."""

from codec.api import (
    CompressSummary,
    DecodedImage,
    compress,
    compress_to,
    decode_records,
    decompress,
    iter_decompress,
    resolve_bundle,
)

__all__ = [
    "CompressSummary",
    "DecodedImage",
    "compress",
    "compress_to",
    "decode_records",
    "decompress",
    "iter_decompress",
    "resolve_bundle",
]
