"""Bounded memory for every operation whose size the user chooses.

Work is chunked so that a chunk's temporaries stay under a budget (``INTERP_MEMORY_MB``,
default 2048 MB); a single row that does not fit is refused up front with the estimate,
instead of letting the kernel kill the process.
"""

from __future__ import annotations

import os

from interp.errors import InputError, MemoryBudgetError

DEFAULT_MB = 2048


def budget_bytes() -> int:
    """The memory budget of one chunk of work, in bytes."""
    raw = os.environ.get("INTERP_MEMORY_MB", "").strip()
    try:
        mb = float(raw) if raw else DEFAULT_MB
    except ValueError:
        raise InputError(f"INTERP_MEMORY_MB must be a number of megabytes, got {raw!r}") from None
    if mb <= 0:
        raise InputError(f"INTERP_MEMORY_MB must be positive, got {raw!r}")
    return int(mb * 2**20)


def rows_per_chunk(bytes_per_row: float, what: str, given: int | None = None) -> int:
    """How many rows of ``bytes_per_row`` to process at once (``given`` if set, checked)."""
    budget = budget_bytes()
    if given is not None:
        if isinstance(given, bool) or not isinstance(given, int) or given < 1:
            raise InputError(f"batch_size must be a positive int, got {given!r}")
        if given * bytes_per_row > 4 * budget:
            raise MemoryBudgetError(
                f"{what}: batch_size={given} needs about {given * bytes_per_row / 2**20:.0f} MB at "
                f"once, over 4x the budget of {budget / 2**20:.0f} MB (INTERP_MEMORY_MB); use fewer"
            )
        return given
    if bytes_per_row > budget:
        raise MemoryBudgetError(
            f"{what}: one sequence needs about {bytes_per_row / 2**20:.0f} MB at once, over the budget "
            f"of {budget / 2**20:.0f} MB (set INTERP_MEMORY_MB higher, or use shorter sequences)"
        )
    return max(1, int(budget // max(bytes_per_row, 1)))


def check_total(n_bytes: float, what: str, factor: float = 8.0) -> None:
    """Refuses a result that would not fit in ``factor`` budgets (results that are kept, not chunked)."""
    budget = budget_bytes()
    if n_bytes > factor * budget:
        raise MemoryBudgetError(
            f"{what} would hold about {n_bytes / 2**20:.0f} MB, over {factor:g}x the memory budget "
            f"({budget / 2**20:.0f} MB, INTERP_MEMORY_MB); ask for less"
        )
