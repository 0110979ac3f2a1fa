"""What a record says: its header fields, their limits, and their byte layout (version 2).

Validation lives in the dataclasses, so an invalid header can neither be read
from a stream nor written to one; the reader and the writer share one rule set.
The layout is documented byte by byte in format/SPEC.md.

Just over 400 lines: every record kind's fields, limits and byte layout side by side, so
the layout can be read against SPEC.md in one place.
"""

from __future__ import annotations

from dataclasses import dataclass

from igpt_codec.format.errors import InvalidFieldError, LengthOutOfRangeError, PayloadError
from igpt_codec.format.tiling import MAX_CONTEXT_ROWS, Tiling
from igpt_codec.format.varint import decode_varint, encode_varint

KIND_THUMBNAIL = 1
"""A whole image, resized to side x side and coded as side^2 palette tokens."""
KIND_NAME = 2
"""Ancillary: the file name of the image record that follows (UTF-8, no directories)."""
KIND_FULL_IMAGE = 3
"""A full-resolution image's header: size, mode and window layout; its segments follow."""
KIND_SEGMENT = 4
"""One segment of the full-resolution image before it: token check and payload."""
KIND_CLASSICAL = 5
"""A full-resolution palette image as a classical image file (PNG, WebP lossless), for
images the model codes worse (igpt_codec.format.classical); its kind-6 parts follow."""
KIND_CLASSICAL_PART = 6
"""A further part of the classical image file of the kind-5 record before it."""
KNOWN_KINDS = frozenset(
    {KIND_THUMBNAIL, KIND_NAME, KIND_FULL_IMAGE, KIND_SEGMENT, KIND_CLASSICAL, KIND_CLASSICAL_PART}
)
MAX_NAME_LEN = 255
MAX_KIND = 15

RECORD_FINAL = 0x80
"""Head-byte flag, set by the writer alone: the last record of the stream."""
RECORD_ANCILLARY = 0x40
"""Head-byte flag: a reader that does not know the record's kind may skip it."""
KNOWN_RECORD_FLAGS = RECORD_ANCILLARY
"""The flags a RecordHeader may carry."""
CODING_SHIFT = 4
CODING_MASK = 0x30
KIND_MASK = 0x0F

CODING_EXACT = 0
"""Tables from an exact-arithmetic graph: the same bits on every machine."""
CODING_FLOAT32 = 1
"""Tables from float32 probabilities, f = max(1, floor(p * 2^20)): machine-bound."""
CODING_ADAPTIVE = 2
"""Full-resolution images only: exact tables refined by the image's own context counts
(codec/core/adaptive.py; SPEC.md, "Coding 2"): the same bits on every machine."""
CODING_MATCH = 3
"""Full-resolution images only: coding 2's tables refined again by six longer-reach levels
(codec/core/match.py; SPEC.md, "Coding 3"): for text, line art and other synthetic images.
It takes the last value of the head byte's two coding bits: a further coding needs a bit
of the kind-3 features byte."""
KNOWN_CODINGS = frozenset({CODING_EXACT, CODING_FLOAT32, CODING_ADAPTIVE, CODING_MATCH})
THUMBNAIL_CODINGS = frozenset({CODING_EXACT, CODING_FLOAT32})

FINGERPRINT_LEN = 8
MAX_SIDE = 64
"""Thumbnail side limit (6 bits); ImageGPT's 1024 positions allow 32."""
MAX_TOKENS = MAX_SIDE * MAX_SIDE
MAX_MODE_LEN = 16
MAX_DIMENSION = 0xFFFF
MAX_PAYLOAD = 1 << 20
"""Far above what MAX_TOKENS tokens can cost (4096 tokens at most ~23 bits each)."""
TOKEN_CHECK_LEN = 2

