"""The one bootstrap of the reproduce entries: a 95% percentile interval over prompts, text
rows or seeds, never a single one.

``bootstrap(values)`` resamples the first axis with replacement ``n_boot`` times and returns
the statistic with its interval and sample size as an :class:`Estimate`; several arrays are
resampled together (paired: the same rows in each), so a ratio of two per-prompt means, or
a difference of two conditions measured on the same prompts, keeps its pairing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from interp.errors import InputError

LEVEL = 0.95
N_BOOT = 2000


@dataclass(frozen=True)
class Estimate:
    """A statistic with its bootstrap interval: ``value`` (on all ``n`` samples), ``low`` /
    ``high`` (the ``level`` percentile interval), ``n`` (samples: prompts, rows or seeds),
    ``unit`` (what they are)."""

    value: float
    low: float
    high: float
    n: int
    unit: str = "prompts"
    level: float = LEVEL

    def to_dict(self) -> dict:
        return asdict(self)

    def excludes(self, x: float) -> bool:
        """Whether the interval lies wholly on one side of ``x``."""
        return self.low > x or self.high < x

    def above(self, x: float) -> bool:
        return self.low > x

    def below(self, x: float) -> bool:
        return self.high < x

    def __str__(self) -> str:
        return f"{self.value:.4g} [{self.low:.4g}, {self.high:.4g}] (n={self.n} {self.unit})"


def bootstrap(
    values: np.ndarray | Sequence[float] | Sequence[np.ndarray],
    stat: Callable[..., float] | None = None,
    *,
    n_boot: int = N_BOOT,
    seed: int = 0,
    level: float = LEVEL,
    unit: str = "prompts",
) -> Estimate:
    """``stat`` of ``values`` with a percentile bootstrap interval over their first axis.

    values: one array ``[n, ...]`` (e.g. a per-prompt measurement), or a tuple / list of
    arrays with the same first axis, resampled together (paired).  stat: ``fn(*arrays) ->
    float`` of the (resampled) arrays; default the mean of the one array.  Needs n >= 2
    samples: a finding never rests on one prompt or seed.  Non-finite statistics of a
    resample (e.g. a ratio with a zero denominator) are dropped; if more than half are, the
    interval is reported as infinite.
    """
    arrays = [np.asarray(v, dtype=float) for v in values] if isinstance(values, tuple) else None
    if arrays is None:
        arrays = [np.asarray(values, dtype=float)]
    n = arrays[0].shape[0] if arrays[0].ndim else 0
    if any(a.ndim == 0 or a.shape[0] != n for a in arrays):
        raise InputError(f"bootstrap needs arrays with the same first axis, got shapes {[a.shape for a in arrays]}")
    if n < 2:
        raise InputError(f"a bootstrap interval needs at least 2 {unit}, got {n}")
    if not 0 < level < 1:
        raise InputError(f"level must be in (0, 1), got {level}")
    if stat is None:
        if len(arrays) != 1:
            raise InputError("give stat= for several arrays")
        stat = lambda a: float(np.mean(a))
    value = float(stat(*arrays))
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(int(n_boot), n))
    draws = np.array([stat(*(a[i] for a in arrays)) for i in idx], dtype=float)
    finite = draws[np.isfinite(draws)]
    if len(finite) < len(draws) / 2:
        return Estimate(value, -np.inf, np.inf, n, unit, level)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(finite, [tail, 100 - tail])
    return Estimate(value, float(low), float(high), n, unit, level)
