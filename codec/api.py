"""The public Python API: images in, an IGP stream out, and back.

Thin glue over the one-way pipeline: `core.images` opens inputs, `core.palette`
tokenizes them, `pipelines` code tokens into records, `format` frames them.
Longer than 400 lines on purpose: it is the whole public surface (what the facade
re-exports), and its docstrings are the reference users read with help().

What is lossless is the palette image that was coded, not the original photo.
Thumbnails (the default): the N x N palette-token thumbnail (N <= 32) that ImageGPT
sees; `DecodedImage.image` is that thumbnail, token for token, and
`DecodedImage.to_original_size()` only an upscaled approximation. full=True: the
photo at its own size with every pixel mapped to the 512 palette colours, pixel for
pixel (colours change; a grey photo comes back in the palette's few greys).

Models. To compress, `model` may be a bundle directory, an already loaded
`Bundle` (saves re-hashing and lets callers share one), or None for the bundle
shipped with the package. To decompress, the stream names its model by
fingerprint and the bundle is looked up (`igpt_codec.runtime.search`): the `model` given
first, then the shipped bundle, then the directories in `$IGPT_CODEC_MODELS`
and the user cache directory.

Errors. Every problem with the input raises a subclass of `codec.CodecError`
with a one-line message: `InputImageError` (not an image), `FormatError` and its
subclasses (damaged or foreign stream), `ModelMismatchError` /
`ModelNotFoundError` (the stream's model is not at hand), `BundleError` (a bad
bundle), `TokenChecksumError` (the model computed different numbers than the
encoder's), `InputStreamError` (a stream path that cannot be opened; also an
OSError). Wrong argument types raise `TypeError`, a bad `size` (or a size with
full=True) or `chains` (below 1, or without full=True) `ValueError`, and other file
system problems `OSError`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import io
import itertools
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image

from igpt_codec.core.files import regular_file_size
from igpt_codec.core.images import ImageSource, LoadedImage, load_image
from igpt_codec.core.palette import grid_to_rgb, image_to_tokens, pixels_to_tokens, tokens_to_image
from igpt_codec.format import CodecError, DecodeLimitError, StreamWriter
from igpt_codec.format import iter_records as _iter_records
from igpt_codec.format.classical import CODEC_NAMES, ClassicalImageRecord
from igpt_codec.pipelines.limits import WorkTally, check_image_header
from igpt_codec.pipelines.stream import (
    AnyImage,
    AnyRecord,
    DecodeLimits,
    Progress,
    TokenImage,
    check_chains,
    check_side,
    decode,
    encode,
    token_count,
)
from igpt_codec.pipelines.types import FullImage
from igpt_codec.runtime.bundle import Bundle, load_bundle
from igpt_codec.runtime.search import find_bundle

ModelSpec = str | os.PathLike[str] | Bundle | None
ImageInput = ImageSource | LoadedImage
"""One image: a path, the bytes of an image file, a binary file object, a PIL image,
a uint8 numpy array (H x W, H x W x 3, H x W x 4) or an already loaded image."""
Images = ImageInput | Iterable[ImageInput]
"""One image, or an iterable (list, tuple, generator) of them."""
StreamSource = str | os.PathLike[str] | bytes | bytearray | memoryview | BinaryIO
"""A stream to decode: a path, its bytes, or a binary file object open on it."""

DEFAULT_SIZE = 32
"""ImageGPT's own resolution: 32x32 = 1024 tokens, the model's full context."""


class InputStreamError(CodecError, OSError):
    """A stream path that cannot be opened (missing, unreadable, a directory).

    The rule for inputs given by path is the same both ways: a problem with what the
    caller passed is a CodecError with a one-line message naming it (compress raises
    InputImageError for an image path). For a stream it is also an OSError carrying
    errno and filename, as before.
    """

    def __str__(self) -> str:
        return f"{self.filename}: {(self.strerror or 'cannot open').lower()}"


_SINGLE_TYPES = (str, os.PathLike, bytes, bytearray, memoryview, Image.Image, np.ndarray)


@dataclass(frozen=True, eq=False)
class DecodedImage:
    """One decoded record: the image that was coded, and what the original was.

    A thumbnail record gives the side x side palette thumbnail (`tokens` flat, in the
    order they were coded, side*side); a full-resolution record (`full`) the palette
    image at the photo's own size (`tokens` height x width). `grid` is the tokens as
    rows x columns for both. `image` (RGB) and `tokens` are exactly what was coded,
    never the original photo: `original_size` and `original_mode` only describe it.

    Equality is by value: two DecodedImages are equal when their tokens, pixels,
    original size and mode, name and kind are equal (decoding a stream twice gives
    equal lists), and equal ones hash alike. Do not change `tokens` in place while
    an image is used as a dict key or set member.
    """

    image: Image.Image
    tokens: np.ndarray
    original_size: tuple[int, int]
    original_mode: str
    name: str | None = None
    """The original file name, when the stream stored it (compress with names=True)."""
    full: bool = False
    """A full-resolution record: `image` is the palette image at the photo's own size and
    `tokens` its [height, width] palette indices."""

    @property
    def side(self) -> int:
        """A thumbnail's N; for a full-resolution image, its width (see `grid`)."""
        return self.image.width

    @property
    def grid(self) -> np.ndarray:
        """The tokens as rows x columns: side x side for a thumbnail, height x width for a
        full-resolution image (a view, not a copy)."""
        return self.tokens.reshape(self.image.height, self.image.width)

    def _key(self) -> tuple[object, ...]:
        tokens = np.ascontiguousarray(self.tokens)
        return (
            self.full,
            tokens.shape,
            tokens.tobytes(),
            self.image.mode,
            self.image.size,
            self.image.tobytes(),
            self.original_size,
            self.original_mode,
            self.name,
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, DecodedImage):
            return NotImplemented
        return self is other or self._key() == other._key()

    def __hash__(self) -> int:
        return hash(
            (
                self.full,
                self.original_size,
                self.original_mode,
                self.name,
                np.ascontiguousarray(self.tokens).tobytes(),
            )
        )

    def to_original_size(self) -> Image.Image:
        """The coded thumbnail scaled (bilinear, RGB) to the original's width and height.

        An approximation for viewing: only the thumbnail is lossless. A full-resolution
        record is already at the original size and is returned as it is.
        """
        if self.full:
            return self.image
        return self.image.resize(self.original_size, resample=Image.Resampling.BILINEAR)


