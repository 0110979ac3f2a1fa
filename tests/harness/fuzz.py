"""python -m tests.harness.fuzz: the mutation campaign of issue 12, rerun through the API.

Every case is one damaged or forged stream, made deterministically from (seed, case
index) out of a small corpus of real streams (coded at start-up with the default
model, sides 1 to 8), and sorted into one outcome class:

- clean_error: a `igpt_codec.CodecError` subclass with a one-line message;
- identical: decodes without error to the base stream's own output;
- forged_valid: decodes without error to another output;
- other_exception: anything else raised (or a CodecError with an empty or multi-line
  message, or the worker process dying): a bug;
- hang: the case ran past its timeout;
- memory: the case allocated more than the memory bound.

Three families of cases: `random` (bit flips, byte changes, truncations, insertions,
deletions, splices, garbage; the CRCs are left as they are), `field` (one field of the
layout forged, the stored CRCs left stale) and `recrc` (one field or record forged and
every chained CRC recomputed, so the container accepts it and the decoder's own checks
are exercised: fingerprint and coding, side, canonical payload, token check, limits).

Two layers. Every case is first read by the container alone (`format.unpack_stream`,
or `format.iter_records` on a pipe that returns short reads); only a stream the
container accepts goes on to a full decode through the API (`igpt_codec.decompress`,
also on a pipe, or `igpt_codec.iter_decompress`), which costs model time. A stream that
asks for more than TOKEN_BUDGET tokens, and the cases that test the limits, go to
`igpt_codec.pipelines.stream.decode` with `DecodeLimits` instead: the same limits the API
takes (`igpt_codec.decompress(..., limits=...)`), applied to the records the container
layer already read, so the case does not pay for a second read.

The re-framing helpers below are written from the documented layout, version 2 (file
header: magic, version byte, 8-byte fingerprint; each record: head byte, a varint
length unless FINAL, the body, a CRC-32 chained over the file header and every frame
so far); they deliberately import nothing from `format` but what the API exports.

Cases run in a worker process (spawned, one at a time) with a watchdog: a case past
its timeout is a hang, a worker past the hard RSS cap is killed as memory. Inside the
worker each case's Python allocations are traced (tracemalloc peak) and its RSS high
water mark is watched. See docs/fuzzing.md.

One module of about 1,500 lines, over the project's 400, because a campaign is one
reproducible unit: a case is a function of (seed, index, corpus), so the re-framing, the
generators and their weights, the worker and the report change together, and splitting
them would spread one case's definition over several files.

    python -m tests.harness.fuzz --cases 2000 --seed 1
    python -m tests.harness.fuzz --cases 100000 --seed 12 --json /tmp/fuzz.json
    python -m tests.harness.fuzz --seed 1 --case 1234        # one case, in process, traceback
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import json
import multiprocessing
import os
import random
import resource
import signal
import struct
import sys
import tempfile
import time
import traceback
import tracemalloc
import zlib
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

import igpt_codec
import igpt_codec.format as stream_format

OUTCOMES = ("clean_error", "identical", "forged_valid", "other_exception", "hang", "memory")
FAILURES = ("other_exception", "hang", "memory")
FAMILIES = ("random", "field", "recrc")
FULL_BASES = frozenset({"full", "fullmix"})
"""Corpus streams holding full-resolution images (record kinds 3 and 4)."""
DEFAULT_WEIGHTS = {"random": 0.5, "field": 0.2, "recrc": 0.3}

CASE_TIMEOUT = 30.0
"""Seconds one case may take (the largest honest case here decodes 64 tokens)."""
MEMORY_BOUND = 64 << 20
"""Bytes one case may allocate (tracemalloc peak, or growth of the RSS high water mark)."""
HARD_RSS_CAP = 1 << 30
"""RSS growth at which the watchdog kills the worker at once (protects the machine)."""
TOKEN_BUDGET = 256
"""A stream asking for more tokens goes to the pipeline with DecodeLimits(max_tokens=this)."""
IMAGE_BUDGET = 64
WORK_BUDGET = 8192
"""Work units (igpt_codec.pipelines.limits.full_image_work) a forged full-resolution layout
may cost a case: about a second of one core at most (docs/hardening.md)."""
CORPUS_SEED = 20261202

# --- the documented layout, version 2 ----------------------------------------------------

MAGIC = b"\x89IG"
VERSION = 2
FINGERPRINT_LEN = 8
FILE_HEADER_LEN = len(MAGIC) + 1 + FINGERPRINT_LEN
V1_MAGIC = b"\x89IGP\r\n\x1a\n"
FINAL = 0x80
ANCILLARY = 0x40
CODING_SHIFT = 4
KIND_MASK = 0x0F
CHAIN_SEGMENTS = 0x20
"""Bit 5 of a kind-3 header's first byte: one segment record per chain."""
BAND_CHECKS = 0x01
"""Bit 0 of a kind-3 header's features byte (after its segment windows): every segment
holds a u8 check per band but its last, after its token check."""
LINEAR_LEVELS = 0x02
"""Bit 1 of the features byte: coding 2's levels as one linear combination (codings 2, 3)."""
KIND_THUMBNAIL = 1
KIND_NAME = 2
MODE_SPELLED = 3
SHORT_MODES = ("RGB", "L", "RGBA")
MAX_FRAME = (1 << 20) + 64
_U32 = struct.Struct("<I")


def encode_varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def read_varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos


def non_minimal_varint(value: int) -> bytes:
    """`value` with one redundant continuation byte: same value, not the one encoding."""
    raw = bytearray(encode_varint(value))
    raw[-1] |= 0x80
    return bytes(raw) + b"\x00"


@dataclass
class Frame:
    """One record as laid out: head byte (FINAL is set by build_stream on the last frame
    unless given here) and body; `length` overrides the varint length field's bytes."""

    head: int
    body: bytes
    length: bytes | None = None


@dataclass
class Thumb:
    """A thumbnail body as raw segments, so any one can be forged on its own."""

    first: int  # (side - 1) | mode code << 6
    mode: bytes  # b"" or the length byte and the ASCII name (mode code 3)
    width: bytes
    height: bytes
    check: bytes
    payload: bytes

    @property
    def side(self) -> int:
        return (self.first & 0x3F) + 1

    @property
    def code(self) -> int:
        return self.first >> 6

    def to_bytes(self) -> bytes:
        return (
            bytes([self.first]) + self.mode + self.width + self.height + self.check + (self.payload)
        )

    @classmethod
    def parse(cls, body: bytes) -> Thumb:
        first, pos = body[0], 1
        mode = b""
        if first >> 6 == MODE_SPELLED:
            mode = body[pos : pos + 1 + body[pos]]
            pos += len(mode)
        _, end = read_varint(body, pos)
        width, pos = body[pos:end], end
        _, end = read_varint(body, pos)
        height, pos = body[pos:end], end
        return cls(first, mode, width, height, body[pos : pos + 2], body[pos + 2 :])


def parse_stream(data: bytes) -> tuple[bytes, list[Frame], list[bytes]]:
    """File header, frames and stored CRCs of a well-formed stream (the corpus's)."""
    header, pos = data[:FILE_HEADER_LEN], FILE_HEADER_LEN
    frames: list[Frame] = []
    crcs: list[bytes] = []
    while True:
        head = data[pos]
        pos += 1
        if head & FINAL:
            frames.append(Frame(head & ~FINAL, data[pos:-4]))
            crcs.append(data[-4:])
            return header, frames, crcs
        length, pos = read_varint(data, pos)
        frames.append(Frame(head, data[pos : pos + length]))
        crcs.append(data[pos + length : pos + length + 4])
        pos += length + 4


def build_stream(
    header: bytes, frames: list[Frame], stale: list[bytes] | None = None, *, final: bool = True
) -> bytes:
    """Lay out frames after `header`: the last one FINAL (unless `final` is false) without
    a length, the others with theirs, each followed by the chained CRC-32 (recomputed, or
    `stale[i]` if given). A frame whose head has FINAL is laid out as final wherever it is."""
    chain = zlib.crc32(header)
    out = [header]
    last = len(frames) - 1
    for i, frame in enumerate(frames):
        is_final = bool(frame.head & FINAL) or (final and i == last)
        raw = bytes([frame.head | (FINAL if is_final else 0)])
        if not is_final:
            raw += frame.length if frame.length is not None else encode_varint(len(frame.body))
        raw += frame.body
        chain = zlib.crc32(raw, chain)
        crc = _U32.pack(chain)
        if stale is not None:
            crc = stale[i] if i < len(stale) else bytes(4)
        out += [raw, crc]
    return b"".join(out)


# --- the corpus ---------------------------------------------------------------------------

Output = tuple[tuple[bytes, int, tuple[int, int], str, str | None], ...]
"""What a decode returns, compared between cases: per image tokens, side, size, mode and
stored name."""


