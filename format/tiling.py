"""How a full-resolution image is cut into model windows, and in which order its tokens
are coded (kinds 3 and 4; format/SPEC.md, "Full-resolution images").

This is part of the format, not of the model: the reader needs it to know how many
segment records follow an image header, and the decoder must visit tokens in exactly
the encoder's order. It is pure integer arithmetic on the header's fields.

Layout. The model sees a `grid` x `grid` window (ImageGPT: 32 x 32 positions). Windows
sit side by side in columns `grid` wide; the last column is narrower and its missing
cells are padding (the row's last real token repeated), fed to the model but not
coded. Rows of windows ("bands") overlap: every band after the first starts
`context_rows` above its first coded row, so the model sees the real rows above each
coded token, fed but not coded; the last band is moved up to end at the image's
bottom edge, which gives it more context rows. Windows of one band do not depend on
each other, so a decoder steps all of them together, cell by cell (batched), and each
band needs only the rows above it. A window has no left context: that buys a batch as
wide as the image instead of a wavefront (measured in docs/full-resolution.md).

Order. A band's windows are grouped, left to right, into groups of at most
`segment_windows`. The groups at one position of every band form a *chain*: a group
depends only on the group above it. Each segment record has its own range coder and
holds either one group of one band (the first full-resolution files) or, with
`chain_segments`, a whole chain, band after band: one record per chain, so a small
image does not pay a record's framing and a coder flush for every band. Within a
band the coded tokens are interleaved cell-major: for each cell of the window in
raster order, for each window of the group left to right, the token if the cell is
coded there.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MAX_CONTEXT_ROWS = 24
"""Largest number of context rows a header may give (it must stay below the window)."""


@dataclass(frozen=True)
class Band:
    """One row of windows: its first image row, the window rows already known, its height."""

    top: int
    known: int
    rows: int

    @property
    def coded_rows(self) -> int:
        return self.rows - self.known


@dataclass(frozen=True)
class Tiling:
    """The window layout of a width x height image under a grid x grid model."""

    width: int
    height: int
    grid: int
    context_rows: int
    segment_windows: int
    chain_segments: bool = False
    """One segment record per chain (spanning every band) instead of one per band and group."""

    def __post_init__(self) -> None:
        for name in ("width", "height", "grid", "segment_windows"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not 0 <= self.context_rows <= MAX_CONTEXT_ROWS or self.context_rows >= self.grid:
            raise ValueError(
                f"context rows must be 0..{min(MAX_CONTEXT_ROWS, self.grid - 1)}, "
                f"got {self.context_rows}"
            )

    @property
    def window_width(self) -> int:
        return min(self.grid, self.width)

    @property
    def window_height(self) -> int:
        return min(self.grid, self.height)

    @property
    def columns(self) -> list[int]:
        """The first image column of every window of a band."""
        return list(range(0, self.width, self.window_width))

    def bands(self) -> list[Band]:
        """Every band, top to bottom; their coded rows tile the image exactly once."""
        rows = self.window_height
        bands = [Band(0, 0, rows)]
        start = rows
        while start < self.height:
            top = min(start - self.context_rows, self.height - rows)
            bands.append(Band(top, start - top, rows))
            start = top + rows
        return bands

    def segments(self) -> list[list[int]]:
        """Window column indices of each group of a band (a chain's share of the band)."""
        count = len(self.columns)
        step = self.segment_windows
        return [list(range(i, min(i + step, count))) for i in range(0, count, step)]

    @property
    def record_count(self) -> int:
        """Segment records that follow the image header."""
        groups = len(self.segments())
        return groups if self.chain_segments else len(self.bands()) * groups

    def segment_index(self, band_number: int, group: int) -> int:
        """The segment record that holds a band's group (its chain's, with chain_segments)."""
        return group if self.chain_segments else band_number * len(self.segments()) + group

    def real_width(self, column: int) -> int:
        """Real (not padding) cells in each row of a window of this column: window_width,
        or fewer in the narrow last column."""
        return min(self.window_width, self.width - self.columns[column])

    def cell_positions(self) -> np.ndarray:
        """The model position of each window cell, raster order: row * grid + col."""
        rows, cols = np.divmod(
            np.arange(self.window_height * self.window_width, dtype=np.int64), self.window_width
        )
        return rows * self.grid + cols

    def window_tokens(self, image: np.ndarray, band: Band, column: int) -> np.ndarray:
        """The cells of one window as a [rows, window_width] array, padding filled in."""
        x0 = self.columns[column]
        real = self.real_width(column)
        cells = np.empty((band.rows, self.window_width), dtype=image.dtype)
        cells[:, :real] = image[band.top : band.top + band.rows, x0 : x0 + real]
        fill_padding(cells, real)
        return cells

    def coded_mask(self, band: Band, column: int) -> np.ndarray:
        """True for the cells of one window that the record codes (not context, not padding)."""
        real = self.real_width(column)
        mask = np.zeros((band.rows, self.window_width), dtype=bool)
        mask[band.known :, :real] = True
        return mask


def fill_padding(rows: np.ndarray, real: int) -> None:
    """The padding rule (SPEC.md, "Layout"), in place: every cell of `rows` [..., width]
    right of its first `real` cells becomes the row's last real token. The one copy of the
    rule: the encoder applies it to whole windows, the decoder to each row as soon as the
    row's last real token is decoded."""
    rows[..., real:] = rows[..., real - 1 : real]
