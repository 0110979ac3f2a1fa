"""Every error the library raises on bad input, under one base class.

Callers (the CLI above all) catch `CodecError` once and print its one-line
message; the subclasses exist so that tests and tools can tell a truncated file
from a corrupted one from a wrong model without parsing messages. Messages are
a single line and name the problem, e.g. "truncated stream: record payload
needs 1234 bytes, 17 remain".
"""

from __future__ import annotations


class CodecError(Exception):
    """Base for everything the library raises on bad input; the message is one line."""


# --- the stream itself --------------------------------------------------------------------


class FormatError(CodecError):
    """Something is wrong with the bytes of a stream."""


class BadMagicError(FormatError):
    """The stream does not start with the format's magic bytes."""


class UnsupportedVersionError(FormatError):
    """The stream was written for a format version this reader does not implement."""


class UnknownFlagsError(FormatError):
    """A flag bit is set that this reader does not know, so it cannot read on safely."""


class UnknownRecordKindError(FormatError):
    """A record kind this reader does not know, and the record is not marked skippable."""


class UnknownExtensionError(FormatError):
    """A must-understand extension tag this reader does not know."""


class TruncatedError(FormatError):
    """The stream ends before a field or payload it announces."""


class MissingEndMarkerError(TruncatedError):
    """The stream ends at a record boundary without its end marker."""


class LengthOutOfRangeError(FormatError):
    """A length field exceeds its limit or the bytes known to remain.

    Raised before anything of that length is read or allocated.
    """


class ChecksumError(FormatError):
    """A CRC-32 stored in the stream does not match the bytes it covers."""


class TrailingDataError(FormatError):
    """Bytes follow the end marker."""


class InvalidFieldError(FormatError):
    """A field holds a value that is impossible (zero width, token count != side^2, ...)."""


class EmptyStreamError(FormatError):
    """A well-formed stream with no records, which the format does not allow."""


class PayloadError(FormatError):
    """The entropy-coded payload breaks the coder's own rules (e.g. nonzero padding bits)."""


# --- raised by the codec, defined here so that one import covers every failure ------------


class ModelMismatchError(CodecError):
    """The record was coded with another model than the bundle at hand (fingerprints differ)."""


class TokenChecksumError(CodecError):
    """Decoded tokens do not match the stored token CRC: the numerics diverged."""


class DecodeLimitError(CodecError):
    """The stream asks for more decoding work than the decoder's limits allow."""


__all__ = [
    "BadMagicError",
    "ChecksumError",
    "CodecError",
    "DecodeLimitError",
    "EmptyStreamError",
    "FormatError",
    "InvalidFieldError",
    "LengthOutOfRangeError",
    "MissingEndMarkerError",
    "ModelMismatchError",
    "PayloadError",
    "TokenChecksumError",
    "TrailingDataError",
    "TruncatedError",
    "UnknownExtensionError",
    "UnknownFlagsError",
    "UnknownRecordKindError",
    "UnsupportedVersionError",
]
