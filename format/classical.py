"""Record kinds 5 and 6: a full-resolution palette image stored as a classical image file.

Why a record of its own: the model was trained on photos, and on text, line art or
other synthetic images a classical codec (PNG's LZ77, WebP lossless's backward
references) can beat it by 2-3x (issue 28). The encoder then stores the palette image
as a complete PNG or WebP-lossless file instead of model-coded segments, so no image
costs more than the best of those files plus a few bytes of framing, and the decoder
needs no model steps for it.

This module is the framing only (the layer knows nothing of images): the header's
fields and their limits, and how the file is cut into records (kind 5 carries the
header, the token check and the file's first part; kind-6 records carry the rest, so
a file may exceed MAX_PAYLOAD). Checking and decoding the embedded file is
igpt_codec.pipelines.classical's. Layout: format/SPEC.md, "Kinds 5 and 6".
(Kept out of records.py, which is at its line budget; records.py owns the kind numbers.)
"""

from __future__ import annotations

from dataclasses import dataclass

from igpt_codec.format.records import (
    CODING_SHIFT,
    FINGERPRINT_LEN,
    KIND_CLASSICAL,
    KIND_CLASSICAL_PART,
    MAX_DIMENSION,
    MAX_MODE_LEN,
    MAX_PAYLOAD,
    RECORD_ANCILLARY,
    _is_int,
    _mode_bytes,
    _parse_mode,
    _require,
    check_name,
)
from igpt_codec.format.varint import decode_varint, encode_varint

CODEC_PNG = 1
"""The file is a PNG (colour type 2 at 8 bits, or colour type 3), nothing but IHDR,
PLTE, IDAT and IEND."""
CODEC_WEBP_LOSSLESS = 2
"""The file is a simple-format lossless WebP (RIFF, WEBP, one VP8L chunk), no alpha."""
CODEC_NAMES = {CODEC_PNG: "PNG", CODEC_WEBP_LOSSLESS: "WebP lossless"}
KNOWN_CODECS = frozenset(CODEC_NAMES)
MAX_CLASSICAL_FILE = (1 << 32) - 1
"""Largest embedded file: a u32 as a varint (5 bytes at most)."""
PART_SIZE = MAX_PAYLOAD
"""Every part but the last holds exactly this many bytes, so each file has one cut."""