@dataclass(frozen=True)
class CompressSummary:
    """What a compression cost, for the CLI's one-line report.

    The one "bits per token" figure is the whole stream's (file bytes, every
    header included); the coder's payload alone is `payload_bits_per_token`.
    """

    images: int
    tokens: int
    stream_bytes: int
    payload_bytes: int
    ideal_bits: float
    """The model's ideal cost of the images it coded (not of those in `stored_as`)."""
    stored_as: tuple[str, ...] = ()
    """The codec of each image stored as a classical file instead of the model's coding
    ('PNG', 'WebP lossless'; record kinds 5 and 6, kept when smaller), in order."""
    model_tokens: int | None = None
    """Tokens of the images the model coded; None: every token."""

    @property
    def bits_per_token(self) -> float:
        """File bytes x 8 / tokens: the whole stream, container included."""
        return 8 * self.stream_bytes / self.tokens

    @property
    def payload_bits_per_token(self) -> float:
        """Range-coder payload bytes x 8 / tokens, without any header."""
        return 8 * self.payload_bytes / self.tokens

    @property
    def ideal_bits_per_token(self) -> float:
        """The model's own -log2 p per token it coded: what a perfect coder would pay
        (NaN when every image is stored as a classical file)."""
        tokens = self.tokens if self.model_tokens is None else self.model_tokens
        return self.ideal_bits / tokens if tokens else float("nan")

    @property
    def ratio(self) -> float:
        """24-bit RGB of the coded side x side thumbnails over the stream size."""
        return 24 * self.tokens / (8 * self.stream_bytes)


