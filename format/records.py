"""What a record says: its header fields, their limits, and their byte layout.

Validation lives in the dataclasses, so an invalid header can neither be read
from a stream nor written to one; the reader and the writer share one rule set.
The layout is documented byte by byte in format/SPEC.md.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from format.errors import (
    InvalidFieldError,
    LengthOutOfRangeError,
    PayloadError,
    UnknownExtensionError,
    UnknownFlagsError,
)
from format.varint import decode_varint, encode_varint

KIND_END = 0
"""Reserved: the kind byte of the end marker, never a record."""
KIND_THUMBNAIL = 1
"""A whole image, resized to side x side and coded as side^2 palette tokens."""
KNOWN_KINDS = frozenset({KIND_THUMBNAIL})

RECORD_ANCILLARY = 0x01
"""Record flag: a reader that does not know the record's kind may skip it."""
KNOWN_RECORD_FLAGS = RECORD_ANCILLARY
"""The flags a RecordHeader may carry."""
RECORD_FINAL = 0x02
"""Frame flag, set by the writer alone: the last record of the stream (never in a RecordHeader)."""
PADDING_SHIFT = 5
"""The record-flags byte holds the payload's padding-bit count (0..7) in bits 5..7."""
RESERVED_RECORD_FLAGS = 0x1C
"""Bits 2..4 of the record-flags byte: must be 0."""

EXT_MUST_UNDERSTAND = 0x80
"""Extension tag bit: a reader that does not know the tag must refuse the record."""
KNOWN_EXTENSION_TAGS: frozenset[int] = frozenset()

FINGERPRINT_LEN = 8
MAX_MODE_LEN = 16
MAX_TOKENS = 1 << 20
MAX_SIDE = math.isqrt(MAX_TOKENS)
"""1024: the largest side whose square fits MAX_TOKENS."""
MAX_FREQ_BITS = 31
MAX_EXTENSIONS_LEN = 16384
MAX_PAYLOAD = 1 << 24
"""Far above what MAX_TOKENS tokens can cost at MAX_FREQ_BITS (about 4 MiB)."""

_U16 = 0xFFFF
_U32 = 0xFFFFFFFF

# Kind 1 header body (SPEC.md): fingerprint, width, height, mode length, mode, side, freq bits,
# batch size, batch index, extension area length, extension area; the integers are varints
# except the two u8s (mode length, freq bits). The token count is not stored: it is side^2.
_EXT_ENTRY = struct.Struct("<BH")


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise InvalidFieldError(message)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def iter_extensions(data: bytes) -> Iterator[tuple[int, bytes]]:
    """Walk the TLV entries of an extension area: (tag u8, length u16 LE, value)."""
    pos = 0
    while pos < len(data):
        if len(data) - pos < _EXT_ENTRY.size:
            raise InvalidFieldError(f"extension area ends inside an entry header at byte {pos}")
        tag, size = _EXT_ENTRY.unpack_from(data, pos)
        pos += _EXT_ENTRY.size
        if size > len(data) - pos:
            raise InvalidFieldError(
                f"extension tag {tag:#04x} needs {size} bytes, {len(data) - pos} remain in its area"
            )
        yield tag, data[pos : pos + size]
        pos += size


def pack_extensions(entries: Iterable[tuple[int, bytes]]) -> bytes:
    """The inverse of `iter_extensions`."""
    out = bytearray()
    for tag, value in entries:
        _require(_is_int(tag) and 0 <= tag <= 0xFF, f"extension tag must be a u8, got {tag!r}")
        _require(len(value) <= _U16, f"extension value of {len(value)} bytes exceeds 65535")
        out += _EXT_ENTRY.pack(tag, len(value)) + bytes(value)
    return bytes(out)


def check_extensions(data: bytes) -> None:
    """Structure must parse, and every must-understand tag must be known."""
    if len(data) > MAX_EXTENSIONS_LEN:
        raise LengthOutOfRangeError(
            f"extension area of {len(data)} bytes exceeds the limit {MAX_EXTENSIONS_LEN}"
        )
    for tag, _ in iter_extensions(data):
        if tag & EXT_MUST_UNDERSTAND and tag not in KNOWN_EXTENSION_TAGS:
            raise UnknownExtensionError(f"unknown must-understand extension tag {tag:#04x}")


