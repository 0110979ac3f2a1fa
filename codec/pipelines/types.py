"""The values the pipelines pass around: images as tokens, coded records, progress.

One module so the thumbnail coder, the full-resolution coder and the stream dispatch
share one definition of each, and the union types (AnyImage, AnyRecord) say what the
dispatch really yields.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from igpt_codec.format.classical import ClassicalImageRecord
from igpt_codec.format.records import FullImageRecord, Record

Progress = Callable[[int, int | None], None]
"""progress(tokens_done, tokens_total or None when the total is not known yet)."""


@dataclass(frozen=True)
class TokenImage:
    """One image as palette tokens, with the geometry the container records."""

    tokens: np.ndarray
    side: int
    width: int
    height: int
    mode: str
    name: str | None = None
    """The original file name, stored only when asked (compress --names)."""


@dataclass(frozen=True)
class FullImage:
    """A palette image at its own size, with what the container records about it."""

    tokens: np.ndarray
    """uint16 [height, width] palette indices."""
    mode: str
    name: str | None = None

    @property
    def height(self) -> int:
        return int(self.tokens.shape[0])

    @property
    def width(self) -> int:
        return int(self.tokens.shape[1])


AnyImage = TokenImage | FullImage
"""A thumbnail (side x side tokens) or a full-resolution palette image."""
AnyRecord = Record | FullImageRecord | ClassicalImageRecord
"""A thumbnail record, a full-resolution image's header with its segments, or a
full-resolution image stored as a classical file (kinds 5 and 6)."""


@dataclass(frozen=True)
class EncodedImage:
    """A coded record and the model's ideal cost of its tokens, in bits (reporting only)."""

    record: AnyRecord
    ideal_bits: float

    @property
    def payload_bytes(self) -> int:
        if isinstance(self.record, FullImageRecord):
            return sum(len(segment.payload) for segment in self.record.segments)
        if isinstance(self.record, ClassicalImageRecord):
            return len(self.record.data)
        return len(self.record.payload)


def token_count(image: AnyImage) -> int:
    return int(image.tokens.size)


class TokenCounter:
    """Tokens done across batches, reported through the optional callback. (A
    full-resolution image's worker threads report through fullres's own locked counter,
    which calls advance_to from one thread at a time.)"""

    def __init__(self, total: int | None, progress: Progress | None) -> None:
        self.total = total
        self.done = 0
        self._progress = progress

    def advance(self, n: int) -> None:
        self.advance_to(self.done + n)

    def advance_to(self, done: int) -> None:
        self.done = done
        if self._progress is not None:
            self._progress(self.done, self.total)
