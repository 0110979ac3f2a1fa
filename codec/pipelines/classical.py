"""Full-resolution palette images as classical image files (record kinds 5 and 6).

Why: on text, line art and other synthetic images the model (trained on photos) can
cost 2-3x what PNG or WebP lossless cost on the same palette image (issue 28). The
encoder makes those files too and keeps whichever record is smallest, so by
construction no image costs more than the best of them plus the record's framing.
Such a record decodes with Pillow alone, without a model step.

Only representations that every PNG/WebP decoder, a browser's included, returns as
8-bit RGB are used: an RGB PNG, an indexed PNG (at most 256 colours) and a lossless
WebP. Their pixels map back to tokens through the palette's RGB colours, which must be
distinct (true of ImageGPT's 512; a bundle whose colours coincide is never offered this
coding). bench/classical.py's 16-bit token PNG is left out on purpose: a browser's
canvas gives 8 bits per channel, so a web decoder could not read it.

The decoder trusts nothing in the file: its structure and size are checked against the
record before any pixel is decoded (a decompression bomb is refused up front), every
pixel must be a palette colour, and the tokens must pass the record's token check.
Layout and rules: format/SPEC.md, "Kinds 5 and 6".
"""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image, features

from igpt_codec.core.palette import PALETTE_SIZE, grid_to_rgb, palette_colours
from igpt_codec.format.classical import (
    CODEC_PNG,
    CODEC_WEBP_LOSSLESS,
    MAX_CLASSICAL_FILE,
    ClassicalImageHeader,
    ClassicalImageRecord,
)
from igpt_codec.format.container import pack_stream, token_check
from igpt_codec.format.errors import CodecError, PayloadError, TokenChecksumError
from igpt_codec.pipelines.types import AnyRecord, EncodedImage, FullImage

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_CHUNKS = frozenset({b"IHDR", b"PLTE", b"IDAT", b"IEND"})
"""The only chunks allowed: no colour management (gAMA, iCCP, sRGB, cHRM) and no tRNS,
so every decoder returns the stored RGB values unchanged."""
WEBP_MAX_SIDE = 16383
"""libwebp's WEBP_MAX_DIMENSION: a wider or taller image is PNG only."""
MAX_INDEXED_COLOURS = 256
NO_WEBP = "this stream holds a WebP-coded image and this Pillow has no WebP support"


class MissingCodecError(CodecError):
    """The stream needs an image codec this Pillow was built without."""


def colours_distinct(palette: np.ndarray) -> bool:
    """True when RGB maps back to tokens: no two palette colours coincide."""
    return len(np.unique(_keys(palette_colours(palette)))) == PALETTE_SIZE


def _keys(rgb: np.ndarray) -> np.ndarray:
    flat = rgb.reshape(-1, 3).astype(np.int64)
    return flat[:, 0] << 16 | flat[:, 1] << 8 | flat[:, 2]