@dataclass(frozen=True)
class RecordHeader:
    """Everything the decoder needs besides the payload to rebuild one image.

    `batch_size`/`batch_index` record how the encoder grouped sequences into
    model batches, because batch composition can change the floats (DESIGN.md);
    1/0 means the record was coded alone. `token_count` is always side^2, so a
    stream does not store it: the reader derives it from `side`.
    """

    fingerprint: bytes
    width: int
    height: int
    mode: str
    side: int
    token_count: int
    freq_bits: int
    batch_size: int = 1
    batch_index: int = 0
    kind: int = KIND_THUMBNAIL
    flags: int = 0
    extensions: bytes = b""

    def __post_init__(self) -> None:
        _require(
            self.kind in KNOWN_KINDS, f"record kind {self.kind!r} is not one this writer knows"
        )
        if not _is_int(self.flags) or self.flags & ~KNOWN_RECORD_FLAGS or self.flags < 0:
            raise UnknownFlagsError(f"unknown record flags {self.flags!r}")
        _require(
            isinstance(self.fingerprint, bytes) and len(self.fingerprint) == FINGERPRINT_LEN,
            f"fingerprint must be {FINGERPRINT_LEN} bytes, got {self.fingerprint!r}",
        )
        for name in ("width", "height"):
            value = getattr(self, name)
            _require(
                _is_int(value) and 1 <= value <= _U16, f"{name} must be 1..65535, got {value!r}"
            )
        _require(
            isinstance(self.mode, str)
            and 1 <= len(self.mode) <= MAX_MODE_LEN
            and all("!" <= ch <= "~" for ch in self.mode),
            f"mode must be 1..{MAX_MODE_LEN} printable ASCII characters, got {self.mode!r}",
        )
        _require(
            _is_int(self.side) and 1 <= self.side <= MAX_SIDE,
            f"side must be 1..{MAX_SIDE}, got {self.side!r}",
        )
        _require(
            _is_int(self.token_count) and self.token_count == self.side**2,
            f"token count {self.token_count!r} does not match side {self.side} (must be side^2)",
        )
        _require(
            _is_int(self.freq_bits) and 1 <= self.freq_bits <= MAX_FREQ_BITS,
            f"freq_bits must be 1..{MAX_FREQ_BITS}, got {self.freq_bits!r}",
        )
        _require(
            _is_int(self.batch_size) and 1 <= self.batch_size <= _U16,
            f"batch size must be 1..65535, got {self.batch_size!r}",
        )
        _require(
            _is_int(self.batch_index) and 0 <= self.batch_index < self.batch_size,
            f"batch index {self.batch_index!r} outside a batch of {self.batch_size}",
        )
        _require(isinstance(self.extensions, bytes), "extensions must be bytes")
        check_extensions(self.extensions)

    def to_bytes(self) -> bytes:
        """The kind-specific header body (not the record frame around it)."""
        mode = self.mode.encode("ascii")
        return b"".join(
            (
                self.fingerprint,
                encode_varint(self.width),
                encode_varint(self.height),
                bytes([len(mode)]),
                mode,
                encode_varint(self.side),
                bytes([self.freq_bits]),
                encode_varint(self.batch_size),
                encode_varint(self.batch_index),
                encode_varint(len(self.extensions)),
                self.extensions,
            )
        )

    @classmethod
    def from_bytes(cls, kind: int, flags: int, body: bytes) -> RecordHeader:
        """Parse a header body; every inconsistency is an InvalidFieldError."""
        _require(kind == KIND_THUMBNAIL, f"record kind {kind} has no header parser")
        _require(
            len(body) >= FINGERPRINT_LEN,
            f"record header of {len(body)} bytes cannot hold a fingerprint",
        )
        fingerprint = body[:FINGERPRINT_LEN]
        width, pos = decode_varint(body, FINGERPRINT_LEN, _U16, "width")
        height, pos = decode_varint(body, pos, _U16, "height")
        _require(pos < len(body), "record header ends inside its mode length")
        mode_len = body[pos]
        pos += 1
        _require(
            mode_len <= MAX_MODE_LEN and len(body) >= pos + mode_len,
            f"record header of {len(body)} bytes cannot hold a mode of {mode_len} bytes",
        )
        mode_bytes = body[pos : pos + mode_len]
        _require(
            all(0x21 <= b <= 0x7E for b in mode_bytes),
            f"mode {mode_bytes!r} is not printable ASCII",
        )
        pos += mode_len
        side, pos = decode_varint(body, pos, MAX_SIDE, "side")
        _require(pos < len(body), "record header ends inside its freq bits")
        freq_bits = body[pos]
        batch_size, pos = decode_varint(body, pos + 1, _U16, "batch size")
        batch_index, pos = decode_varint(body, pos, _U16 - 1, "batch index")
        ext_len, pos = decode_varint(body, pos, MAX_EXTENSIONS_LEN, "extension area length")
        _require(
            len(body) == pos + ext_len,
            f"record header is {len(body)} bytes but its fields need {pos + ext_len}",
        )
        return cls(
            fingerprint=fingerprint,
            width=width,
            height=height,
            mode=mode_bytes.decode("ascii"),
            side=side,
            token_count=side * side,
            freq_bits=freq_bits,
            batch_size=batch_size,
            batch_index=batch_index,
            kind=kind,
            flags=flags,
            extensions=body[pos:],
        )


def check_padding(payload: bytes, padding_bits: int) -> None:
    """The padding rule of codec/coder.py, checked at the container level too."""
    _require(
        _is_int(padding_bits) and 0 <= padding_bits <= 7,
        f"padding bits must be 0..7, got {padding_bits!r}",
    )
    if not payload and padding_bits:
        raise PayloadError(f"empty payload cannot have {padding_bits} padding bits")
    if payload and payload[-1] & ((1 << padding_bits) - 1):
        raise PayloadError(f"the {padding_bits} padding bits of the last payload byte are not 0")


@dataclass(frozen=True)
class Record:
    """One coded image: header, range-coder payload and the CRC of its tokens."""

    header: RecordHeader
    payload: bytes
    padding_bits: int
    token_crc: int

    def __post_init__(self) -> None:
        _require(isinstance(self.header, RecordHeader), "header must be a RecordHeader")
        _require(isinstance(self.payload, bytes), "payload must be bytes")
        if len(self.payload) > MAX_PAYLOAD:
            raise LengthOutOfRangeError(
                f"payload of {len(self.payload)} bytes exceeds the limit {MAX_PAYLOAD}"
            )
        check_padding(self.payload, self.padding_bits)
        _require(
            _is_int(self.token_crc) and 0 <= self.token_crc <= _U32,
            f"token CRC must be a u32, got {self.token_crc!r}",
        )