def resolve_bundle(model: ModelSpec) -> Bundle:
    """A Bundle as given, or loaded (and verified) from its directory or the default.

    Raises BundleError for a missing or bad bundle.
    """
    return model if isinstance(model, Bundle) else load_bundle(model)


def as_image_list(images: Images) -> list[ImageInput]:
    """One image (path, bytes, file object, PIL image, numpy array) or an iterable of them,
    as a list. A string is always one path, never a sequence of characters."""
    if isinstance(images, (*_SINGLE_TYPES, LoadedImage)) or hasattr(images, "read"):
        return [images]  # type: ignore[list-item]
    if isinstance(images, Iterable):
        return list(images)
    raise TypeError(
        "expected an image (path, bytes, binary file, PIL image, numpy array) or an "
        f"iterable of them, not {type(images).__name__}"
    )


def tokenize(
    images: Images, bundle: Bundle, size: int, names: bool = False, full: bool = False
) -> list[AnyImage]:
    """Open and tokenize every input before any model time is spent, so a bad file fails
    fast; each full-size picture is dropped as soon as its tokens exist.

    names=True keeps the base file name of each path input (never its directories) for
    the stream to store; other inputs have none. full=True maps every pixel of the photo
    at its own size to the palette (a FullImage) instead of a size x size thumbnail.
    """
    if full:
        if not bundle.exact:
            raise ValueError(
                "full-resolution coding needs an exact bundle (profile exact-int-v1); "
                f"{bundle.fingerprint.hex()} is {bundle.profile}"
            )
    else:
        check_side(size, bundle)
    result: list[AnyImage] = []
    for item in as_image_list(images):
        loaded = item if isinstance(item, LoadedImage) else load_image(item)
        name = Path(item).name if names and isinstance(item, str | os.PathLike) else None
        if full:
            rgb = np.asarray(loaded.rgb, dtype=np.uint8)
            tokens = pixels_to_tokens(rgb, bundle.palette).reshape(rgb.shape[:2])
            result.append(FullImage(tokens, loaded.mode, name))
            continue
        tokens = image_to_tokens(loaded.rgb, bundle.palette, size)
        result.append(TokenImage(tokens, size, loaded.width, loaded.height, loaded.mode, name))
    return result


def compress_to(
    fileobj: BinaryIO,
    images: Images,
    model: ModelSpec = None,
    size: int | None = None,
    threads: int | None = None,
    progress: Progress | None = None,
    names: bool = False,
    full: bool = False,
    chains: int | None = None,
) -> CompressSummary:
    """Write one stream with a record per image to `fileobj`, record by record.

    `images`: one image or an iterable of them (see `ImageInput`). Returns the
    sizes and costs. Raises InputImageError, BundleError, ValueError (no images,
    size outside 1..32 or beyond the model's positions, chains below 1). On failure
    the end marker is not written, so what was written reads as truncated. full=True
    codes each photo's palette image at its own size (see `compress`); a size with it
    is a ValueError (it would be ignored), and so is `chains` without it. `size` None
    means DEFAULT_SIZE for thumbnails; `chains` None the default 2 (see `compress`).
    """
    size = _thumbnail_size(size, full)
    _full_chains(chains, full)
    bundle = resolve_bundle(model)
    token_images = _tokenize_all(images, bundle, size, names, full)
    counting = _CountingWriter(fileobj)
    payload_bytes = model_tokens = 0
    ideal_bits = 0.0
    stored_as: list[str] = []
    with _stream_writer(counting, bundle) as writer:
        coded = encode(token_images, bundle, threads=threads, progress=progress, chains=chains)
        for item, encoded in zip(token_images, coded, strict=True):
            writer.write_record(encoded.record)
            payload_bytes += encoded.payload_bytes
            if isinstance(encoded.record, ClassicalImageRecord):
                stored_as.append(CODEC_NAMES[encoded.record.header.codec])
            else:
                ideal_bits += encoded.ideal_bits
                model_tokens += token_count(item)
    return CompressSummary(
        images=len(token_images),
        tokens=sum(token_count(item) for item in token_images),
        stream_bytes=counting.written,
        payload_bytes=payload_bytes,
        ideal_bits=ideal_bits,
        stored_as=tuple(stored_as),
        model_tokens=model_tokens,
    )