@dataclass(frozen=True)
class Base:
    name: str
    data: bytes
    output: Output

    @property
    def layout(self) -> tuple[bytes, list[Frame], list[bytes]]:
        return parse_stream(self.data)


def _corpus_streams(bundle: Any) -> dict[str, bytes]:
    from PIL import Image

    tmp = tempfile.mkdtemp(prefix="igpt-fuzz-corpus-")

    rng = np.random.default_rng(CORPUS_SEED)

    def pixels(*shape: int) -> np.ndarray:
        return rng.integers(0, 256, shape, dtype=np.uint8)

    def compress(images: Any, size: int) -> bytes:
        return igpt_codec.compress(images, model=bundle, size=size, threads=1)

    streams = {
        "rgb1": compress(pixels(12, 10, 3), 1),
        "l2": compress(pixels(7, 5), 2),
        "rgba3": compress(pixels(9, 11, 4), 3),
        "la4": compress(Image.fromarray(pixels(6, 6, 2), "LA"), 4),
        "rgb4x3": compress([pixels(16, 16, 3), pixels(20, 8, 3), pixels(5, 30, 3)], 4),
        "rgb8": compress(pixels(30, 40, 3), 8),
        "long2": compress(pixels(1, 20000, 3), 2),
    }
    named = [os.path.join(tmp, "photo ü.png"), os.path.join(tmp, "b.png")]
    for path, shape in zip(named, ((8, 8, 3), (5, 9, 3)), strict=True):
        Image.fromarray(pixels(*shape), "RGB").save(path)
    streams["named"] = igpt_codec.compress(named, model=bundle, size=2, threads=1, names=True)
    for path in named:
        os.remove(path)
    os.rmdir(tmp)
    header, _, _ = parse_stream(streams["rgb1"])
    mixed = [parse_stream(streams[name])[1][0] for name in ("rgb1", "l2", "rgba3", "la4")]
    streams["mixed"] = build_stream(header, mixed)
    full = igpt_codec.compress(
        [pixels(10, 34, 3), Image.fromarray(pixels(40, 6), "L")], model=bundle, full=True, threads=1
    )
    streams["full"] = full
    streams["fullmix"] = build_stream(
        header, parse_stream(streams["l2"])[1][:1] + parse_stream(full)[1]
    )
    skip = Frame(ANCILLARY | 7, b"a future record kind")
    streams["skip"] = build_stream(header, [skip, parse_stream(streams["rgb1"])[1][0]])
    return streams


# --- cases ----------------------------------------------------------------------------------


@dataclass
class Case:
    index: int
    family: str
    generator: str
    base: str
    data: bytes
    expect: frozenset[str]
    reader: str = "bytes"
    api: str = "decompress"
    limits: tuple[int, int] | None = None
    chunks: int = 0  # seed of the pipe's read sizes
    work: bool = False  # decoded under WORK_BUDGET (Forgery.work)


@dataclass
class Forgery:
    """What an edit made: frames (and header), what a recomputed-CRC stream may give."""

    header: bytes
    frames: list[Frame]
    expect: frozenset[str]
    limits: tuple[int, int] | None = None
    final: bool = True
    work: bool = False
    """Decode under DecodeLimits(max_work=WORK_BUDGET) and the default layout and pixel
    limits, not the TOKEN_BUDGET cap: a forged full-resolution layout."""


CLEAN = frozenset({"clean_error"})
CLEAN_OR_FORGED = frozenset({"clean_error", "forged_valid"})
FORGED = frozenset({"forged_valid"})
IDENTICAL = frozenset({"identical"})
ANY_VALID = frozenset({"clean_error", "forged_valid", "identical"})
CLEAN_OR_SAME = frozenset({"clean_error", "identical"})


def _other_byte(rng: random.Random, old: int) -> int:
    return (old + rng.randrange(1, 256)) & 0xFF


def _thumb_indices(frames: list[Frame]) -> list[int]:
    return [i for i, f in enumerate(frames) if f.head & KIND_MASK == KIND_THUMBNAIL]


# Random mutations of the whole byte string; the CRCs are left as they are.


def _m_bitflip(rng: random.Random, data: bytes, ctx: Context) -> bytes:
    out = bytearray(data)
    for _ in range(rng.choice((1, 1, 1, 2, 3, 4))):
        out[rng.randrange(len(out))] ^= 1 << rng.randrange(8)
    return bytes(out)


def _m_byteset(rng: random.Random, data: bytes, ctx: Context) -> bytes:
    out = bytearray(data)
    for _ in range(rng.choice((1, 1, 2, 3))):
        pos = rng.randrange(len(out))
        out[pos] = _other_byte(rng, out[pos])
    return bytes(out)


def _m_interesting(rng: random.Random, data: bytes, ctx: Context) -> bytes:
    out = bytearray(data)
    out[rng.randrange(len(out))] = rng.choice((0x00, 0x01, 0x3F, 0x40, 0x7F, 0x80, 0xC0, 0xFF))
    return bytes(out)


def _m_truncate(rng: random.Random, data: bytes, ctx: Context) -> bytes:
    return data[: rng.randrange(len(data))]


def _m_insert(rng: random.Random, data: bytes, ctx: Context) -> bytes:
    pos = rng.randrange(len(data) + 1)
    return data[:pos] + rng.randbytes(rng.randint(1, 8)) + data[pos:]


def _m_delete(rng: random.Random, data: bytes, ctx: Context) -> bytes:
    pos = rng.randrange(len(data))
    return data[:pos] + data[pos + rng.randint(1, 8) :]


def _m_append(rng: random.Random, data: bytes, ctx: Context) -> bytes:
    if rng.random() < 0.01:  # past the final record's frame limit
        return data + bytes(MAX_FRAME + rng.randrange(64))
    return data + rng.randbytes(rng.randint(1, 16))


def _m_splice(rng: random.Random, data: bytes, ctx: Context) -> bytes:
    other = rng.choice(ctx.bases).data
    return data[: rng.randrange(len(data) + 1)] + other[rng.randrange(len(other)) :]


def _m_duplicate(rng: random.Random, data: bytes, ctx: Context) -> bytes:
    start = rng.randrange(len(data))
    piece = data[start : start + rng.randint(1, 24)]
    pos = rng.randrange(len(data) + 1)
    return data[:pos] + piece + data[pos:]


def _m_fill(rng: random.Random, data: bytes, ctx: Context) -> bytes:
    start = rng.randrange(len(data))
    size = min(rng.randint(1, 16), len(data) - start)
    return data[:start] + bytes([rng.choice((0, 0xFF))]) * size + data[start + size :]


def _m_garbage(rng: random.Random, data: bytes, ctx: Context) -> bytes:
    prefix = rng.choice((b"", MAGIC, MAGIC + bytes([VERSION]), V1_MAGIC, data[:FILE_HEADER_LEN]))
    return prefix + rng.randbytes(rng.randint(0, 64))


def _m_havoc(rng: random.Random, data: bytes, ctx: Context) -> bytes:
    simple = (_m_bitflip, _m_byteset, _m_interesting, _m_insert, _m_delete, _m_duplicate)
    for _ in range(rng.randint(2, 6)):
        data = rng.choice(simple)(rng, data, ctx) or data
    return data


RANDOM_MUTATIONS: dict[str, Callable[[random.Random, bytes, Context], bytes]] = {
    "bitflip": _m_bitflip,
    "byteset": _m_byteset,
    "interesting": _m_interesting,
    "truncate": _m_truncate,
    "insert": _m_insert,
    "delete": _m_delete,
    "append": _m_append,
    "splice": _m_splice,
    "duplicate": _m_duplicate,
    "fill": _m_fill,
    "garbage": _m_garbage,
    "havoc": _m_havoc,
}


# Field and record edits on the parsed layout: used with stale CRCs (family "field") and
# with every CRC recomputed (family "recrc"); `expect` is what the recrc stream may give.


def _edit_thumb(
    rng: random.Random, header: bytes, frames: list[Frame], change: Callable[[Thumb], Any]
) -> tuple[list[Frame], Any]:
    i = rng.choice(_thumb_indices(frames))
    thumb = Thumb.parse(frames[i].body)
    result = change(thumb)
    frames = list(frames)
    frames[i] = replace(frames[i], body=thumb.to_bytes())
    return frames, result


def _e_fingerprint(rng: random.Random, header: bytes, frames: list[Frame], ctx: Context) -> Forgery:
    fingerprint = bytearray(header[-FINGERPRINT_LEN:])
    if rng.random() < 0.5:
        fingerprint[rng.randrange(FINGERPRINT_LEN)] ^= 1 << rng.randrange(8)
    else:
        fingerprint = bytearray(rng.randbytes(FINGERPRINT_LEN))
    return Forgery(header[:-FINGERPRINT_LEN] + bytes(fingerprint), frames, CLEAN)