def _save(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


WEBP_CHEAP = (4, 90)
"""(method, quality) of the WebP lossless file every image gets. At quality 100, method 4
took 0.9 s of CPU on the 768 x 512 photo, about 0.5 s of its 2-core encode's wall time,
for a file 3.2x the model's. Quality 90 took 3.5x less CPU on 32 images (2.76 s against
9.75 s) for files a median 0.46% and at most 4.3% larger (docs/speed.md, "Session 30");
it never decides a choice on a photo, where the model's record is far below any WebP."""
WEBP_BEST = (6, 100)
"""(method, quality) of libwebp's hardest search: about as much time as the model itself
on a photo (8-20 s for 481 x 321 on a shared 2-core machine, 4-100x method 4)."""
EFFORT_MARGIN = 0.75
"""WEBP_BEST (and PNG's optimize) is tried only when the model's record is above this
fraction of the best cheap file: on photos the model is 0.55-0.72 of the best classical
file, and method 6 was 0.91-1.01 of method 4 on 20 images (docs/synthetic.md): skipping it
keeps the guarantee unless the best search were 25% below the cheap file. Both stay
candidates (method 6 is sometimes larger). Session 29 found palette images of photos where
method 6 is 0.44-0.53 of method 4, with the model's file still 0.50-0.65 of method 6's
(docs/speed.md, "Session 29")."""

PNG_FAST = 6
"""zlib level of the cheap RGB PNG; `optimize` (level 9 and more) joins with WEBP_BEST. On
31 palette images (docs/speed.md, "Session 29") optimize was 0.96-1.05 of level 6 in size
and 4-8x its time (0.30 s against 0.04 s on a 768 x 512 photo), so behind EFFORT_MARGIN it
changes no choice: a model record at most 0.75 of level 6's file is below optimize's too."""


def candidates(
    tokens: np.ndarray, palette: np.ndarray, rgb: Image.Image
) -> list[tuple[int, bytes]]:
    """(codec id, file) for every representation this Pillow can write: PNG always (zlib
    is part of Pillow), RGB at level PNG_FAST and indexed (at most 256 colours, optimized:
    it is cheap); WebP lossless at WEBP_CHEAP when Pillow has it and both sides fit
    WebP's 16384. `rgb` is the palette image of `tokens`."""
    height, width = tokens.shape
    found = [(CODEC_PNG, _save(rgb, "PNG", compress_level=PNG_FAST))]
    used = tokens_used(tokens)
    if used.size <= MAX_INDEXED_COLOURS:
        position = np.zeros(PALETTE_SIZE, np.uint8)
        position[used] = np.arange(used.size)
        indexed = Image.fromarray(position[tokens], mode="P")
        indexed.putpalette(palette_colours(palette)[used].reshape(-1).tolist())
        found.append((CODEC_PNG, _save(indexed, "PNG", optimize=True)))
        del indexed
    if _webp_fits(width, height):
        found.append((CODEC_WEBP_LOSSLESS, _webp(rgb, WEBP_CHEAP)))
    return _fitting(found)


USED_CHUNK = 1 << 20
"""Tokens counted at a time by `tokens_used`."""


def tokens_used(tokens: np.ndarray) -> np.ndarray:
    """The distinct tokens of a grid, ascending (np.unique's answer), in chunks.

    Why: on a 24-megapixel photo np.unique(return_inverse=True) held about 660 MiB at
    once (a sort and an int64 inverse), and the inverse stayed alive through libwebp's
    encode: together the encoder's 24 MP peak, 951 MiB against the 1 GB it aims for
    (docs/speed.md, "Session 31"). Counting in chunks holds a few MiB; the indexed PNG
    then looks its tokens up in a 512-entry table (one byte a pixel).
    """
    flat = tokens.reshape(-1)
    counts = np.zeros(PALETTE_SIZE, np.int64)
    for start in range(0, flat.size, USED_CHUNK):
        counts += np.bincount(flat[start : start + USED_CHUNK], minlength=PALETTE_SIZE)
    return np.flatnonzero(counts)


def _fitting(found: list[tuple[int, bytes]]) -> list[tuple[int, bytes]]:
    """The files a classical record can hold (MAX_CLASSICAL_FILE)."""
    return [(codec, data) for codec, data in found if len(data) <= MAX_CLASSICAL_FILE]


def _webp_fits(width: int, height: int) -> bool:
    """This Pillow writes WebP and the image fits libwebp's sides."""
    return features.check("webp") and max(width, height) <= WEBP_MAX_SIDE


def _webp(rgb: Image.Image, search: tuple[int, int]) -> bytes:
    method, quality = search
    return _save(rgb, "WEBP", lossless=True, quality=quality, method=method, exact=True)


class ClassicalTrial:
    """The cheap classical files of one image (PNG at PNG_FAST, indexed PNG, WebP at
    WEBP_CHEAP), made once. They depend on the image alone, so the full-resolution encoder
    makes them in its main process while its chain workers run (`prepare`), not after
    them: about 1 s of a 768 x 512 photo's encode that no longer waits for the model."""

    def __init__(self, image: FullImage, palette: np.ndarray) -> None:
        self.image = image
        self.palette = palette
        self.distinct = colours_distinct(palette)
        self._made: tuple[Image.Image, list[tuple[int, bytes]]] | None = None

    def prepare(self) -> None:
        if self._made is None and self.distinct:
            tokens = np.asarray(self.image.tokens)
            rgb = Image.fromarray(grid_to_rgb(tokens, self.palette))
            self._made = rgb, candidates(tokens, self.palette, rgb)

    def made(self) -> tuple[Image.Image, list[tuple[int, bytes]]]:
        """The palette image as RGB and the cheap files (made now if `prepare` was not
        called)."""
        self.prepare()
        assert self._made is not None
        return self._made[0], list(self._made[1])


def encode_classical(
    image: FullImage,
    fingerprint: bytes,
    palette: np.ndarray,
    model_bytes: int | None = None,
    trial: ClassicalTrial | None = None,
) -> ClassicalImageRecord | None:
    """The smallest classical record of `image`, or None when the palette's colours are
    not distinct (RGB would not map back to tokens).

    `model_bytes`, the size of the model's record, saves WEBP_BEST and PNG's optimize
    when the model is well below every cheap file (EFFORT_MARGIN); None always tries them.
    `trial`: the same image's cheap files, made beforehand (None: made here).
    """
    trial = trial or ClassicalTrial(image, palette)
    if not trial.distinct:
        return None
    tokens = np.asarray(image.tokens)
    rgb, found = trial.made()
    if not found:
        return None
    cheapest = min(len(data) for _, data in found)
    webp = any(codec == CODEC_WEBP_LOSSLESS for codec, _ in found)
    if model_bytes is None or model_bytes > EFFORT_MARGIN * cheapest:
        found.append((CODEC_PNG, _save(rgb, "PNG", optimize=True)))
        if webp:
            found.append((CODEC_WEBP_LOSSLESS, _webp(rgb, WEBP_BEST)))
        found = _fitting(found)
    codec, data = min(found, key=lambda pair: len(pair[1]))
    header = ClassicalImageHeader(
        fingerprint, image.width, image.height, image.mode, codec, len(data)
    )
    check = token_check(tokens.reshape(-1), header)  # type: ignore[arg-type]
    best = ClassicalImageRecord(header, data, check, image.name)
    decode_classical(best, palette, 0)  # the decoder's checks, so a writer never stores a bad file
    return best


def framed_size(record: AnyRecord | ClassicalImageRecord) -> int:
    """Bytes of a one-record stream holding `record`: what the choice compares."""
    return len(pack_stream([record]))


def keep_smaller(
    encoded: EncodedImage,
    image: FullImage,
    fingerprint: bytes,
    palette: np.ndarray,
    trial: ClassicalTrial | None = None,
) -> EncodedImage:
    """The model's record, or the classical one when that is smaller (the guarantee).
    `trial`: the image's cheap classical files, if made beforehand."""
    model_bytes = framed_size(encoded.record)
    alternative = encode_classical(image, fingerprint, palette, model_bytes, trial)
    if alternative is not None and framed_size(alternative) < model_bytes:
        return EncodedImage(alternative, encoded.ideal_bits)
    return encoded


def check_file(header: ClassicalImageHeader, data: bytes, where: str) -> None:
    """The embedded file's structure and size, before any pixel is decoded."""
    if header.codec == CODEC_PNG:
        _check_png(header, data, where)
    else:
        _check_webp(header, data, where)


def _bad(where: str, what: str) -> PayloadError:
    return PayloadError(f"{where}: the embedded file {what}")


def _check_png(header: ClassicalImageHeader, data: bytes, where: str) -> None:
    if not data.startswith(PNG_SIGNATURE):
        raise _bad(where, "is not a PNG (bad signature)")
    pos, seen = len(PNG_SIGNATURE), []
    while pos < len(data):
        if pos + 12 > len(data):
            raise _bad(where, f"is a PNG cut inside a chunk header at byte {pos}")
        (length,) = struct.unpack_from(">I", data, pos)
        kind = data[pos + 4 : pos + 8]
        end = pos + 12 + length
        if end > len(data):
            raise _bad(where, f"is a PNG whose {kind!r} chunk runs past its end")
        if zlib.crc32(data[pos + 4 : end - 4]) != struct.unpack_from(">I", data, end - 4)[0]:
            raise _bad(where, f"is a PNG whose {kind!r} chunk fails its CRC")
        if kind not in PNG_CHUNKS:
            raise _bad(where, f"is a PNG with a {kind!r} chunk (only IHDR, PLTE, IDAT, IEND)")
        if kind == b"IHDR":
            _check_ihdr(header, data[pos + 8 : end - 4], where)
        seen.append(kind)
        pos = end
    order = b"".join(seen)
    ok = seen and seen[0] == b"IHDR" and seen[-1] == b"IEND" and seen.count(b"IHDR") == 1
    has_idat = b"IDAT" in seen
    runs = ok and has_idat and seen.count(b"IEND") == 1 and seen.count(b"PLTE") <= 1
    if not runs or (b"PLTE" in seen and order.find(b"PLTE") > order.find(b"IDAT")):
        raise _bad(where, f"is a PNG with chunks out of order ({order.decode('latin-1')})")
    palette_type = data[len(PNG_SIGNATURE) + 8 + 9] == 3
    if palette_type != (b"PLTE" in seen):
        raise _bad(where, "is a PNG whose PLTE chunk does not match its colour type")


def _check_ihdr(header: ClassicalImageHeader, body: bytes, where: str) -> None:
    if len(body) != 13:
        raise _bad(where, "is a PNG with an IHDR of the wrong length")
    width, height, depth, colour, method, filters, interlace = struct.unpack(">IIBBBBB", body)
    if (width, height) != (header.width, header.height):
        raise _bad(where, f"is {width}x{height}; the record says {header.width}x{header.height}")
    if not ((colour == 2 and depth == 8) or (colour == 3 and depth in (1, 2, 4, 8))):
        raise _bad(where, f"is a PNG of colour type {colour} at {depth} bits (not RGB8/indexed)")
    if method or filters or interlace > 1:
        raise _bad(where, "is a PNG with an unknown compression, filter or interlace method")


def _check_webp(header: ClassicalImageHeader, data: bytes, where: str) -> None:
    if len(data) < 25 or data[:4] != b"RIFF" or data[8:16] != b"WEBPVP8L":
        raise _bad(where, "is not a simple lossless WebP (RIFF, WEBP, VP8L)")
    (riff,) = struct.unpack_from("<I", data, 4)
    (size,) = struct.unpack_from("<I", data, 16)
    if riff != len(data) - 8 or 20 + size + (size & 1) != len(data):
        raise _bad(where, "is a WebP whose sizes do not match its length")
    if size & 1 and data[-1] != 0:
        raise _bad(where, "is a WebP whose padding byte is not zero")
    (bits,) = struct.unpack_from("<I", data, 21)
    width, height = (bits & 0x3FFF) + 1, (bits >> 14 & 0x3FFF) + 1
    if data[20] != 0x2F or bits >> 29:
        raise _bad(where, "is a VP8L stream with a bad signature or version")
    if (width, height) != (header.width, header.height):
        raise _bad(where, f"is {width}x{height}; the record says {header.width}x{header.height}")
    if bits >> 28 & 1:
        raise _bad(where, "is a WebP that says it uses alpha")


MAP_CHUNK = 1 << 18
"""Pixels mapped per step: the int64 keys of a chunk (2 MB), not of the whole image."""


def _rgb_to_tokens(flat: np.ndarray, palette: np.ndarray, where: str, width: int) -> np.ndarray:
    """Each pixel's token (the palette colour it is), in chunks; a pixel that is no palette
    colour is refused with its position."""
    colours = _keys(palette_colours(palette))
    order = np.argsort(colours, kind="stable")
    table = colours[order]
    tokens = np.empty(len(flat), dtype=np.uint16)
    for start in range(0, len(flat), MAP_CHUNK):
        keys = _keys(flat[start : start + MAP_CHUNK])
        at = np.minimum(np.searchsorted(table, keys), PALETTE_SIZE - 1)
        wrong = table[at] != keys
        if wrong.any():
            y, x = divmod(start + int(np.argmax(wrong)), width)
            raise _bad(where, f"has a pixel at ({x}, {y}) that is not a palette colour")
        tokens[start : start + len(keys)] = order[at]
    return tokens


def decode_classical(record: ClassicalImageRecord, palette: np.ndarray, index: int) -> FullImage:
    """The palette image of a kind-5 record: file checks, Pillow, RGB to tokens, token
    check. Every failure is one line naming the record."""
    header = record.header
    where = f"record {index} ({header.codec_name})"
    if header.codec == CODEC_WEBP_LOSSLESS and not features.check("webp"):
        raise MissingCodecError(f"record {index}: {NO_WEBP}")
    check_file(header, record.data, where)
    fmt = "PNG" if header.codec == CODEC_PNG else "WEBP"
    try:
        with Image.open(io.BytesIO(record.data), formats=[fmt]) as opened:
            if opened.size != (header.width, header.height):
                raise _bad(where, f"opens as {opened.size}, not the record's size")
            opened.load()
            rgb = np.asarray(opened.convert("RGB"))
    except PayloadError:
        raise
    except (
        OSError,
        ValueError,
        SyntaxError,
        EOFError,
        struct.error,
        zlib.error,
        Image.DecompressionBombError,
    ) as exc:
        raise _bad(where, f"does not decode ({type(exc).__name__}: {exc})") from None
    tokens = _rgb_to_tokens(rgb.reshape(-1, 3), palette, where, header.width)
    if token_check(tokens, header) != record.token_check:  # type: ignore[arg-type]
        raise TokenChecksumError(
            f"record {index}: the decoded tokens fail the record's token check: the record "
            "is damaged, or the bundle's palette differs from the encoder's"
        )
    return FullImage(tokens.reshape(header.height, header.width), header.mode, record.name)