def compress_each(
    images: Images,
    model: ModelSpec = None,
    size: int | None = None,
    threads: int | None = None,
    progress: Progress | None = None,
    names: bool = False,
    full: bool = False,
    chains: int | None = None,
) -> Iterator[tuple[bytes, CompressSummary]]:
    """One complete single-image stream per input, in input order, with its summary.

    Every input is opened and tokenized before the first stream is yielded (a bad
    file fails before any model time is spent); the model codes them in batches.
    Raises as `compress_to`: a `size` with full=True is a ValueError, as there (it would
    be ignored), and so is `chains` without full=True or below 1. `chains`: see
    `compress`.
    """
    size = _thumbnail_size(size, full)
    _full_chains(chains, full)
    bundle = resolve_bundle(model)
    token_images = _tokenize_all(images, bundle, size, names, full)
    for item, encoded in zip(
        token_images,
        encode(token_images, bundle, threads=threads, progress=progress, chains=chains),
        strict=True,
    ):
        buffer = io.BytesIO()
        with _stream_writer(buffer, bundle) as writer:
            writer.write_record(encoded.record)
        data = buffer.getvalue()
        classical = isinstance(encoded.record, ClassicalImageRecord)
        yield (
            data,
            CompressSummary(
                images=1,
                tokens=token_count(item),
                stream_bytes=len(data),
                payload_bytes=encoded.payload_bytes,
                ideal_bits=0.0 if classical else encoded.ideal_bits,
                stored_as=(CODEC_NAMES[encoded.record.header.codec],) if classical else (),
                model_tokens=0 if classical else token_count(item),
            ),
        )


def compress(
    images: Images,
    model: ModelSpec = None,
    size: int | None = None,
    threads: int | None = None,
    names: bool = False,
    full: bool = False,
    progress: Progress | None = None,
    chains: int | None = None,
) -> bytes:
    """One IGP stream holding a record per image, in order, as bytes.

    `images`: a path, the bytes of an image file, a binary file object, a PIL
    image, a uint8 numpy array (H x W, H x W x 3 or H x W x 4), or an iterable of
    any of these. `size` is the side N of the coded N x N thumbnail (1..32, default
    DEFAULT_SIZE = 32).
    `names=True` stores the base file name of each path input (ancillary records,
    about 6 bytes plus the name each; `DecodedImage.name` gives it back).
    `full=True` codes the photo's palette image at its own size instead (every pixel
    mapped to the 512 colours; giving a `size` too is a ValueError). What comes back is
    that palette image pixel for pixel, not the photo: about 30 s per megapixel to
    compress and 48 s to decompress with two workers on two cores (docs/speed.md).
    `progress(done, total)` is called as tokens are coded (total known from the start).
    `threads` None: onnxruntime's default for thumbnails, one worker per CPU for full
    resolution.
    `chains` (full=True only; None: 2): the independent chains each image's layout aims
    for. A decoder runs one chain per worker, so a file meant for 8- or 16-core
    decoders asks for 8 or 16; the cost is bytes (measured on photos: 4 chains +0.09%,
    8 chains +0.14-1.4%, 16 chains +0.5-3.8%) and encoder CPU (4 chains about +25%).
    An image with fewer 32-pixel window columns than `chains` gets one chain per column;
    one so wide that a chain would pass 32 windows gets more chains. The record is a normal
    full-resolution record (its header's segment_windows says the layout): any reader
    decodes it, with any number of threads.
    Raises InputImageError, BundleError, ValueError (see `compress_to`).
    """
    buffer = io.BytesIO()
    compress_to(
        buffer,
        images,
        model=model,
        size=size,
        threads=threads,
        progress=progress,
        names=names,
        full=full,
        chains=chains,
    )
    return buffer.getvalue()


