"""The mixer of each full-resolution coding, behind one interface (format/SPEC.md, "Coding 2"
and "Coding 3").

Why: the codings are nested. Coding 0 codes the model's tables as they are, coding 2
refines them with adaptive.py's three levels, and coding 3 refines coding 2's output with
match.py's six longer-reach levels. So a coding's mixer is a chain of *stages*, and each
coding's chain is a prefix of the next one's. The pipelines ask `mixer_for(coding)` and
never learn which contexts a stage reads. The encoder can also code several codings side
by side in one pass over the model (`Chain.stage_tables`): every stage's output is the
table of the coding that ends there.

A stage sees one cell step: the model's (or the previous stage's) tables of the windows
that code the cell, the cells of every window of the group [B, rows * width] (only cells
before `cell` are read: both sides know them), the cell, the window width, and which
windows are live (None: all). Its tables come from the state before the step; `update`
learns the step's symbols afterwards, in the same order on both sides.

Core layer: numpy, adaptive.py, match.py and format's coding ids only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from igpt_codec.core.adaptive import AdaptiveMixer, window_neighbours
from igpt_codec.core.linear import LinearMixer
from igpt_codec.core.match import DEFAULT_LEVELS, MatchMixer, window_template
from igpt_codec.format.records import CODING_ADAPTIVE, CODING_EXACT, CODING_MATCH

Live = Sequence[int] | np.ndarray | None
"""The windows of the group that code the cell (indexes into `cells`), or None for all."""


class Stage(Protocol):
    """One stage of a coding's mixer: tables for one cell step, then the step's symbols."""

    def tables(
        self, table: np.ndarray, cells: np.ndarray, cell: int, width: int, live: Live
    ) -> tuple[np.ndarray, Any]: ...

    def update(self, step: Any, symbols: np.ndarray) -> None: ...


def _live(rows: np.ndarray, live: Live) -> np.ndarray:
    return rows if live is None else rows[live]


class AdaptiveStage:
    """Coding 2's levels (adaptive.py): contexts of the four nearest neighbours."""

    def __init__(self) -> None:
        self.mixer = AdaptiveMixer()

    def tables(
        self, table: np.ndarray, cells: np.ndarray, cell: int, width: int, live: Live
    ) -> tuple[np.ndarray, Any]:
        return self.mixer.tables(table, _live(window_neighbours(cells, cell, width), live))

    def update(self, step: Any, symbols: np.ndarray) -> None:
        self.mixer.update(step, symbols)


class LinearStage(AdaptiveStage):
    """Coding 2's levels as one linear combination (linear.py; the kind-3 LINEAR feature):
    coding 2's contexts and state, a table of other roundings."""

    def __init__(self) -> None:
        self.mixer = LinearMixer()


class MatchStage:
    """Coding 3's extra levels (match.py's DEFAULT_LEVELS) over the 16-cell template."""

    def __init__(self) -> None:
        self.mixer = MatchMixer(DEFAULT_LEVELS)

    def tables(
        self, table: np.ndarray, cells: np.ndarray, cell: int, width: int, live: Live
    ) -> tuple[np.ndarray, Any]:
        template = window_template(cells, cell, width, self.mixer.size)
        return self.mixer.tables(table, _live(template, live))

    def update(self, step: Any, symbols: np.ndarray) -> None:
        self.mixer.update(step, symbols)


class Chain:
    """Stages applied in turn: each refines the previous one's tables."""

    def __init__(self, stages: Sequence[Stage]) -> None:
        if not stages:
            raise ValueError("a mixer chain needs at least one stage")
        self.stages = list(stages)

    def tables(
        self, table: np.ndarray, cells: np.ndarray, cell: int, width: int, live: Live = None
    ) -> tuple[np.ndarray, list[Any]]:
        """The last stage's tables [B, 512] for one step, and the step to pass to update()."""
        outs, steps = self.stage_tables(table, cells, cell, width, live)
        return outs[-1], steps

    def stage_tables(
        self,
        table: np.ndarray,
        cells: np.ndarray,
        cell: int,
        width: int,
        live: Live = None,
        stages: int | None = None,
    ) -> tuple[list[np.ndarray], list[Any]]:
        """Every stage's output for one step (the first `stages` stages only, when given:
        the encoder stops the later ones once their coding is out of the running)."""
        outs, steps = [], []
        for stage in self.stages[:stages]:
            table, step = stage.tables(table, cells, cell, width, live)
            outs.append(table)
            steps.append(step)
        return outs, steps

    def update(self, steps: list[Any], symbols: np.ndarray) -> None:
        """Learn one step's symbols in every stage that made tables for it."""
        for stage, step in zip(self.stages, steps, strict=False):
            stage.update(step, symbols)


STAGES_OF = {CODING_EXACT: 0, CODING_ADAPTIVE: 1, CODING_MATCH: 2}
"""How many stages of the full chain (adaptive, then match) each full-resolution coding
runs: coding 0 none (the model's tables as they are)."""


def mixer_for(coding: int, linear: bool = False) -> Chain | None:
    """The mixer a full-resolution image of this coding is coded with (None: coding 0, the
    model's tables as they are); `linear`: the header's LINEAR feature (coding 2's levels
    as one linear combination). A fresh state: one per chain of window groups."""
    if coding not in STAGES_OF:
        raise ValueError(f"coding {coding!r} does not code full-resolution images")
    if linear and not STAGES_OF[coding]:
        raise ValueError(f"coding {coding!r} has no levels to make linear")
    return chain_for(STAGES_OF[coding], linear)


def chain_for(stages: int, linear: bool = False) -> Chain | None:
    """The first `stages` stages of the full chain (coding 2's levels, in their linear form
    when `linear`, then coding 3's match levels), fresh."""
    if not 0 <= stages <= 2:
        raise ValueError(f"the mixer chain has 2 stages, not {stages}")
    makers = (LinearStage if linear else AdaptiveStage, MatchStage)[:stages]
    return Chain([make() for make in makers]) if makers else None
