"""Pillow plugin: `import igpt_codec.pillow` registers the IGPT format with Pillow.

    import igpt_codec.pillow
    from PIL import Image

    with Image.open("photo.igpt") as im:      # the first image: the N x N thumbnail, RGB
        im.load()
        print(im.info["original_size"])       # what the photo measured
        if im.n_frames > 1:
            im.seek(1)                         # further images of a multi-image stream
    Image.open("photo.jpg").save("photo.igpt", size=32)        # one image
    first.save("all.igpt", save_all=True, append_images=rest)  # several, one stream

What Pillow sees is the coded palette thumbnail, exactly as coded; the original
photo is not in the file (its size and mode are in `im.info`). Opening reads
and checks the whole stream (frame count, CRCs) but runs no model; the first
`load()` decodes every frame at once (the model runs them in batches). The
model is found by the fingerprint the stream names (`igpt_codec.runtime.search`); set
`igpt_codec.pillow.MODEL` to a bundle directory to try it first, `igpt_codec.pillow.LIMITS`
(codec.DecodeLimits) to bound what an untrusted file may ask for. Save options:
`size` (side N, 1..32, default 32), `full` (True: the palette image at the
picture's own size instead of a thumbnail, pixel for pixel in the 512 colours, not
the picture; a `size` with it is a ValueError; `im.info["full_resolution"]` says
which a frame is), `model` (bundle directory, default `igpt_codec.pillow.MODEL` or the shipped
bundle) and `threads`.

Errors are the codec's own: a damaged stream raises its FormatError subclass
from `Image.open`, a missing model `ModelNotFoundError` from `load()`.
"""

from __future__ import annotations

import functools
import os
from typing import IO, Any

from PIL import Image, ImageFile, ImageSequence

import igpt_codec.format as _format
from igpt_codec.api import DecodedImage, compress_to, decode_records
from igpt_codec.format import DecodeLimitError, EmptyStreamError, iter_records
from igpt_codec.pipelines.limits import check_image_header
from igpt_codec.pipelines.stream import DecodeLimits

FORMAT = "IGPT"
EXTENSION = ".igpt"
MIME = "image/x-igpt"
MAGIC: bytes = _format.MAGIC

MODEL: str | os.PathLike[str] | None = None
"""A bundle directory tried before the search path when decoding, and used when saving."""
THREADS: int | None = None
"""onnxruntime intra-op threads for decoding and saving (None: onnxruntime's default)."""
LIMITS: DecodeLimits | None = None
"""What a stream may ask of the decoder (None: the decoder's defaults, which the
IGPT_CODEC_MAX_* environment variables set): images and each full-resolution header are
checked on open, as each is read; the rest when `load()` decodes."""


def _accept(prefix: bytes) -> bool:
    return prefix[: len(MAGIC)] == MAGIC


class IgptImageFile(ImageFile.ImageFile):
    """An IGP stream as a (multi-frame) Pillow image; each frame is one coded thumbnail."""

    format = FORMAT
    format_description = "igpt-codec stream (ImageGPT palette thumbnails)"
    _close_exclusive_fp_after_loading = False

    def _open(self) -> None:
        assert self.fp is not None
        limits = LIMITS or DecodeLimits()
        max_images = limits.max_images
        records = []
        # Each full-resolution header is checked as it is parsed, before its segment
        # records are read (issue 26: a header may ask for millions of them).
        check = functools.partial(check_image_header, limits=limits)
        for record in iter_records(self.fp, on_image=check):
            records.append(record)
            if len(records) > max_images:
                raise DecodeLimitError(
                    f"the stream holds more than {max_images} images (igpt_codec.pillow.LIMITS)"
                )
        if not records:
            raise EmptyStreamError("the stream holds no image this version can decode")
        self._records = records
        self._decoded: list[DecodedImage] | None = None
        self._frame = 0
        self._loaded_frame = -1
        self.n_frames = len(records)
        self.is_animated = self.n_frames > 1
        self._mode = "RGB"
        self._describe_frame()

    def _describe_frame(self) -> None:
        head = self._records[self._frame].header
        full = getattr(head, "grid", None) is not None  # a full-resolution record (kind 3)
        self._size = (head.width, head.height) if full else (head.side, head.side)
        self.info["full_resolution"] = full
        self.info["original_size"] = (head.width, head.height)
        self.info["original_mode"] = head.mode
        self.info["fingerprint"] = head.fingerprint.hex()
        self.tile = []

    def seek(self, frame: int) -> None:
        if not self._seek_check(frame):
            return
        self._frame = frame
        self._im = None
        self._describe_frame()

    def tell(self) -> int:
        return self._frame

    def load(self) -> Any:
        if self._decoded is None:
            self._decoded = decode_records(
                self._records, model=MODEL, threads=THREADS, limits=LIMITS
            )
        if self._im is None or self._loaded_frame != self._frame:
            self.im = self._decoded[self._frame].image.copy().im
            self._loaded_frame = self._frame
        return Image.Image.load(self)


def _options(im: Image.Image) -> dict[str, Any]:
    """Save options; `size` or `chains` without the layout they belong to is refused
    (ValueError), not ignored."""
    info = im.encoderinfo
    size = info.get("size")
    chains = info.get("chains")
    return {
        "model": info.get("model", MODEL),
        "size": None if size is None else int(size),
        "threads": info.get("threads", THREADS),
        "full": bool(info.get("full", False)),
        "chains": None if chains is None else int(chains),
    }


def _save(im: Image.Image, fp: IO[bytes], filename: str | bytes) -> None:
    """One image, one stream."""
    im.load()
    compress_to(fp, im.copy(), **_options(im))  # type: ignore[arg-type]


def _save_all(im: Image.Image, fp: IO[bytes], filename: str | bytes) -> None:
    """Every frame of `im`, then every frame of each `append_images` item, in one stream."""
    frames = []
    for source in [im, *im.encoderinfo.get("append_images", [])]:
        frames.extend(frame.copy() for frame in ImageSequence.Iterator(source))
    compress_to(fp, frames, **_options(im))  # type: ignore[arg-type]


Image.register_open(FORMAT, IgptImageFile, _accept)
Image.register_save(FORMAT, _save)
Image.register_save_all(FORMAT, _save_all)
Image.register_extension(FORMAT, EXTENSION)
Image.register_mime(FORMAT, MIME)