def decompress(
    data: StreamSource,
    model: ModelSpec = None,
    threads: int | None = None,
    progress: Progress | None = None,
    limits: DecodeLimits | None = None,
) -> list[DecodedImage]:
    """Every image of a stream, in order; the whole stream is validated before decoding.

    `data`: a path (str or os.PathLike), the stream's bytes, or a binary file
    object open on it. `model`: a bundle directory or Bundle tried before the
    search path (see `igpt_codec.runtime.search`). `limits` (codec.DecodeLimits: images and
    tokens per stream) bounds the work an untrusted stream may ask for; the
    defaults are far above any honest file. Returns a list of DecodedImage
    (empty for a valid stream whose records are all of kinds this version
    skips). Raises FormatError subclasses for a damaged stream,
    ModelNotFoundError when the stream's model is not found, DecodeLimitError,
    TokenChecksumError, InputStreamError (a CodecError and an OSError) for a path
    that cannot be opened, and TypeError for any other kind of `data`.
    Concatenated streams (`cat a.igpt b.igpt`) decode as one: every image of each.
    """
    max_images = (limits or DecodeLimits()).max_images
    records = []
    with open_records(data, limits) as reader:
        for record in reader:
            records.append(record)
            if len(records) > max_images:  # before holding the whole stream in memory
                raise DecodeLimitError(
                    f"the stream holds more than {max_images} images (the decoder's limit; "
                    "raise DecodeLimits.max_images to decode it)"
                )
    return decode_records(records, model=model, threads=threads, progress=progress, limits=limits)


def decode_records(
    records: Iterable[AnyRecord],
    model: ModelSpec = None,
    threads: int | None = None,
    progress: Progress | None = None,
    limits: DecodeLimits | None = None,
) -> list[DecodedImage]:
    """Decode records already read from a stream (e.g. after showing `info`).

    Returns a list of DecodedImage; raises as `decompress`.
    """
    decoded = iter_decode(records, model=model, threads=threads, progress=progress, limits=limits)
    return list(decoded)


def iter_decode(
    records: Iterable[AnyRecord],
    model: ModelSpec = None,
    threads: int | None = None,
    progress: Progress | None = None,
    limits: DecodeLimits | None = None,
) -> Iterator[DecodedImage]:
    """Decode records as they arrive. The model is found by each record's fingerprint.

    A sequence is checked whole before decoding; a lazy iterator is read a window
    of records at a time, so memory stays bounded on any stream length. Records of
    concatenated streams may name different models: each run of records under one
    fingerprint is decoded with its bundle, under what is left of `limits`, with
    `progress` counting on across runs. Yields DecodedImage; raises as `decompress`.
    """
    budget = limits or DecodeLimits()
    done_images = done_tokens = done_work = 0
    for fingerprint, run in itertools.groupby(records, key=lambda r: r.header.fingerprint):
        bundle = find_bundle(fingerprint, model)
        left = dataclasses.replace(
            budget,
            max_images=budget.max_images - done_images,
            max_tokens=budget.max_tokens - done_tokens,
            max_work=budget.max_work - done_work,
        )
        start = done_tokens
        report = None if progress is None else _offset_progress(progress, start)
        # A sequence stays one (admitted whole before any model work); a lazy run is used
        # once, as it comes.
        batch: Iterable[AnyRecord] = list(run) if isinstance(records, Sequence) else run  # noqa: B031
        work = WorkTally()  # carried across runs, as images and tokens are
        batch = work.watch(batch)
        for item in decode(batch, bundle, threads=threads, progress=report, limits=left):
            done_images += 1
            done_tokens += token_count(item)
            yield _to_decoded(item, bundle)
        done_work += work.total


def _offset_progress(progress: Progress, start: int) -> Progress:
    """Progress of one run of records, counted on from the runs before it."""
    if not start:
        return progress
    return lambda done, total: progress(start + done, None if total is None else start + total)


