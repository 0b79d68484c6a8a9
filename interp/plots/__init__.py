"""Plot functions: take the DataFrames the analyses return (or their :class:`interp.runs.Result`,
whose meta titles the figure), give plotly figures."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from interp.errors import InputError


def unpack(x) -> tuple[pd.DataFrame, dict]:
    """A plot's input as ``(frame, meta)``: a DataFrame (no meta) or an
    :class:`interp.runs.Result` (its frame and the context the analysis recorded)."""
    from interp.runs.result import parts

    return parts(x)


def require(frame: pd.DataFrame, columns: Sequence[str], what: str, hint: str = "") -> None:
    """Raises a ValueError naming the missing ``columns`` (and ``hint``: where such a frame
    comes from) if ``frame`` lacks any of them or is empty."""
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise InputError(
            f"{what} needs a frame with columns {list(columns)}; missing {missing}" + (f" ({hint})" if hint else "")
        )
    if frame.empty:
        raise InputError(f"{what}: the frame is empty")
