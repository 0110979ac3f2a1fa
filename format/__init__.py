"""The IGP container: reading, writing and validating streams; no model code.

Byte layout and rules: format/SPEC.md.

The error classes are imported with the package; the container's and the records' names
on first use (PEP 562), because they import numpy: `import igpt_codec` and the command
line's entry point then load no numpy before a command runs (the command line starts
numpy's BLAS with one thread, igpt_codec.cli.main).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from igpt_codec.format.errors import (
    BadMagicError,
    ChecksumError,
    CodecError,
    DecodeLimitError,
    EmptyStreamError,
    FormatError,
    InvalidFieldError,
    LengthOutOfRangeError,
    MissingEndMarkerError,
    ModelMismatchError,
    PayloadError,
    TokenChecksumError,
    TrailingDataError,
    TruncatedError,
    UnknownExtensionError,
    UnknownFlagsError,
    UnknownRecordKindError,
    UnsupportedVersionError,
)

if TYPE_CHECKING:
    from igpt_codec.format.container import (
        MAGIC,
        VERSION,
        FileHeader,
        StreamWriter,
        iter_records,
        pack_stream,
        read_file_header,
        token_check,
        unpack_stream,
    )
    from igpt_codec.format.records import (
        CODING_ADAPTIVE,
        CODING_EXACT,
        CODING_FLOAT32,
        KIND_THUMBNAIL,
        MAX_PAYLOAD,
        MAX_TOKENS,
        Record,
        RecordHeader,
    )

_LAZY = {
    "MAGIC": "igpt_codec.format.container",
    "VERSION": "igpt_codec.format.container",
    "FileHeader": "igpt_codec.format.container",
    "StreamWriter": "igpt_codec.format.container",
    "iter_records": "igpt_codec.format.container",
    "pack_stream": "igpt_codec.format.container",
    "read_file_header": "igpt_codec.format.container",
    "token_check": "igpt_codec.format.container",
    "unpack_stream": "igpt_codec.format.container",
    "CODING_ADAPTIVE": "igpt_codec.format.records",
    "CODING_EXACT": "igpt_codec.format.records",
    "CODING_FLOAT32": "igpt_codec.format.records",
    "KIND_THUMBNAIL": "igpt_codec.format.records",
    "MAX_PAYLOAD": "igpt_codec.format.records",
    "MAX_TOKENS": "igpt_codec.format.records",
    "Record": "igpt_codec.format.records",
    "RecordHeader": "igpt_codec.format.records",
}

__all__ = [
    "CODING_ADAPTIVE",
    "CODING_EXACT",
    "CODING_FLOAT32",
    "KIND_THUMBNAIL",
    "MAGIC",
    "MAX_PAYLOAD",
    "MAX_TOKENS",
    "VERSION",
    "BadMagicError",
    "ChecksumError",
    "CodecError",
    "DecodeLimitError",
    "EmptyStreamError",
    "FileHeader",
    "FormatError",
    "InvalidFieldError",
    "LengthOutOfRangeError",
    "MissingEndMarkerError",
    "ModelMismatchError",
    "PayloadError",
    "Record",
    "RecordHeader",
    "StreamWriter",
    "TokenChecksumError",
    "TrailingDataError",
    "TruncatedError",
    "UnknownExtensionError",
    "UnknownFlagsError",
    "UnknownRecordKindError",
    "UnsupportedVersionError",
    "iter_records",
    "pack_stream",
    "read_file_header",
    "token_check",
    "unpack_stream",
]


def __getattr__(name: str) -> Any:
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module 'igpt_codec.format' has no attribute {name!r}")
    value = getattr(importlib.import_module(module_name), name)
    globals()[name] = value
    return value
