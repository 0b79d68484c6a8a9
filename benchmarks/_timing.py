"""What every benchmark here shares: the best wall-clock time of a few runs."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def best_of(fn: Callable[[], T], repeats: int = 1) -> tuple[T, float]:
    """``fn()``'s result and its fastest wall-clock time over ``repeats`` runs, in seconds."""
    best, out = float("inf"), None
    for _ in range(max(1, repeats)):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return out, best  # type: ignore[return-value]  # out is set: at least one run