def _e_version(rng: random.Random, header: bytes, frames: list[Frame], ctx: Context) -> Forgery:
    version = rng.choice((0, 1, 3, 0x7F, 0x80, 0xFF))
    return Forgery(MAGIC + bytes([version]) + header[len(MAGIC) + 1 :], frames, CLEAN)


def _e_magic(rng: random.Random, header: bytes, frames: list[Frame], ctx: Context) -> Forgery:
    out = bytearray(header)
    pos = rng.randrange(len(MAGIC))
    out[pos] = _other_byte(rng, out[pos])
    return Forgery(bytes(out), frames, CLEAN)


def _e_coding(rng: random.Random, header: bytes, frames: list[Frame], ctx: Context) -> Forgery:
    i = rng.choice(_thumb_indices(frames))
    frames = list(frames)
    coding = rng.choice((1, 2, 3))
    frames[i] = replace(frames[i], head=frames[i].head & ~0x30 | coding << CODING_SHIFT)
    return Forgery(header, frames, CLEAN)


def _e_kind(rng: random.Random, header: bytes, frames: list[Frame], ctx: Context) -> Forgery:
    """Kind 0, an unknown must-understand kind, or an unknown kind marked ANCILLARY
    (skipped by design: the stream decodes without that image). Kind 2 is the name
    record: a thumbnail body read as a name is refused, or names the next image."""
    i = rng.choice(_thumb_indices(frames))
    frames = list(frames)
    variant = rng.randrange(3)
    kind = 0 if variant == 0 else rng.randint(2, 15)
    flags = ANCILLARY if variant == 2 else frames[i].head & ANCILLARY
    frames[i] = replace(frames[i], head=frames[i].head & 0x30 | flags | kind)
    if kind == KIND_NAME or (variant == 2 and _named(frames)):  # a name for a skipped image
        return Forgery(header, frames, CLEAN_OR_FORGED)
    if kind in (3, 4, 5, 6):  # full-image and classical kinds are known and never
        return Forgery(header, frames, CLEAN)  # ANCILLARY: always refused
    return Forgery(header, frames, FORGED if variant == 2 else CLEAN)


def _e_ancillary(rng: random.Random, header: bytes, frames: list[Frame], ctx: Context) -> Forgery:
    """ANCILLARY on a thumbnail: its head bits are in the token check, so the check fails
    (or, one time in 65,536, passes: the same output, a known kind is read either way)."""
    i = rng.choice(_thumb_indices(frames))
    frames = list(frames)
    frames[i] = replace(frames[i], head=frames[i].head | ANCILLARY)
    return Forgery(header, frames, CLEAN_OR_SAME)


def _e_final(rng: random.Random, header: bytes, frames: list[Frame], ctx: Context) -> Forgery:
    """FINAL taken off the last record (the stream has no end), or set on an earlier one."""
    frames = list(frames)
    if len(frames) > 1 and rng.random() < 0.5:
        i = rng.randrange(len(frames) - 1)
        frames[i] = replace(frames[i], head=frames[i].head | FINAL)
        return Forgery(header, frames, CLEAN)
    return Forgery(header, frames, CLEAN, final=False)


def _e_length(rng: random.Random, header: bytes, frames: list[Frame], ctx: Context) -> Forgery:
    """A non-final record's length field: not minimal, off by some bytes, or huge."""
    frames = list(frames)
    i = rng.randrange(len(frames) - 1)
    size = len(frames[i].body)
    length = rng.choice(
        (
            non_minimal_varint(size),
            encode_varint(max(0, size + rng.choice((-3, -1, 1, 2, 100)))),
            encode_varint(0),
            encode_varint(MAX_FRAME + 1),
            encode_varint(rng.randrange(1 << 21)),
            b"\xff\xff\xff\xff",
            b"\x80\x80\x80\x80\x00",
        )
    )
    frames[i] = replace(frames[i], length=length)
    return Forgery(header, frames, CLEAN)


def _pick_side(rng: random.Random, old: int) -> int:
    while True:
        roll = rng.random()
        side = (
            rng.randint(1, 8)
            if roll < 0.6
            else rng.randint(9, 16)
            if roll < 0.7
            else rng.randint(17, 32)
            if roll < 0.8
            else rng.randint(33, 64)
        )
        if side != old:
            return side


def _e_side(rng: random.Random, header: bytes, frames: list[Frame], ctx: Context) -> Forgery:
    """Another side, sometimes with the payload emptied (issue 12 finding 7's record)."""
    empty = rng.random() < 0.25

    def change(thumb: Thumb) -> None:
        thumb.first = (_pick_side(rng, thumb.side) - 1) | thumb.code << 6
        if empty:
            thumb.payload = b""

    frames, _ = _edit_thumb(rng, header, frames, change)
    return Forgery(header, frames, CLEAN_OR_FORGED)


def _e_mode(rng: random.Random, header: bytes, frames: list[Frame], ctx: Context) -> Forgery:
    """Another short mode code, a spelled-out mode (valid or not), or a bad mode length."""
    variant = rng.randrange(4)
    expect = [CLEAN_OR_FORGED]  # the mode is in the token check: forged only by a collision

    def change(thumb: Thumb) -> None:
        if variant == 0:  # another short code
            codes = [c for c in range(3) if c != thumb.code]
            thumb.first = thumb.first & 0x3F | rng.choice(codes) << 6
            thumb.mode = b""
        elif variant == 1:  # a printable spelled-out name; a short mode's name is refused
            name = rng.choice(
                [m.encode() for m in SHORT_MODES]
                + [bytes(rng.randint(0x21, 0x7E) for _ in range(rng.randint(1, 16)))]
            )
            old = thumb.mode[1:] if thumb.code == MODE_SPELLED else b""
            if name == old:
                name = b"X" + name[:15]
            thumb.first = thumb.first & 0x3F | MODE_SPELLED << 6
            thumb.mode = bytes([len(name)]) + name
            expect[0] = CLEAN if name.decode() in SHORT_MODES else CLEAN_OR_FORGED
        elif variant == 2:  # a name with a byte outside printable ASCII
            name = bytearray(b"LA")
            name[rng.randrange(2)] = rng.choice((0x00, 0x20, 0x7F, 0x80, 0xFF))
            thumb.first = thumb.first & 0x3F | MODE_SPELLED << 6
            thumb.mode = bytes([len(name)]) + bytes(name)
            expect[0] = CLEAN
        else:  # a mode length of 0, over 16, or past the body
            thumb.first = thumb.first & 0x3F | MODE_SPELLED << 6
            size = rng.choice((0, 17, 64, 255))
            thumb.mode = bytes([size]) + b"M" * min(size, rng.choice((0, 1, size)))
            expect[0] = CLEAN

    frames, _ = _edit_thumb(rng, header, frames, change)
    return Forgery(header, frames, expect[0])


def _e_dimension(rng: random.Random, header: bytes, frames: list[Frame], ctx: Context) -> Forgery:
    """Width or height: another valid value (caught by the token check, which covers the
    record's claims, but for a 16-bit collision), zero, over 65535, not minimal, overlong."""
    name = rng.choice(("width", "height"))
    variant = rng.choice(("value", "value", "zero", "over", "nonminimal", "overlong"))
    expect = CLEAN_OR_FORGED if variant == "value" else CLEAN

    def change(thumb: Thumb) -> None:
        old, _ = read_varint(getattr(thumb, name), 0)
        if variant == "value":
            value = rng.choice((rng.randint(1, 127), rng.randint(1, 0xFFFF)))
            raw = encode_varint(value if value != old else value % 0xFFFF + 1)
        elif variant == "zero":
            raw = b"\x00"
        elif variant == "over":
            raw = encode_varint(rng.randint(0x10000, (1 << 21) - 1))
        elif variant == "nonminimal":
            raw = non_minimal_varint(old)
        else:
            raw = b"\x81\x80\x80\x80\x01"
        setattr(thumb, name, raw)

    frames, _ = _edit_thumb(rng, header, frames, change)
    return Forgery(header, frames, expect)


def _e_token_check(rng: random.Random, header: bytes, frames: list[Frame], ctx: Context) -> Forgery:
    def change(thumb: Thumb) -> None:
        old = int.from_bytes(thumb.check, "little")
        thumb.check = ((old + rng.randrange(1, 0x10000)) & 0xFFFF).to_bytes(2, "little")

    frames, _ = _edit_thumb(rng, header, frames, change)
    return Forgery(header, frames, CLEAN)


