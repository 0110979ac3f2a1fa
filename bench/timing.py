"""Small timing helpers shared by the sections.

Medians, not means: on a shared two-core machine a competing process adds
long outliers to a few runs, and the median ignores them where a mean would not.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

_T = TypeVar("_T")


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def timed(fn: Callable[[], _T]) -> tuple[_T, float]:
    """(fn(), seconds it took)."""
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


class SectionClock:
    """Wall seconds per benchmark section, for results.json (and for planning run time)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._start = time.perf_counter()

    def lap(self, name: str, since: float) -> None:
        self.seconds[name] = round(time.perf_counter() - since, 3)

    def total(self) -> float:
        return round(time.perf_counter() - self._start, 3)