def iter_decompress(
    data: StreamSource,
    model: ModelSpec = None,
    threads: int | None = None,
    progress: Progress | None = None,
    limits: DecodeLimits | None = None,
) -> Iterator[DecodedImage]:
    """Images as their records arrive (pipes), a window of records at a time.

    Accepts what `decompress` accepts and yields DecodedImage. Raises what
    `decompress` raises, each when the iterator reaches it. Stream-level checks
    (final record, end marker, record count) run when the stream is exhausted;
    consume the iterator to the end before trusting it.
    """
    with open_records(data, limits) as records:
        yield from iter_decode(
            records, model=model, threads=threads, progress=progress, limits=limits
        )


@contextlib.contextmanager
def open_records(
    data: StreamSource, limits: DecodeLimits | None = None
) -> Iterator[Iterator[AnyRecord]]:
    """The records of a stream given as a path, bytes or binary file object, read lazily.

    A path is opened here and closed on exit; a regular file's size bounds every
    length field before it is read. `limits` refuse a full-resolution image from its
    header, before its segment records are read. Raises TypeError for any other kind
    of input.
    """
    check = functools.partial(check_image_header, limits=limits or DecodeLimits())
    iter_records = functools.partial(_iter_records, on_image=check)
    if isinstance(data, bytes | bytearray | memoryview):
        raw = bytes(data)
        yield iter_records(io.BytesIO(raw), length=len(raw))
    elif isinstance(data, str | os.PathLike):
        try:
            handle = open(Path(data), "rb")  # noqa: SIM115 (closed below)
        except OSError as exc:
            raise InputStreamError(exc.errno, exc.strerror, os.fspath(data)) from None
        with handle:
            yield iter_records(handle, length=regular_file_size(handle))
    elif hasattr(data, "read"):
        yield iter_records(data)  # type: ignore[arg-type]
    else:
        raise TypeError(
            "expected a path, bytes or a binary file object holding an IGP stream, "
            f"not {type(data).__name__}"
        )


def _thumbnail_size(size: int | None, full: bool) -> int:
    """The side to code thumbnails at; a size given with full=True would be ignored, so it
    is refused."""
    if full and size is not None:
        raise ValueError(
            f"size={size} is a thumbnail's side: full=True codes each photo at its own size "
            "(drop size)"
        )
    return DEFAULT_SIZE if size is None else size


def _full_chains(chains: int | None, full: bool) -> None:
    """Check `chains` before any input is opened: at least 1, and only with full=True
    (thumbnails have no chains, so it would be ignored)."""
    check_chains(chains)
    if chains is not None and not full:
        raise ValueError(
            f"chains={chains} sets a full-resolution image's layout: it needs full=True "
            "(thumbnails have no chains)"
        )


def _tokenize_all(
    images: Images, bundle: Bundle, size: int, names: bool = False, full: bool = False
) -> list[AnyImage]:
    items = as_image_list(images)
    if not items:
        raise ValueError("no images to compress")
    return tokenize(items, bundle, size, names, full)


def _stream_writer(fileobj: BinaryIO, bundle: Bundle) -> StreamWriter:
    """The one place a stream writer is made (the container's header may name the model)."""
    del bundle  # the writer takes the fingerprint from the first record
    return StreamWriter(fileobj)


def _to_decoded(item: AnyImage, bundle: Bundle) -> DecodedImage:
    if isinstance(item, FullImage):
        return DecodedImage(
            image=Image.fromarray(grid_to_rgb(item.tokens, bundle.palette)),
            tokens=item.tokens,
            original_size=(item.width, item.height),
            original_mode=item.mode,
            name=item.name,
            full=True,
        )
    return DecodedImage(
        image=tokens_to_image(item.tokens, bundle.palette, item.side),
        tokens=item.tokens,
        original_size=(item.width, item.height),
        original_mode=item.mode,
        name=item.name,
    )


class _CountingWriter:
    """Passes writes through and counts the bytes, for the summary's stream size."""

    def __init__(self, fileobj: BinaryIO) -> None:
        self._file = fileobj
        self.written = 0

    def write(self, data: bytes) -> int:
        self._file.write(data)
        self.written += len(data)
        return len(data)

    def flush(self) -> None:
        flush = getattr(self._file, "flush", None)
        if flush is not None:
            flush()