def _e_payload(rng: random.Random, header: bytes, frames: list[Frame], ctx: Context) -> Forgery:
    """Payload bits flipped, bytes changed, cut, extended, emptied or replaced: the
    decoder's canonical check and the 16-bit token check must catch all but a few."""
    variant = rng.choice(("flip", "flip", "byte", "cut", "extend", "zero", "empty", "random"))

    def change(thumb: Thumb) -> None:
        payload = bytearray(thumb.payload)
        if variant in ("flip", "byte") and payload:
            pos = rng.randrange(len(payload))
            if variant == "flip":
                payload[pos] ^= 1 << rng.randrange(8)
            else:
                payload[pos] = _other_byte(rng, payload[pos])
        elif variant == "cut" and payload:
            del payload[rng.randrange(len(payload)) :]
        elif variant == "zero":
            payload += b"\x00" * rng.randint(1, 3)
        elif variant == "empty" and payload:
            payload = bytearray()
        elif variant == "random":
            payload = bytearray(rng.randbytes(rng.randint(0, len(payload) + 4)))
        else:  # extend (also the fallback for an empty payload)
            payload += rng.randbytes(rng.randint(1, 4))
        thumb.payload = bytes(payload)

    frames, _ = _edit_thumb(rng, header, frames, change)
    return Forgery(header, frames, CLEAN_OR_FORGED)


def _e_transplant(rng: random.Random, header: bytes, frames: list[Frame], ctx: Context) -> Forgery:
    """Another record's payload of the same side, with or without its token check: the
    check covers tokens and claims (size, mode), so both fail but for a collision."""
    with_check = rng.random() < 0.5

    def change(thumb: Thumb) -> bool:
        donors = [d for d in ctx.thumbs if d.side == thumb.side and d.payload != thumb.payload]
        if not donors:
            return False
        donor = rng.choice(donors)
        thumb.payload = donor.payload
        if with_check:
            thumb.check = donor.check
        return True

    frames, changed = _edit_thumb(rng, header, frames, change)
    if not changed:
        return _e_payload(rng, header, frames, ctx)
    return Forgery(header, frames, CLEAN_OR_FORGED)


def _e_records(rng: random.Random, header: bytes, frames: list[Frame], ctx: Context) -> Forgery:
    """Records reordered, duplicated or dropped: the CRC chain is no signature, so a
    re-chained stream of other records is valid (forged but valid)."""
    original = frames
    frames = list(frames)
    variant = rng.choice(("swap", "duplicate", "drop") if len(frames) > 1 else ("duplicate",))
    if variant == "swap":
        i, j = rng.sample(range(len(frames)), 2)
        frames[i], frames[j] = frames[j], frames[i]
    elif variant == "duplicate":
        i = rng.randrange(len(frames))
        frames.insert(rng.randrange(len(frames) + 1), frames[i])
    else:
        thumbs = _thumb_indices(frames)
        if len(thumbs) > 1:
            del frames[rng.choice(thumbs)]
        else:
            del frames[rng.choice([i for i in range(len(frames)) if i not in thumbs])]
    # Moving or repeating only records that are skipped changes nothing decoded; moving a
    # name record away from its image may be refused.
    if _meaning(frames) == _meaning(original):
        return Forgery(header, frames, IDENTICAL)
    return Forgery(header, frames, CLEAN_OR_FORGED if _named(original) else FORGED)


def _e_insert_record(
    rng: random.Random, header: bytes, frames: list[Frame], ctx: Context
) -> Forgery:
    """A record of an unknown kind: skipped when ANCILLARY (same output), refused when
    must-understand, and kind 0 is never a record."""
    variant = rng.randrange(3)
    kind = 0 if variant == 0 else rng.randint(2, 15)
    head = kind | (ANCILLARY if variant == 2 else 0) | rng.randrange(4) << CODING_SHIFT
    frames = list(frames)
    frames.insert(rng.randrange(len(frames) + 1), Frame(head, rng.randbytes(rng.randint(0, 32))))
    if kind == KIND_NAME:  # random bytes as a name: refused, or a name for the next image
        return Forgery(header, frames, CLEAN_OR_FORGED)
    if kind in (3, 4, 5, 6):  # full-image and classical kinds are known and never
        return Forgery(header, frames, CLEAN)  # ANCILLARY: always refused
    if variant == 2:  # skipped; refused between a name record and its image
        return Forgery(header, frames, CLEAN_OR_SAME if _named(frames) else IDENTICAL)
    return Forgery(header, frames, CLEAN)


def _e_name(rng: random.Random, header: bytes, frames: list[Frame], ctx: Context) -> Forgery:
    """A stored name replaced: another valid name (nothing covers it: forged but valid),
    a directory, NUL, a dot name, bad UTF-8, empty or over 255 bytes (refused)."""
    frames = list(frames)
    i = rng.choice([i for i, f in enumerate(frames) if f.head & KIND_MASK == KIND_NAME])
    body = rng.choice(
        (
            b"other.png",
            bytes(rng.randint(0x21, 0x7E) for _ in range(rng.randint(1, 20))),
            b"dir/x.png",
            b"a\\b",
            b"x\x00y",
            b".",
            b"..",
            b"\xff\xfe",
            rng.randbytes(rng.randint(1, 8)),
            b"",
            b"n" * 256,
        )
    )
    if body == frames[i].body:
        body = b"renamed"
    frames[i] = replace(frames[i], body=body)
    return Forgery(header, frames, CLEAN_OR_FORGED)


def _e_limits(rng: random.Random, header: bytes, frames: list[Frame], ctx: Context) -> Forgery:
    """More images or tokens than the decoder's limits allow (records repeated first)."""
    frames = list(frames)
    for _ in range(rng.randint(0, 3)):
        frames.append(frames[rng.randrange(len(frames))])
    thumbs = [Thumb.parse(frames[i].body) for i in _thumb_indices(frames)]
    images, tokens = len(thumbs), sum(t.side**2 for t in thumbs)
    limits = (images - 1, TOKEN_BUDGET) if rng.random() < 0.5 else (IMAGE_BUDGET, tokens - 1)
    return Forgery(header, frames, CLEAN, limits=limits)