@dataclass(frozen=True)
class ClassicalImageHeader:
    """What a kind-5 record says: the image's size and mode, which codec made the file,
    and the file's length (which fixes how many kind-6 parts follow)."""

    fingerprint: bytes
    width: int
    height: int
    mode: str
    codec: int
    file_length: int
    coding: int = 0
    kind: int = KIND_CLASSICAL
    flags: int = 0

    def __post_init__(self) -> None:
        _require(self.kind == KIND_CLASSICAL, f"record kind {self.kind!r} is not kind 5")
        _require(self.coding == 0, f"a classical image has coding 0, not {self.coding!r}")
        _require(self.flags == 0, f"unknown record flags {self.flags!r}")
        _require(
            isinstance(self.fingerprint, bytes) and len(self.fingerprint) == FINGERPRINT_LEN,
            f"fingerprint must be {FINGERPRINT_LEN} bytes, got {self.fingerprint!r}",
        )
        _require(self.codec in KNOWN_CODECS, f"unknown classical codec id {self.codec!r}")
        for name, top in (
            ("width", MAX_DIMENSION),
            ("height", MAX_DIMENSION),
            ("file_length", MAX_CLASSICAL_FILE),
        ):
            value = getattr(self, name)
            _require(
                _is_int(value) and 1 <= value <= top, f"{name} must be 1..{top}, got {value!r}"
            )
        _require(
            isinstance(self.mode, str)
            and 1 <= len(self.mode) <= MAX_MODE_LEN
            and all("!" <= ch <= "~" for ch in self.mode),
            f"mode must be 1..{MAX_MODE_LEN} printable ASCII characters, got {self.mode!r}",
        )

    @property
    def head_bits(self) -> int:
        return self.kind | self.coding << CODING_SHIFT

    @property
    def token_count(self) -> int:
        """Charged against DecodeLimits like a model-coded image of this size."""
        return self.width * self.height

    @property
    def part_count(self) -> int:
        """Records the file occupies: this one and part_count - 1 kind-6 records."""
        return -(-self.file_length // PART_SIZE)

    @property
    def codec_name(self) -> str:
        return CODEC_NAMES[self.codec]

    def to_bytes(self) -> bytes:
        """codec and mode code, [mode], width, height, file length."""
        parts = _mode_bytes(self.mode, self.codec)
        parts += [encode_varint(v) for v in (self.width, self.height, self.file_length)]
        return b"".join(parts)

    @classmethod
    def from_bytes(
        cls, head: int, fingerprint: bytes, body: bytes, pos: int = 0
    ) -> tuple[ClassicalImageHeader, int]:
        """Parse a kind-5 header at body[pos:]; returns it and where it ends."""
        coding = (head & 0x30) >> CODING_SHIFT
        _require(coding == 0, f"a classical image has coding 0, not {coding}")
        _require(not head & RECORD_ANCILLARY, "a classical image record cannot be ancillary")
        low_bits, mode, pos = _parse_mode(body, pos)
        _require(not low_bits & 0x30, "a classical image header sets reserved bits 4-5")
        _require(low_bits in KNOWN_CODECS, f"unknown classical codec id {low_bits}")
        width, pos = decode_varint(body, pos, MAX_DIMENSION, "width")
        height, pos = decode_varint(body, pos, MAX_DIMENSION, "height")
        length, pos = decode_varint(body, pos, MAX_CLASSICAL_FILE, "file length")
        header = cls(fingerprint, width, height, mode, low_bits, length)
        return header, pos


@dataclass(frozen=True)
class ClassicalImageRecord:
    """A full-resolution palette image stored as a classical image file (kinds 5 + 6)."""

    header: ClassicalImageHeader
    data: bytes
    """The whole embedded file (every part joined)."""
    token_check: int
    name: str | None = None

    def __post_init__(self) -> None:
        if self.name is not None:
            check_name(self.name)
        _require(isinstance(self.header, ClassicalImageHeader), "header must be a header")
        _require(isinstance(self.data, bytes), "the embedded file must be bytes")
        _require(
            len(self.data) == self.header.file_length,
            f"the embedded file has {len(self.data)} bytes; its header says "
            f"{self.header.file_length}",
        )
        _require(
            _is_int(self.token_check) and 0 <= self.token_check <= 0xFFFF,
            f"token check must be a u16, got {self.token_check!r}",
        )

    def parts(self) -> list[bytes]:
        """The file cut for its records: PART_SIZE bytes each, the last 1..PART_SIZE."""
        return [self.data[at : at + PART_SIZE] for at in range(0, len(self.data), PART_SIZE)]


PART_HEAD = KIND_CLASSICAL_PART
"""Head bits of a kind-6 record (coding 0, not ancillary)."""


@dataclass(frozen=True)
class ClassicalStart:
    """A kind-5 record as read: its header, token check and the file's first part."""

    header: ClassicalImageHeader
    token_check: int
    first: bytes

    def __post_init__(self) -> None:
        expected = min(self.header.file_length, PART_SIZE)
        _require(
            len(self.first) == expected,
            f"a classical image record holds {len(self.first)} bytes of its file; "
            f"it must hold {expected}",
        )


@dataclass(frozen=True)
class ClassicalPart:
    """A kind-6 record as read: the next bytes of the file."""

    data: bytes


def parse_start(head: int, fingerprint: bytes, body: bytes) -> ClassicalStart:
    """A kind-5 frame body: header, u16 token check, the file's first part."""
    header, pos = ClassicalImageHeader.from_bytes(head, fingerprint, body)
    _require(len(body) >= pos + 2, "a classical image record ends inside its token check")
    check = int.from_bytes(body[pos : pos + 2], "little")
    return ClassicalStart(header, check, body[pos + 2 :])


def parse_part(head: int, body: bytes) -> ClassicalPart:
    _require(head & 0x7F == PART_HEAD, f"a classical image part has head bits {head:#04x}")
    return ClassicalPart(body)


def join_parts(start: ClassicalStart, parts: list[bytes]) -> ClassicalImageRecord:
    """The record once all its parts are read: each but the last PART_SIZE bytes."""
    length = start.header.file_length
    done = len(start.first)
    for part in parts:
        expected = min(PART_SIZE, length - done)
        _require(
            len(part) == expected,
            f"a classical image part holds {len(part)} bytes; it must hold {expected}",
        )
        done += len(part)
    data = b"".join([start.first, *parts])
    return ClassicalImageRecord(start.header, data, start.token_check)


def frame_bodies(record: ClassicalImageRecord) -> list[tuple[int, bytes]]:
    """(head bits, body) of each record the image occupies, for the stream writer."""
    parts = record.parts()
    head = record.header
    first = head.to_bytes() + record.token_check.to_bytes(2, "little") + parts[0]
    return [(head.head_bits, first)] + [(PART_HEAD, part) for part in parts[1:]]
