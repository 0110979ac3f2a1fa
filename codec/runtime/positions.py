"""Which learned position each token of an N x N image is given.

ImageGPT learns one embedding per position of a 32 x 32 raster (1024 positions),
so position p's neighbour above is p - 32. A smaller image fed as positions
0..N²-1 ("raster") breaks that: its neighbour above sits N positions back, a
relation the model never saw. "grid" gives token (row, col) the position
row * 32 + col, so every image, whatever its side, sits in the top-left corner
of the grid the model knows. The bundle manifest names its layout; the runner
feeds the positions to the graph as an input, so one graph serves both.
"""

from __future__ import annotations

import math

import numpy as np

RASTER = "raster"
GRID = "grid"
LAYOUTS = (RASTER, GRID)


def positions(side: int, layout: str, n_positions: int = 1024) -> np.ndarray:
    """Position ids (int64, length side²) of the tokens of a side x side image, raster order."""
    grid_width = math.isqrt(n_positions)
    if not 1 <= side <= grid_width:
        raise ValueError(f"side must be 1..{grid_width}, got {side}")
    if layout == RASTER:
        return np.arange(side * side, dtype=np.int64)
    if layout == GRID:
        rows, cols = np.divmod(np.arange(side * side, dtype=np.int64), side)
        return rows * grid_width + cols
    raise ValueError(f"unknown position layout {layout!r}; expected one of {LAYOUTS}")