def _e_many(rng: random.Random, header: bytes, frames: list[Frame], ctx: Context) -> Forgery:
    """Hundreds of records: refused by the image limit before any model work. The limit is
    below the images the stream holds (a named base's records are half names: 100 records
    can be 50 images, which a limit of 99 let through, a forged-valid outcome)."""
    frames = list(frames) * max(1, rng.randint(100, 1000) // len(frames))
    images = sum(1 for f in frames if f.head & KIND_MASK in (KIND_THUMBNAIL, 3, 5))
    return Forgery(header, frames, CLEAN, limits=(rng.randint(1, min(99, images - 1)), 1 << 20))


def _e_body_bits(rng: random.Random, header: bytes, frames: list[Frame], ctx: Context) -> Forgery:
    """Random bits anywhere in one record's body (any field), CRCs recomputed."""
    frames = list(frames)
    i = rng.choice(_thumb_indices(frames))
    body = bytearray(frames[i].body)
    for _ in range(rng.randint(1, 3)):
        body[rng.randrange(len(body))] ^= 1 << rng.randrange(8)
    frames[i] = replace(frames[i], body=bytes(body))
    return Forgery(header, frames, CLEAN_OR_FORGED)


def _e_full_bits(rng: random.Random, header: bytes, frames: list[Frame], ctx: Context) -> Forgery:
    """Random bits in a full-resolution image's header or segment record, CRCs recomputed:
    the segment count, the grid, the token checks (which cover the header) or the
    canonical payload refuse every one."""
    frames = list(frames)
    i = rng.choice([i for i, f in enumerate(frames) if f.head & KIND_MASK in (3, 4)])
    body = bytearray(frames[i].body)
    for _ in range(rng.randint(1, 3)):
        body[rng.randrange(len(body))] ^= 1 << rng.randrange(8)
    frames[i] = replace(frames[i], body=bytes(body))
    return Forgery(header, frames, CLEAN)


def _e_full_coding(rng: random.Random, header: bytes, frames: list[Frame], ctx: Context) -> Forgery:
    """Another coding on a full-resolution image, its header alone or with its segments:
    a segment that disagrees is refused as read; a consistent switch between the exact
    codings (plain, adaptive, and adaptive with the longer-reach levels: 0, 2 and 3)
    decodes under other tables, which the token checks (they cover the head byte) and the
    canonical payload refuse; coding 1 (float32) is refused."""
    frames = list(frames)
    i = rng.choice([i for i, f in enumerate(frames) if f.head & KIND_MASK == 3])
    end = i + 1
    while end < len(frames) and frames[end].head & KIND_MASK == 4:
        end += 1
    old = (frames[i].head & 0x30) >> CODING_SHIFT
    coding = rng.choice([c for c in range(4) if c != old])
    last = end if rng.random() < 0.7 else i + 1
    for j in range(i, last):
        frames[j] = replace(frames[j], head=frames[j].head & ~0x30 | coding << CODING_SHIFT)
    return Forgery(header, frames, CLEAN)


def _e_full_chain(rng: random.Random, header: bytes, frames: list[Frame], ctx: Context) -> Forgery:
    """The other segment layout on a full-resolution image (its header's CHAIN bit):
    the segment count no longer matches, or, with one band, where both layouts have as
    many segments, the token checks (they cover the header) refuse it."""
    frames = list(frames)
    i = rng.choice([i for i, f in enumerate(frames) if f.head & KIND_MASK == 3])
    body = bytearray(frames[i].body)
    body[0] ^= CHAIN_SEGMENTS
    frames[i] = replace(frames[i], body=bytes(body))
    return Forgery(header, frames, CLEAN)


def _zero_segments(
    fingerprint: bytes,
    head: int,
    body: bytes,
    layout: tuple[int, int, int, int, int, bool],
    band_checks: bool = False,
) -> list[Frame]:
    """The segment records of an all-zero image under a kind-3 header, from SPEC.md
    ("Layout", "Kind 4", "Band checks"): empty payloads (they decode to token 0), the token
    check of each segment's zeros and, with `band_checks` (a CHAIN layout), the check after
    each of its bands but the last, so the container and every check accept them."""
    width, height, grid, context, windows, chain = layout
    w, h = min(grid, width), min(grid, height)
    reals = [min(w, width - x) for x in range(0, width, w)]
    groups = [reals[i : i + windows] for i in range(0, len(reals), windows)]
    sums = [sum(real) for real in groups]
    small = width * height <= 1 << 20
    coded = [h]  # coded rows of each band (at most 4096 segments: see the caller)
    start = h
    while start < height and (small or not chain):  # a big chain's bands: never read
        top = min(start - context, height - h)
        coded.append(h - (start - top))
        start = top + h
    if chain:  # a chain's bands code every row of the image once
        bands = [[rows * columns for rows in coded] for columns in sums]
    else:
        bands = [[rows * columns] for rows in coded for columns in sums]
    seg_head = 4 | head & 0x30
    frames = []
    for index, counts in enumerate(bands):
        check, checks = 0, b""  # an image this big is refused from its header: not read
        if small:
            crc = zlib.crc32(bytes([seg_head]) + fingerprint + body + encode_varint(index))
            running = []
            for count in counts:
                crc = zlib.crc32(bytes(2 * count), crc)
                running.append(crc & 0xFF)
            check = crc & 0xFFFF
            checks = bytes(running[:-1]) if band_checks else b""
        frames.append(Frame(seg_head, struct.pack("<H", check) + checks))
    return frames


def _e_full_layout(rng: random.Random, header: bytes, frames: list[Frame], ctx: Context) -> Forgery:
    """A full-resolution image replaced by a valid all-zero one whose header forges the
    layout (windows per segment 1..255, context rows 0..24, width and height up to 65535,
    the CHAIN bit), segments and token checks made to match (SPEC.md): the decoder must
    refuse it from the header (limits: layout, pixels, work, memory) or decode it to zeros
    within the work budget, never run past it."""
    frames = list(frames)
    i = rng.choice([i for i, f in enumerate(frames) if f.head & KIND_MASK == 3])
    end = i + 1
    while end < len(frames) and frames[end].head & KIND_MASK == 4:
        end += 1
    small = rng.random() < 0.7
    top = 300 if small else 0xFFFF
    width = rng.choice([1, 2, 31, 32, 33, 64, rng.randint(1, top)])
    height = rng.choice([1, 2, 31, 32, 33, rng.randint(1, top)])
    if not small:  # most of these must be refused from the header alone
        width, height = rng.randint(1, 0xFFFF), rng.randint(1, 0xFFFF)
    grid = 32
    context = rng.choice([0, 4, rng.randint(0, 24)])
    windows = rng.choice([1, 2, 32, 33, 255, rng.randint(1, 255)])
    chain = rng.random() < 0.7
    segments = _full_segment_count(width, height, grid, context, windows, chain)
    if segments > 4096:  # the container reads every segment before the decoder's limits
        width, height = width % 300 + 1, height % 300 + 1
    layout = (width, height, grid, context, windows, chain)
    body = (
        bytes([context | (0x20 if chain else 0)])
        + encode_varint(width)
        + encode_varint(height)
        + bytes([grid, windows])
    )
    head = frames[i].head & ~FINAL
    zeros = _zero_segments(header[-FINGERPRINT_LEN:], head, body, layout)
    frames[i:end] = [Frame(head, body), *zeros]
    return Forgery(header, frames, CLEAN_OR_FORGED, work=True)


def _features_at(body: bytes) -> int:
    """Offset of a kind-3 body's features byte (= its length when it has none): after the
    first byte, a spelled-out mode, width, height, grid and segment windows."""
    pos = 1 + (1 + body[1] if body[0] >> 6 == MODE_SPELLED else 0)
    _, pos = read_varint(body, pos)
    _, pos = read_varint(body, pos)
    return pos + 2


def _e_full_features(
    rng: random.Random, header: bytes, frames: list[Frame], ctx: Context
) -> Forgery:
    """The kind-3 features byte and the band checks (SPEC.md "Band checks"), CRCs recomputed: a
    features byte of 0, with a reserved bit, or with BAND_CHECKS where the CHAIN bit is
    clear is refused from the header; LINEAR flipped decodes other tables (a token check
    fails) or, on coding 0, is refused from the header; the byte added or dropped changes
    the header the token checks cover and moves the band checks into or out of the payload;
    a band check changed, dropped or added fails its band's check, the canonical payload or
    the token check (decoded under WORK_BUDGET, not TOKEN_BUDGET, so the decoder's checks
    run: the corpus's images fit it). And a valid all-zero image with BAND_CHECKS and every
    check made from SPEC.md (sometimes one band check wrong): decoded to zeros, or refused."""
    frames = list(frames)
    i = rng.choice([i for i, f in enumerate(frames) if f.head & KIND_MASK == 3])
    end = i + 1
    while end < len(frames) and frames[end].head & KIND_MASK == 4:
        end += 1
    body = frames[i].body
    at = _features_at(body)
    features = body[at] if len(body) > at else 0
    checks = features & BAND_CHECKS
    how = rng.choice(
        ["zero", "reserved", "toggle", "no_chain", "band", "band_count", "zeros", "linear"]
    )
    if how == "zeros":
        return _zero_band_checks(rng, header, frames, i, end)
    if how in ("band", "band_count") and checks and end > i + 1:
        j = rng.randrange(i + 1, end)
        seg = bytearray(frames[j].body)
        count = _band_count_of(body)
        if how == "band" and count:
            seg[2 + rng.randrange(count)] ^= rng.randrange(1, 256)
        elif rng.random() < 0.5 and count:
            del seg[2 + rng.randrange(count)]
        else:
            seg.insert(2 + rng.randint(0, count), rng.randrange(256))
        frames[j] = replace(frames[j], body=bytes(seg))
        return Forgery(header, frames, CLEAN, work=True)
    if how == "zero":
        new = body[:at] + b"\x00"
    elif how == "reserved":
        new = body[:at] + bytes([rng.randrange(1, 64) << 2 | rng.randrange(4)])  # bits 2-7
    elif how == "linear":  # LINEAR flipped: other tables (a token check fails), or on a
        # coding without levels, refused from the header
        flipped = features ^ LINEAR_LEVELS  # 0: the byte goes (a zero byte is refused)
        new = body[:at] + (bytes([flipped]) if flipped else b"")
    elif how == "no_chain":
        new = bytes([body[0] & ~CHAIN_SEGMENTS]) + body[1:at] + bytes([BAND_CHECKS])
    else:  # toggle: the byte dropped, or added where it was absent
        new = body[:at] if len(body) > at else body + bytes([BAND_CHECKS])
    frames[i] = replace(frames[i], body=new)
    return Forgery(header, frames, CLEAN, work=True)


def _band_count_of(body: bytes) -> int:
    """Band checks per segment of a kind-3 body with BAND_CHECKS: its bands but one."""
    pos = 1 + (1 + body[1] if body[0] >> 6 == MODE_SPELLED else 0)
    _, pos = read_varint(body, pos)
    height, pos = read_varint(body, pos)
    grid, context = body[pos], body[0] & 0x1F
    h = min(grid, height)
    return 0 if height <= h else -(-(height - h) // (h - context))


def _zero_band_checks(
    rng: random.Random, header: bytes, frames: list[Frame], i: int, end: int
) -> Forgery:
    """frames[i:end] replaced by an all-zero CHAIN image with BAND_CHECKS of several bands,
    every check right (forged but valid) or one check wrong (refused). Narrow ones decode
    within WORK_BUDGET; wider ones (several chains) are refused by it from the header."""
    width = rng.choice([rng.randint(1, 16), rng.randint(1, 96)])
    height = rng.randint(33, 100)
    context = rng.choice([0, 4, rng.randint(0, 24)])
    windows = rng.choice([1, 2, 3])
    layout = (width, height, 32, context, windows, True)
    body = (
        bytes([context | CHAIN_SEGMENTS])
        + encode_varint(width)
        + encode_varint(height)
        + bytes([32, windows, BAND_CHECKS])
    )
    head = frames[i].head & ~FINAL
    zeros = _zero_segments(header[-FINGERPRINT_LEN:], head, body, layout, True)
    expect = CLEAN_OR_FORGED
    if rng.random() < 0.4:
        j = rng.randrange(len(zeros))
        seg = bytearray(zeros[j].body)
        seg[2 + rng.randrange(len(seg) - 2)] ^= rng.randrange(1, 256)
        zeros[j] = replace(zeros[j], body=bytes(seg))
        expect = CLEAN
    frames[i:end] = [Frame(head, body), *zeros]
    return Forgery(header, frames, expect, work=True)


def _full_segment_count(
    width: int, height: int, grid: int, context: int, windows: int, chain: bool
) -> int:
    w, h = min(grid, width), min(grid, height)
    columns = -(-width // w)
    groups = -(-columns // windows)
    bands = 1 if height <= h else 1 + -(-(height - h) // (h - context))
    return groups if chain else groups * bands


def _e_head_byte(rng: random.Random, header: bytes, frames: list[Frame], ctx: Context) -> Forgery:
    """Any other head byte: the same output only if the decoded records are unchanged
    (another unknown skippable kind); a thumbnail's head is in its token check; the
    skipped record's text read as a name record names the next image."""
    original = frames
    frames = list(frames)
    i = rng.randrange(len(frames))
    frames[i] = replace(frames[i], head=_other_byte(rng, frames[i].head) & ~FINAL)
    if _meaning(frames) == _meaning(original):
        return Forgery(header, frames, CLEAN_OR_SAME)
    return Forgery(header, frames, ANY_VALID)


def _named(frames: list[Frame]) -> bool:
    return any(f.head & KIND_MASK == KIND_NAME for f in frames)


def _meaning(frames: list[Frame]) -> list[tuple[int, bytes]]:
    """The records a reader decodes (thumbnails and names), in order."""
    return [(f.head, f.body) for f in frames if f.head & KIND_MASK in (KIND_THUMBNAIL, KIND_NAME)]


EDITS: dict[str, tuple[Callable[..., Forgery], float, str]] = {
    # name: (edit, weight, the bases it needs: "" any, "several" frames, "named" a name)
    "fingerprint": (_e_fingerprint, 1.0, ""),
    "version": (_e_version, 0.5, ""),
    "magic": (_e_magic, 0.3, ""),
    "coding": (_e_coding, 1.0, ""),
    "kind": (_e_kind, 1.0, ""),
    "ancillary": (_e_ancillary, 0.7, ""),
    "final": (_e_final, 0.7, ""),
    "length": (_e_length, 1.0, "several"),
    "side": (_e_side, 2.0, ""),
    "mode": (_e_mode, 1.0, ""),
    "dimension": (_e_dimension, 1.5, ""),
    "token_check": (_e_token_check, 1.0, ""),
    "payload": (_e_payload, 3.0, ""),
    "transplant": (_e_transplant, 1.0, ""),
    "records": (_e_records, 1.0, ""),
    "insert_record": (_e_insert_record, 1.0, ""),
    "name": (_e_name, 0.7, "named"),
    "limits": (_e_limits, 0.7, ""),
    "many": (_e_many, 0.05, ""),
    "body_bits": (_e_body_bits, 1.5, ""),
    "head_byte": (_e_head_byte, 0.7, ""),
    "full_bits": (_e_full_bits, 1.5, "full"),
    "full_coding": (_e_full_coding, 0.7, "full"),
    "full_chain": (_e_full_chain, 0.5, "full"),
    "full_layout": (_e_full_layout, 1.5, "full"),
    "full_features": (_e_full_features, 1.0, "full"),
}
RECRC_ONLY = {"limits", "many"}


@dataclass
class Context:
    """The corpus and, in a worker, the model bundle."""

    bases: list[Base]
    bundle: Any = None
    thumbs: list[Thumb] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.by_name = {base.name: base for base in self.bases}
        self.streams = {base.data for base in self.bases}
        # Field edits know thumbnail records; full-resolution streams get random damage and
        # their own body edits ("full_bits").
        self.full = [base for base in self.bases if base.name in FULL_BASES]
        self.thumb_bases = [base for base in self.bases if base.name not in FULL_BASES]
        self.multi = [base for base in self.thumb_bases if len(base.layout[1]) > 1]
        self.named = [base for base in self.thumb_bases if _named(base.layout[1])]
        self.thumbs = [
            Thumb.parse(frame.body)
            for base in self.bases
            for frame in base.layout[1]
            if frame.head & KIND_MASK == KIND_THUMBNAIL
        ]


def make_case(ctx: Context, seed: int, index: int, weights: dict[str, float]) -> Case:
    """Case `index` of the campaign `seed`: a function of these and the corpus alone."""
    rng = random.Random(f"igpt-fuzz/{seed}/{index}")
    family = rng.choices(list(weights), weights=list(weights.values()))[0]
    reader = rng.choices(("bytes", "pipe", "sized_pipe"), weights=(5, 3, 2))[0]
    api = rng.choices(("decompress", "decompress_pipe", "iter_decompress"), weights=(2, 1, 1))[0]
    chunks = rng.randrange(1 << 30)
    if family == "random":
        base = rng.choice(ctx.bases)
        name = rng.choice(list(RANDOM_MUTATIONS))
        data = RANDOM_MUTATIONS[name](rng, base.data, ctx)
        while data in ctx.streams:  # unchanged, or a whole corpus stream (a splice at 12)
            data = _m_bitflip(rng, data, ctx)
        return Case(index, family, name, base.name, data, CLEAN, reader, api, None, chunks)
    names = [n for n in EDITS if family == "recrc" or n not in RECRC_ONLY]
    name = rng.choices(names, weights=[EDITS[n][1] for n in names])[0]
    edit, _, needs = EDITS[name]
    pools = {"": ctx.thumb_bases, "several": ctx.multi, "named": ctx.named, "full": ctx.full}
    base = rng.choice(pools[needs])
    header, frames, crcs = base.layout
    forgery = edit(rng, header, frames, ctx)
    stale = crcs if family == "field" else None
    data = build_stream(forgery.header, forgery.frames, stale, final=forgery.final)
    expect = forgery.expect if family == "recrc" else CLEAN
    if data == base.data and name != "limits":
        data = _m_bitflip(rng, data, ctx)  # an edit that changed nothing: damage a CRC
        expect = CLEAN
    recomputed = build_stream(forgery.header, forgery.frames, final=forgery.final)
    if family == "field" and data == recomputed:
        expect = forgery.expect  # stale CRCs that are still right (the edit kept them)
    return Case(
        index,
        family,
        name,
        base.name,
        data,
        expect,
        reader,
        api,
        forgery.limits,
        chunks,
        forgery.work,
    )


# --- running one case ------------------------------------------------------------------------


class ShortReads(io.RawIOBase):
    """A pipe: only read(n), each returning 1..n bytes at random (seeded)."""

    def __init__(self, data: bytes, seed: int) -> None:
        self._data = memoryview(data)
        self._pos = 0
        self._rng = random.Random(seed)

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            n = len(self._data) - self._pos
        n = min(n, self._rng.randint(1, max(1, n)), len(self._data) - self._pos)
        out = bytes(self._data[self._pos : self._pos + n])
        self._pos += n
        return out


def read_container(case: Case) -> list[Any]:
    """Layer (a): the container alone."""

    if case.reader == "bytes":
        return stream_format.unpack_stream(case.data)
    length = len(case.data) if case.reader == "sized_pipe" else None
    return list(stream_format.iter_records(ShortReads(case.data, case.chunks), length=length))


def decode_full(case: Case, records: list[Any], bundle: Any) -> Output:
    """Layer (b): the full decode, through the API where it takes the stream as it is."""
    from igpt_codec.pipelines.stream import DecodeLimits, decode

    if case.work:  # a forged layout: bounded by work and the default layout limits
        limits = DecodeLimits(max_images=IMAGE_BUDGET, max_work=WORK_BUDGET)
        items = decode(records, bundle, threads=1, limits=limits)
        return tuple(
            _signature(i.tokens, getattr(i, "side", 0), (i.width, i.height), i.mode, i.name)
            for i in items
        )
    tokens = sum(record.header.token_count for record in records)
    if case.limits is not None or tokens > TOKEN_BUDGET or len(records) > IMAGE_BUDGET:
        images, max_tokens = case.limits or (IMAGE_BUDGET, TOKEN_BUDGET)
        limits = DecodeLimits(max_images=images, max_tokens=max_tokens)
        items = decode(records, bundle, threads=1, limits=limits)
        return tuple(
            _signature(i.tokens, getattr(i, "side", 0), (i.width, i.height), i.mode, i.name)
            for i in items
        )
    if case.api == "decompress":
        decoded = igpt_codec.decompress(case.data, model=bundle, threads=1)
    elif case.api == "decompress_pipe":
        decoded = igpt_codec.decompress(ShortReads(case.data, case.chunks), model=bundle, threads=1)
    else:
        decoded = list(igpt_codec.iter_decompress(case.data, model=bundle, threads=1))
    return tuple(
        _signature(d.tokens, d.side, d.original_size, d.original_mode, getattr(d, "name", None))
        for d in decoded
    )


def _signature(tokens: Any, side: int, size: tuple[int, int], mode: str, name: Any) -> Any:
    return (
        np.asarray(tokens, dtype=np.uint16).tobytes(),
        int(side),
        tuple(size),
        str(mode),
        name,
    )


class Hang(BaseException):
    """Raised by the in-process alarm: the case ran past its timeout."""


def classify(ctx: Context, case: Case, memory_bound: int) -> dict[str, Any]:
    """Run one case (in this process) and sort it into an outcome class."""
    from igpt_codec.format.errors import CodecError

    result: dict[str, Any] = {"model": False, "error": None}
    tracemalloc.reset_peak()
    before, _ = tracemalloc.get_traced_memory()
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    try:
        records = read_container(case)
        result["model"] = True
        output = decode_full(case, records, ctx.bundle)
    except Hang:
        result["outcome"] = "hang"
    except CodecError as exc:
        message = str(exc)
        result["error"] = type(exc).__name__
        if message and "\n" not in message:
            result["outcome"] = "clean_error"
        else:
            result["outcome"] = "other_exception"
            result["detail"] = f"{type(exc).__name__} with a message that is not one line"
    except Exception as exc:
        result["outcome"] = "other_exception"
        result["error"] = type(exc).__name__
        result["detail"] = traceback.format_exc()
    else:
        same = output == ctx.by_name[case.base].output
        result["outcome"] = "identical" if same else "forged_valid"
    result["seconds"] = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1] - before
    rss_growth = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) * 1024
    result["peak"] = peak
    if max(peak, rss_growth) > memory_bound and result["outcome"] != "hang":
        result["outcome"] = "memory"
        result["detail"] = f"tracemalloc peak {peak} bytes, RSS high water +{rss_growth} bytes"
    return result


def build_context(bundle_dir: str | None = None) -> Context:
    """Load the bundle and code the corpus (deterministic), with each base's output."""
    from igpt_codec.runtime.bundle import load_bundle

    bundle = load_bundle(bundle_dir)
    bases = []
    for name, data in _corpus_streams(bundle).items():
        decoded = igpt_codec.decompress(data, model=bundle, threads=1)
        output = tuple(
            _signature(d.tokens, d.side, d.original_size, d.original_mode, d.name) for d in decoded
        )
        bases.append(Base(name, data, output))
    ctx = Context(bases, bundle)
    for base in bases:  # the re-framing helper must rebuild every base byte for byte
        header, frames, _ = base.layout
        if build_stream(header, frames) != base.data:
            raise AssertionError(f"build_stream does not rebuild the corpus stream {base.name}")
    return ctx


@contextlib.contextmanager
def hermetic_search_path() -> Iterator[None]:
    """No model search outside the default bundle (a forged fingerprint is never found)."""
    with tempfile.TemporaryDirectory(prefix="igpt-fuzz-") as tmp:
        saved = {k: os.environ.get(k) for k in ("IGPT_CODEC_MODELS", "XDG_CACHE_HOME")}
        os.environ["IGPT_CODEC_MODELS"] = ""
        os.environ["XDG_CACHE_HOME"] = tmp
        try:
            yield
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


# --- the campaign ------------------------------------------------------------------------------


@dataclass
class Options:
    seed: int = 1
    cases: int = 2000
    start: int = 0
    timeout: float = CASE_TIMEOUT
    memory_bound: int = MEMORY_BOUND
    weights: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_WEIGHTS))
    isolate: bool = True
    worker_init: str | None = None
    """"module:function" run in the worker before the corpus is built (tests inject faults)."""
    bundle_dir: str | None = None
    progress: float = 0.0
    """Seconds between progress lines on stderr (0: none)."""


def _run_init(spec: str | None) -> None:
    if spec:
        module, _, name = spec.partition(":")
        getattr(importlib.import_module(module), name)()


def _worker(conn: Any, options: Options) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with hermetic_search_path():
        _run_init(options.worker_init)
        ctx = build_context(options.bundle_dir)
        tracemalloc.start()
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        conn.send(("ready", rss))
        while True:
            index = conn.recv()
            if index is None:
                return
            case = make_case(ctx, options.seed, index, options.weights)
            result = classify(ctx, case, options.memory_bound)
            conn.send((index, result))


def _rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


class WorkerPool:
    """One spawned worker at a time, restarted after a hang, a crash or a kill."""

    def __init__(self, options: Options) -> None:
        self.options = options
        self.process: Any = None
        self.conn: Any = None
        self.base_rss = 0
        self.starts = 0

    def _start(self) -> None:
        mp = multiprocessing.get_context("spawn")
        parent, child = mp.Pipe()
        self.process = mp.Process(target=_worker, args=(child, self.options), daemon=True)
        self.process.start()
        child.close()
        self.conn = parent
        self.starts += 1
        if not parent.poll(600):
            self.stop()
            raise RuntimeError("the fuzz worker did not start within 600 s")
        try:
            tag, _ = parent.recv()
        except EOFError:
            self.stop()
            raise RuntimeError("the fuzz worker died while starting") from None
        assert tag == "ready"
        self.base_rss = _rss(self.process.pid)

    def stop(self) -> None:
        if self.process is not None:
            if self.process.is_alive():
                with contextlib.suppress(OSError, BrokenPipeError):
                    self.conn.send(None)
                self.process.join(2)
            if self.process.is_alive():
                self.process.kill()
                self.process.join()
            self.conn.close()
        self.process = None

    def run(self, index: int) -> dict[str, Any]:
        if self.process is None:
            self._start()
        self.conn.send(index)
        deadline = time.monotonic() + self.options.timeout
        while True:
            try:
                if self.conn.poll(0.05):
                    got, result = self.conn.recv()
                    assert got == index
                    return result
            except EOFError:
                self.process.join(1)
                code = self.process.exitcode
                self.stop()
                return {
                    "outcome": "other_exception",
                    "error": "WorkerDied",
                    "detail": f"the worker process died (exit code {code})",
                    "model": None,
                }
            if _rss(self.process.pid) - self.base_rss > HARD_RSS_CAP:
                self.process.kill()
                self.stop()
                return {"outcome": "memory", "detail": "RSS past the hard cap", "model": None}
            if time.monotonic() > deadline:
                self.process.kill()
                self.stop()
                return {
                    "outcome": "hang",
                    "detail": f"no result within {self.options.timeout} s",
                    "model": None,
                }


def _run_in_process(ctx: Context, options: Options, index: int) -> dict[str, Any]:
    def alarm(signum: int, frame: Any) -> None:
        raise Hang

    case = make_case(ctx, options.seed, index, options.weights)
    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, options.timeout)
    try:
        return classify(ctx, case, options.memory_bound)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@dataclass