# Mode codes in the top two bits of a thumbnail's first header byte; 3 = the mode is spelled out.
MODE_CODES = {"RGB": 0, "L": 1, "RGBA": 2}
MODE_SPELLED = 3
_MODES_BY_CODE = {code: mode for mode, code in MODE_CODES.items()}


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise InvalidFieldError(message)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class RecordHeader:
    """Everything the decoder needs besides the payload to rebuild one image.

    `fingerprint` is the stream's (one model per stream; the file header holds it).
    `coding` says which kind of table coded the record (CODING_EXACT, CODING_FLOAT32).
    `token_count` is always side^2, so a stream does not store it.
    """

    fingerprint: bytes
    width: int
    height: int
    mode: str
    side: int
    token_count: int
    coding: int = CODING_EXACT
    kind: int = KIND_THUMBNAIL
    flags: int = 0

    def __post_init__(self) -> None:
        _require(
            self.kind == KIND_THUMBNAIL, f"record kind {self.kind!r} is not one this writer knows"
        )
        _require(
            _is_int(self.flags) and not self.flags & ~KNOWN_RECORD_FLAGS,
            f"unknown record flags {self.flags!r}",
        )
        _require(self.coding in KNOWN_CODINGS, f"unknown coding {self.coding!r}")
        _require(
            self.coding in THUMBNAIL_CODINGS,
            f"coding {self.coding} is for full-resolution images, not thumbnails",
        )
        _require(
            isinstance(self.fingerprint, bytes) and len(self.fingerprint) == FINGERPRINT_LEN,
            f"fingerprint must be {FINGERPRINT_LEN} bytes, got {self.fingerprint!r}",
        )
        for name in ("width", "height"):
            value = getattr(self, name)
            _require(
                _is_int(value) and 1 <= value <= MAX_DIMENSION,
                f"{name} must be 1..{MAX_DIMENSION}, got {value!r}",
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

    @property
    def head_bits(self) -> int:
        """Kind, coding and ANCILLARY in the record's head byte (FINAL is the writer's)."""
        return self.kind | self.coding << CODING_SHIFT | self.flags

    def to_bytes(self) -> bytes:
        """The kind-specific header body: side and mode code, [mode], width, height."""
        parts = _mode_bytes(self.mode, self.side - 1)
        parts += [encode_varint(self.width), encode_varint(self.height)]
        return b"".join(parts)

    @classmethod
    def from_bytes(
        cls, head: int, fingerprint: bytes, body: bytes, pos: int = 0
    ) -> tuple[RecordHeader, int]:
        """Parse a header body at body[pos:]; returns the header and where it ends."""
        kind = head & KIND_MASK
        _require(kind == KIND_THUMBNAIL, f"record kind {kind} has no header parser")
        coding = (head & CODING_MASK) >> CODING_SHIFT
        _require(coding in KNOWN_CODINGS, f"record coding {coding} is not one this reader knows")
        low, mode, pos = _parse_mode(body, pos)
        side = low + 1
        width, pos = decode_varint(body, pos, MAX_DIMENSION, "width")
        height, pos = decode_varint(body, pos, MAX_DIMENSION, "height")
        _require(width >= 1 and height >= 1, f"image size {width}x{height} has a zero side")
        header = cls(
            fingerprint=fingerprint,
            width=width,
            height=height,
            mode=mode,
            side=side,
            token_count=side * side,
            coding=coding,
            kind=kind,
            flags=head & RECORD_ANCILLARY,
        )
        return header, pos


def check_name(name: str) -> bytes:
    """A stored name is a base name: 1..255 UTF-8 bytes, no separator, NUL or dot name."""
    _require(isinstance(name, str), f"a name must be a string, got {type(name).__name__}")
    try:
        raw = name.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidFieldError(f"name {name!r} is not valid UTF-8 text") from exc
    _require(1 <= len(raw) <= MAX_NAME_LEN, f"a name takes 1..{MAX_NAME_LEN} bytes, not {len(raw)}")
    _require(
        not any(ch in name for ch in "/\\\0") and name not in (".", ".."),
        f"name {name!r} is not a plain file name (no directories are stored)",
    )
    return raw


def parse_name(body: bytes) -> str:
    try:
        name = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidFieldError("a name record is not UTF-8") from exc
    check_name(name)
    return name


def check_payload(payload: bytes) -> None:
    """A payload ends in a nonzero byte or is empty (the coder's minimal flush)."""
    if payload and payload[-1] == 0:
        raise PayloadError("payload ends in a zero byte: not the coder's canonical output")


def check_coded(payload: bytes, token_check: int) -> None:
    """What every coded record carries: a canonical payload within MAX_PAYLOAD, and a u16
    token check."""
    _require(isinstance(payload, bytes), "payload must be bytes")
    if len(payload) > MAX_PAYLOAD:
        raise LengthOutOfRangeError(
            f"payload of {len(payload)} bytes exceeds the limit {MAX_PAYLOAD}"
        )
    check_payload(payload)
    _require(
        _is_int(token_check) and 0 <= token_check <= 0xFFFF,
        f"token check must be a u16, got {token_check!r}",
    )


@dataclass(frozen=True)
class Record:
    """One coded image: header, range-coder payload and the 16-bit check of its tokens."""

    header: RecordHeader
    payload: bytes
    token_check: int
    name: str | None = None
    """The original file name, when the writer stored it (a name record precedes it)."""

    def __post_init__(self) -> None:
        if self.name is not None:
            check_name(self.name)
        _require(isinstance(self.header, RecordHeader), "header must be a RecordHeader")
        check_coded(self.payload, self.token_check)


MAX_GRID = 255
MAX_SEGMENT_WINDOWS = 255
CHAIN_SEGMENTS = 0x20
"""Bit 5 of a kind-3 header's first byte: one segment record per chain. Context rows
(0..24) need only bits 0-4, so readers before the bit refuse such a header (context
rows out of range) instead of misreading it."""
BAND_CHECKS = 0x01
"""Bit 0 of a kind-3 header's features byte (after segment windows; the byte is present
only when some bit is set): each chain segment carries a check of every band but its last,
so a damaged or forged chain fails after one band's decoding, not at the chain's end.
Readers before the byte refuse such a header (its length) instead of misreading the
segments."""
LINEAR_LEVELS = 0x02
"""Bit 1 of a kind-3 header's features byte (codings 2 and 3 only): coding 2's three levels
make the table as one exact linear combination (SPEC.md, "Linear levels";
codec/core/linear.py); writers set it since 2026-12-06. Readers before the bit refuse the
header (a reserved feature bit)."""
LINEAR_CODINGS = frozenset({CODING_ADAPTIVE, CODING_MATCH})
"""The codings whose levels LINEAR_LEVELS changes."""
KNOWN_FEATURES = BAND_CHECKS | LINEAR_LEVELS
BAND_CHECK_LEN = 1
"""Bytes of one band check: the low 8 bits of the segment's running check CRC."""


def _mode_bytes(mode: str, low_bits: int) -> list[bytes]:
    """The first header byte (mode code in bits 6-7) and, for other modes, the spelled mode."""
    code = MODE_CODES.get(mode, MODE_SPELLED)
    parts = [bytes([low_bits | code << 6])]
    if code == MODE_SPELLED:
        raw = mode.encode("ascii")
        parts.append(bytes([len(raw)]) + raw)
    return parts


def _parse_mode(body: bytes, pos: int) -> tuple[int, str, int]:
    """(low six bits of the first byte, mode, position after the mode) at body[pos:]."""
    _require(pos < len(body), "record ends inside its header")
    first = body[pos]
    pos += 1
    code = first >> 6
    if code != MODE_SPELLED:
        return first & 0x3F, _MODES_BY_CODE[code], pos
    _require(pos < len(body), "record ends inside its mode length")
    size = body[pos]
    mode_bytes = body[pos + 1 : pos + 1 + size]
    _require(
        1 <= size <= MAX_MODE_LEN and len(mode_bytes) == size,
        f"mode of {size} bytes does not fit the record",
    )
    _require(
        all(0x21 <= b <= 0x7E for b in mode_bytes), f"mode {mode_bytes!r} is not printable ASCII"
    )
    mode = mode_bytes.decode("ascii")
    _require(mode not in MODE_CODES, f"mode {mode} must use its short code")
    return first & 0x3F, mode, pos + 1 + size


@dataclass(frozen=True)
class FullImageHeader:
    """A full-resolution palette image: its size and mode, and how it is cut into windows.

    width x height are the image's own (every pixel is a token); `grid` is the model's
    window side (its positions are grid x grid), `context_rows` the rows above each band
    fed but not coded, `segment_windows` the windows per segment record (igpt_codec.format.tiling).
    """

    fingerprint: bytes
    width: int
    height: int
    mode: str
    grid: int
    context_rows: int
    segment_windows: int
    coding: int = CODING_EXACT
    kind: int = KIND_FULL_IMAGE
    flags: int = 0
    chain_segments: bool = False
    """One segment record per chain, spanning every band (igpt_codec.format.tiling); writers set it
    since 2026-12, and files without it (one record per band and group) still read."""
    band_checks: bool = False
    """With chain_segments: every segment carries a check of each band but its last (the
    BAND_CHECKS feature); writers set it since 2026-12-05 on images of several bands."""
    linear_levels: bool = False
    """Codings 2 and 3 only: coding 2's levels as one linear combination (the LINEAR_LEVELS
    feature); writers set it since 2026-12-06, and files without it still read."""

    def __post_init__(self) -> None:
        _require(self.kind == KIND_FULL_IMAGE, f"record kind {self.kind!r} is not a full image")
        for name in ("chain_segments", "band_checks", "linear_levels"):
            value = getattr(self, name)
            _require(isinstance(value, bool), f"{name} must be a bool, got {value!r}")
        _require(
            self.chain_segments or not self.band_checks,
            "band checks need the CHAIN layout (a segment of one band has its token check)",
        )
        _require(self.flags == 0, f"unknown record flags {self.flags!r}")
        _require(self.coding in KNOWN_CODINGS, f"unknown coding {self.coding!r}")
        _require(
            self.coding in LINEAR_CODINGS or not self.linear_levels,
            f"linear levels need coding 2 or 3, not coding {self.coding}",
        )
        _require(
            isinstance(self.fingerprint, bytes) and len(self.fingerprint) == FINGERPRINT_LEN,
            f"fingerprint must be {FINGERPRINT_LEN} bytes, got {self.fingerprint!r}",
        )
        for name, top in (
            ("width", MAX_DIMENSION),
            ("height", MAX_DIMENSION),
            ("grid", MAX_GRID),
            ("segment_windows", MAX_SEGMENT_WINDOWS),
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
        _require(
            _is_int(self.context_rows)
            and 0 <= self.context_rows <= MAX_CONTEXT_ROWS
            and self.context_rows < self.grid,
            f"context rows must be 0..{MAX_CONTEXT_ROWS} and below the grid {self.grid}, "
            f"got {self.context_rows!r}",
        )

    @property
    def head_bits(self) -> int:
        return self.kind | self.coding << CODING_SHIFT

    @property
    def segment_head_bits(self) -> int:
        """The head bits of this image's segment records (kind 4, same coding)."""
        return KIND_SEGMENT | self.coding << CODING_SHIFT

    @property
    def tiling(self) -> Tiling:
        return Tiling(
            self.width,
            self.height,
            self.grid,
            self.context_rows,
            self.segment_windows,
            self.chain_segments,
        )

    @property
    def token_count(self) -> int:
        return self.width * self.height

    @property
    def band_check_count(self) -> int:
        """Band checks in each segment record: one per band but the last (whose check is
        the segment's token check), or none without BAND_CHECKS."""
        return len(self.tiling.bands()) - 1 if self.band_checks else 0

    def to_bytes(self) -> bytes:
        """context rows, layout bit and mode code, [mode], width, height, grid, segment
        windows, [features]."""
        parts = _mode_bytes(self.mode, self.context_rows | self.chain_segments * CHAIN_SEGMENTS)
        parts += [encode_varint(self.width), encode_varint(self.height)]
        parts.append(bytes([self.grid, self.segment_windows]))
        features = self.band_checks * BAND_CHECKS | self.linear_levels * LINEAR_LEVELS
        if features:
            parts.append(bytes([features]))
        return b"".join(parts)

    @classmethod
    def from_bytes(cls, head: int, fingerprint: bytes, body: bytes) -> FullImageHeader:
        """Parse a whole kind-3 body (nothing may follow the header)."""
        coding = (head & CODING_MASK) >> CODING_SHIFT
        _require(coding in KNOWN_CODINGS, f"record coding {coding} is not one this reader knows")
        _require(not head & RECORD_ANCILLARY, "a full-image record cannot be ancillary")
        low_bits, mode, pos = _parse_mode(body, 0)
        width, pos = decode_varint(body, pos, MAX_DIMENSION, "width")
        height, pos = decode_varint(body, pos, MAX_DIMENSION, "height")
        _require(len(body) in (pos + 2, pos + 3), "a full-image header has the wrong length")
        features = body[pos + 2] if len(body) == pos + 3 else 0
        _require(
            len(body) == pos + 2 or features != 0,
            "a full-image header's features byte is 0 (it is present only when a bit is set)",
        )
        _require(
            not features & ~KNOWN_FEATURES,
            f"a full-image header asks for features {features:#04x} this reader does not know",
        )
        return cls(
            fingerprint=fingerprint,
            width=width,
            height=height,
            mode=mode,
            grid=body[pos],
            context_rows=low_bits & ~CHAIN_SEGMENTS,
            segment_windows=body[pos + 1],
            coding=coding,
            chain_segments=bool(low_bits & CHAIN_SEGMENTS),
            band_checks=bool(features & BAND_CHECKS),
            linear_levels=bool(features & LINEAR_LEVELS),
        )


@dataclass(frozen=True)
class Segment:
    """One segment record of a full-resolution image: its tokens' check and payload, and
    with BAND_CHECKS the check after each band but the last (u8 each)."""

    payload: bytes
    token_check: int
    band_checks: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        check_coded(self.payload, self.token_check)
        _require(
            isinstance(self.band_checks, tuple)
            and all(_is_int(c) and 0 <= c <= 0xFF for c in self.band_checks),
            f"band checks must be a tuple of u8, got {self.band_checks!r}",
        )

    def to_bytes(self) -> bytes:
        """The kind-4 body: u16 token check, the band checks, the payload."""
        return self.token_check.to_bytes(2, "little") + bytes(self.band_checks) + self.payload

    @classmethod
    def from_bytes(cls, body: bytes, band_checks: int) -> Segment:
        """Parse a kind-4 body holding `band_checks` band checks (its image header says
        how many)."""
        head = TOKEN_CHECK_LEN + band_checks * BAND_CHECK_LEN
        _require(len(body) >= TOKEN_CHECK_LEN, "a segment record ends inside its token check")
        _require(
            len(body) >= head,
            f"a segment record ends inside its {band_checks} band checks",
        )
        payload = body[head:]
        check_payload(payload)
        check = int.from_bytes(body[:TOKEN_CHECK_LEN], "little")
        return cls(payload, check, tuple(body[TOKEN_CHECK_LEN:head]))


@dataclass(frozen=True)
class FullImageRecord:
    """A coded full-resolution image: its header and every segment, in coding order."""

    header: FullImageHeader
    segments: tuple[Segment, ...]
    name: str | None = None

    def __post_init__(self) -> None:
        if self.name is not None:
            check_name(self.name)
        _require(isinstance(self.header, FullImageHeader), "header must be a FullImageHeader")
        _require(
            isinstance(self.segments, tuple) and all(isinstance(s, Segment) for s in self.segments),
            "segments must be a tuple of Segment",
        )
        expected = self.header.tiling.record_count
        _require(
            len(self.segments) == expected,
            f"a {self.header.width}x{self.header.height} image has {expected} segments, "
            f"not {len(self.segments)}",
        )
        checks = self.header.band_check_count
        _require(
            all(len(s.band_checks) == checks for s in self.segments),
            f"each segment of this image holds {checks} band checks",
        )
