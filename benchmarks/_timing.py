"""What every benchmark here shares: the best wall-clock time of a few runs, and the checks
that make a benchmark fail (exit status 1) when a target or an equality is missed, so that
``make bench`` stops at the first regression.

``INTERP_BENCH_TARGET_SCALE`` (default 1) multiplies every speed target: the test suite sets it
to an impossible value to prove that a missed target fails the run.
"""

from __future__ import annotations

import os
import sys
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


class Checks:
    """The targets and equality checks of one benchmark run.  Each check prints one line
    (``PASS`` / ``FAIL``); :meth:`finish` exits with status 1 if any failed."""

    def __init__(self) -> None:
        self.failed: list[str] = []
        self.scale = float(os.environ.get("INTERP_BENCH_TARGET_SCALE", "1") or 1)

    def _report(self, ok: bool, text: str) -> bool:
        print(f"  {'PASS' if ok else 'FAIL'}: {text}", flush=True)
        if not ok:
            self.failed.append(text)
        return ok

    def at_least(self, what: str, value: float, target: float, unit: str = "x") -> bool:
        """A speed-up (or any larger-is-better number) of at least ``target``."""
        target = target * self.scale
        return self._report(value >= target, f"{what} {value:.3g}{unit} (target >= {target:.3g}{unit})")

    def at_most(self, what: str, value: float, limit: float, unit: str = " s") -> bool:
        """A time (or any smaller-is-better number) of at most ``limit``."""
        limit = limit / self.scale
        return self._report(value <= limit, f"{what} {value:.3g}{unit} (target <= {limit:.3g}{unit})")

    def close(self, what: str, diff: float, tol: float) -> bool:
        """Two results equal up to ``tol`` (largest absolute difference ``diff``); not scaled."""
        return self._report(diff <= tol, f"{what}: max |difference| {diff:.2e} (tolerance {tol:.0e})")

    def holds(self, what: str, ok: bool) -> bool:
        """A claim the benchmark also checks (identical tokens, a finding reproduced); not scaled."""
        return self._report(bool(ok), what)

    def finish(self) -> None:
        if self.failed:
            print(f"{len(self.failed)} check(s) failed: " + "; ".join(self.failed), flush=True)
            sys.exit(1)
        print("all checks passed", flush=True)