class Report:
    options: Options
    counts: Counter[str] = field(default_factory=Counter)
    by_family: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    by_generator: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    errors: Counter[str] = field(default_factory=Counter)
    errors_by_generator: dict[str, Counter[str]] = field(
        default_factory=lambda: defaultdict(Counter)
    )
    model_cases: int = 0
    unexpected: Counter[str] = field(default_factory=Counter)
    examples: list[dict[str, Any]] = field(default_factory=list)
    max_peak: dict[str, int] = field(default_factory=lambda: {"container": 0, "model": 0})
    max_seconds: float = 0.0
    seconds: float = 0.0
    worker_starts: int = 0

    def add(self, case: Case, result: dict[str, Any]) -> None:
        outcome = result["outcome"]
        self.counts[outcome] += 1
        self.by_family[case.family][outcome] += 1
        self.by_generator[f"{case.family}.{case.generator}"][outcome] += 1
        if result.get("error"):
            self.errors[result["error"]] += 1
            self.errors_by_generator[f"{case.family}.{case.generator}"][result["error"]] += 1
        if result.get("model"):
            self.model_cases += 1
        layer = "model" if result.get("model") else "container"
        self.max_peak[layer] = max(self.max_peak[layer], result.get("peak", 0))
        self.max_seconds = max(self.max_seconds, result.get("seconds", 0.0))
        bad = outcome in FAILURES
        if outcome not in case.expect and not bad:
            self.unexpected[f"{case.family}.{case.generator}:{outcome}"] += 1
            bad = True
        if bad and len(self.examples) < 50:
            self.examples.append(
                {
                    "case": case.index,
                    "seed": self.options.seed,
                    "family": case.family,
                    "generator": case.generator,
                    "base": case.base,
                    "outcome": outcome,
                    "expected": sorted(case.expect),
                    "error": result.get("error"),
                    "detail": result.get("detail"),
                    "hex": case.data.hex() if len(case.data) <= 4096 else None,
                    "rerun": (
                        f"python -m tests.harness.fuzz --seed {self.options.seed}"
                        f" --case {case.index}"
                    ),
                }
            )

    @property
    def failures(self) -> int:
        return sum(self.counts[name] for name in FAILURES)

    def to_json(self) -> dict[str, Any]:
        total = sum(self.counts.values())
        payload = self.by_generator.get("recrc.payload", Counter())
        payload_cases = sum(payload.values())
        return {
            "seed": self.options.seed,
            "cases": total,
            "first_case": self.options.start,
            "weights": self.options.weights,
            "timeout_s": self.options.timeout,
            "memory_bound_bytes": self.options.memory_bound,
            "counts": {name: self.counts[name] for name in OUTCOMES},
            "by_family": {k: dict(v) for k, v in sorted(self.by_family.items())},
            "by_generator": {k: dict(v) for k, v in sorted(self.by_generator.items())},
            "errors": dict(self.errors.most_common()),
            "errors_by_generator": {
                k: dict(v.most_common()) for k, v in sorted(self.errors_by_generator.items())
            },
            "model_cases": self.model_cases,
            "forged_valid_payload_rate": (
                payload["forged_valid"] / payload_cases if payload_cases else 0.0
            ),
            "unexpected": dict(self.unexpected),
            "examples": self.examples,
            "max_peak_bytes": self.max_peak,
            "max_case_seconds": round(self.max_seconds, 3),
            "seconds": round(self.seconds, 1),
            "worker_starts": self.worker_starts,
        }

    def table(self, *, generators: bool = False) -> str:
        total = sum(self.counts.values())
        lines = [
            f"igpt fuzz: seed {self.options.seed}, {total} cases in {self.seconds:.1f} s "
            f"({self.model_cases} needed the model)",
            "",
            f"{'outcome':<16}{'all':>9}" + "".join(f"{f:>9}" for f in FAMILIES),
        ]
        for name in OUTCOMES:
            row = "".join(f"{self.by_family[f][name]:>9}" for f in FAMILIES)
            lines.append(f"{name:<16}{self.counts[name]:>9}{row}")
        if generators:
            lines += ["", f"{'generator':<26}" + "".join(f"{n[:9]:>10}" for n in OUTCOMES)]
            for gen, counter in sorted(self.by_generator.items()):
                lines.append(f"{gen:<26}" + "".join(f"{counter[n]:>10}" for n in OUTCOMES))
        lines.append("")
        lines.append("errors: " + ", ".join(f"{name} {n}" for name, n in self.errors.most_common()))
        lines.append(
            f"max tracemalloc peak: container {self.max_peak['container'] / 1024:.0f} KiB, "
            f"model {self.max_peak['model'] / 1024:.0f} KiB; slowest case {self.max_seconds:.2f} s"
        )
        if self.unexpected:
            lines.append(f"unexpected outcomes: {dict(self.unexpected)}")
        for example in self.examples[:5]:
            lines.append(
                f"  case {example['case']} {example['family']}.{example['generator']}: "
                f"{example['outcome']} {example['error'] or ''} -> {example['rerun']}"
            )
        return "\n".join(lines)


