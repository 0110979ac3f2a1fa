"""The public Python API: images in, an IGP stream out, and back.

Thin glue over the one-way pipeline: `codec.images` opens inputs, `codec.palette`
tokenizes them, `codec.pipeline` codes tokens into records, `format` frames them.
`model` may be a bundle directory, an already loaded `Bundle` (saves re-hashing
and lets callers share one), or None for the bundle shipped with the package.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np
from PIL import Image

from codec.bundle import Bundle, load_bundle
from codec.images import ImageSource, LoadedImage, load_image
from codec.palette import image_to_tokens, tokens_to_image
from codec.pipeline import Progress, TokenImage, check_side, decode, encode
from format.container import StreamWriter, iter_records, unpack_stream
from format.records import Record

ModelSpec = str | os.PathLike[str] | Bundle | None
ImageInput = ImageSource | LoadedImage

DEFAULT_SIZE = 32
"""ImageGPT's own resolution: 32x32 = 1024 tokens, the model's full context."""


@dataclass(frozen=True)
class DecodedImage:
    """One decoded record: the coded side x side picture and what the original was."""

    image: Image.Image
    tokens: np.ndarray
    original_size: tuple[int, int]
    original_mode: str

    @property
    def side(self) -> int:
        return self.image.width

    def to_original_size(self) -> Image.Image:
        """The coded picture scaled (bilinear, RGB) to the original's width and height.

        Only the thumbnail is lossless; this is a convenience view, not the original.
        """
        return self.image.resize(self.original_size, resample=Image.Resampling.BILINEAR)


@dataclass(frozen=True)
class CompressSummary:
    """What a compression cost, for the CLI's one-line report."""

    images: int
    tokens: int
    stream_bytes: int
    payload_bytes: int
    ideal_bits: float

    @property
    def bits_per_token(self) -> float:
        """Whole stream, container included."""
        return 8 * self.stream_bytes / self.tokens

    @property
    def payload_bits_per_token(self) -> float:
        return 8 * self.payload_bytes / self.tokens

    @property
    def ideal_bits_per_token(self) -> float:
        """The model's own -log2 p per token: what a perfect coder would pay."""
        return self.ideal_bits / self.tokens

    @property
    def ratio(self) -> float:
        """24-bit RGB of the coded side x side images over the stream size."""
        return 24 * self.tokens / (8 * self.stream_bytes)


def resolve_bundle(model: ModelSpec) -> Bundle:
    """A Bundle as given, or loaded (and verified) from its directory or the default."""
    return model if isinstance(model, Bundle) else load_bundle(model)


def tokenize(images: Iterable[ImageInput], bundle: Bundle, size: int) -> list[TokenImage]:
    """Open and tokenize every input before any model time is spent, so a bad file fails
    fast; each full-size picture is dropped as soon as its tokens exist."""
    check_side(size, bundle)
    result = []
    for item in images:
        loaded = item if isinstance(item, LoadedImage) else load_image(item)
        tokens = image_to_tokens(loaded.rgb, bundle.palette, size)
        result.append(TokenImage(tokens, size, loaded.width, loaded.height, loaded.mode))
    return result


def compress_to(
    fileobj: BinaryIO,
    images: Sequence[ImageInput],
    model: ModelSpec = None,
    size: int = DEFAULT_SIZE,
    threads: int | None = None,
    progress: Progress | None = None,
) -> CompressSummary:
    """Write one stream with a record per image to `fileobj`, record by record.

    On failure the end marker is not written, so what was written reads as truncated.
    """
    if not images:
        raise ValueError("no images to compress")
    bundle = resolve_bundle(model)
    token_images = tokenize(images, bundle, size)
    counting = _CountingWriter(fileobj)
    payload_bytes = 0
    ideal_bits = 0.0
    with StreamWriter(counting) as writer:
        for encoded in encode(token_images, bundle, threads=threads, progress=progress):
            writer.write_record(encoded.record)
            payload_bytes += len(encoded.record.payload)
            ideal_bits += encoded.ideal_bits
    return CompressSummary(
        images=len(token_images),
        tokens=sum(item.side**2 for item in token_images),
        stream_bytes=counting.written,
        payload_bytes=payload_bytes,
        ideal_bits=ideal_bits,
    )


def compress(
    images: Sequence[ImageInput],
    model: ModelSpec = None,
    size: int = DEFAULT_SIZE,
    threads: int | None = None,
) -> bytes:
    """One IGP stream holding a record per image, in order."""
    buffer = io.BytesIO()
    compress_to(buffer, images, model=model, size=size, threads=threads)
    return buffer.getvalue()


def decompress(
    data: bytes | BinaryIO,
    model: ModelSpec = None,
    threads: int | None = None,
    progress: Progress | None = None,
) -> list[DecodedImage]:
    """Every image of a stream; the whole stream is validated before any decoding."""
    if isinstance(data, bytes | bytearray | memoryview):
        records = unpack_stream(bytes(data))
    else:
        records = list(iter_records(data))
    return decode_records(records, model=model, threads=threads, progress=progress)


def decode_records(
    records: Sequence[Record],
    model: ModelSpec = None,
    threads: int | None = None,
    progress: Progress | None = None,
) -> list[DecodedImage]:
    """Decode records already read from a stream (e.g. after showing `info`)."""
    bundle = resolve_bundle(model)
    decoded = decode(records, bundle, threads=threads, progress=progress)
    return [_to_decoded(item, bundle) for item in decoded]


def iter_decompress(
    fileobj: BinaryIO,
    model: ModelSpec = None,
    threads: int | None = None,
    progress: Progress | None = None,
) -> Iterator[DecodedImage]:
    """Images as their records arrive (pipes), a window of records at a time.

    Stream-level checks (final record, end marker, record count) run when the
    stream is exhausted; consume the iterator to the end before trusting it.
    """
    bundle = resolve_bundle(model)
    for item in decode(iter_records(fileobj), bundle, threads=threads, progress=progress):
        yield _to_decoded(item, bundle)


def _to_decoded(item: TokenImage, bundle: Bundle) -> DecodedImage:
    return DecodedImage(
        image=tokens_to_image(item.tokens, bundle.palette, item.side),
        tokens=item.tokens,
        original_size=(item.width, item.height),
        original_mode=item.mode,
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