def run_campaign(options: Options, *, on_result: Callable[[Report], None] | None = None) -> Report:
    """Cases options.start .. options.start + options.cases - 1, in order."""
    report = Report(options)
    began = time.monotonic()
    with hermetic_search_path():
        if not options.isolate:
            _run_init(options.worker_init)
        ctx = build_context(options.bundle_dir)  # the parent's copy, to remake each case
        pool = WorkerPool(options) if options.isolate else None
        if pool is None:
            tracemalloc.start()
        try:
            _campaign_loop(ctx, options, report, pool, began)
        finally:
            if pool is not None:
                report.worker_starts = pool.starts
                pool.stop()
            elif tracemalloc.is_tracing():
                tracemalloc.stop()
    report.seconds = time.monotonic() - began
    return report


def _campaign_loop(
    ctx: Context, options: Options, report: Report, pool: WorkerPool | None, began: float
) -> None:
    last_progress = began
    for index in range(options.start, options.start + options.cases):
        case = make_case(ctx, options.seed, index, options.weights)
        result = pool.run(index) if pool is not None else _run_in_process(ctx, options, index)
        report.add(case, result)
        now = time.monotonic()
        if options.progress and now - last_progress >= options.progress:
            last_progress = now
            done = index - options.start + 1
            counts = " ".join(f"{k}={report.counts[k]}" for k in OUTCOMES)
            print(f"[{now - began:7.0f} s] {done}/{options.cases} {counts}", file=sys.stderr)
            sys.stderr.flush()


def show_case(options: Options, index: int) -> int:
    """Print one case and run it in this process, with the traceback of any exception."""
    with hermetic_search_path():
        ctx = build_context(options.bundle_dir)
        case = make_case(ctx, options.seed, index, options.weights)
        print(f"case {index} seed {options.seed}: {case.family}.{case.generator} on {case.base}")
        print(f"reader {case.reader}, api {case.api}, limits {case.limits}")
        print(f"expect {sorted(case.expect)}")
        print(f"bytes ({len(case.data)}): {case.data[:4096].hex()}")
        try:
            records = read_container(case)
            print(f"container: {len(records)} records")
            output = decode_full(case, records, ctx.bundle)
        except Exception:
            traceback.print_exc()
            return 1
        same = output == ctx.by_name[case.base].output
        print(f"decoded {len(output)} images: {'identical' if same else 'forged_valid'}")
    return 0


def _weights(text: str) -> dict[str, float]:
    weights = {}
    for part in text.split(","):
        name, _, value = part.partition("=")
        if name not in FAMILIES:
            raise argparse.ArgumentTypeError(f"unknown family {name!r} (know {FAMILIES})")
        weights[name] = float(value)
    return weights


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.harness.fuzz",
        description="Mutation campaign against the IGP container and decoder (issue 12).",
    )
    parser.add_argument("--cases", type=int, default=2000, help="number of cases (2000)")
    parser.add_argument("--seed", type=int, default=1, help="campaign seed (1)")
    parser.add_argument("--start", type=int, default=0, help="first case index (0)")
    parser.add_argument("--case", type=int, help="show and run one case in process, then exit")
    parser.add_argument("--timeout", type=float, default=CASE_TIMEOUT, help="seconds per case")
    parser.add_argument(
        "--memory-mib", type=float, default=MEMORY_BOUND >> 20, help="memory bound per case"
    )
    parser.add_argument(
        "--weights",
        type=_weights,
        default=dict(DEFAULT_WEIGHTS),
        help="family weights, e.g. random=0.5,field=0.2,recrc=0.3",
    )
    parser.add_argument("--model", help="bundle directory (default: the shipped bundle)")
    parser.add_argument("--in-process", action="store_true", help="no worker (alarm timeouts)")
    parser.add_argument("--json", help="write the report as JSON to this path ('-': stdout)")
    parser.add_argument("--generators", action="store_true", help="table per generator too")
    parser.add_argument("--progress", type=float, default=0.0, help="progress line every N s")
    args = parser.parse_args(argv)
    options = Options(
        seed=args.seed,
        cases=args.cases,
        start=args.start,
        timeout=args.timeout,
        memory_bound=int(args.memory_mib * (1 << 20)),
        weights=args.weights,
        isolate=not args.in_process,
        bundle_dir=args.model,
        progress=args.progress,
    )
    if args.case is not None:
        return show_case(options, args.case)
    report = run_campaign(options)
    if args.json == "-":
        json.dump(report.to_json(), sys.stdout, indent=1)
        print()
    else:
        if args.json:
            with open(args.json, "w", encoding="utf-8") as handle:
                json.dump(report.to_json(), handle, indent=1)
        print(report.table(generators=args.generators))
    return 1 if report.failures or report.unexpected else 0


if __name__ == "__main__":
    sys.exit(main())
