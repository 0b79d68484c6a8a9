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


#: the name suffix of the invisible click-target traces :func:`head_targets` adds
SELECT_SUFFIX = " (select)"


def head_targets(x, y, layers, heads, values, *, name: str, hover: str = "", size: int = 12):
    """An invisible scatter point per cell of a per-head figure (a heatmap cell, a bar), with
    ``customdata`` ``[layer, head, value]``: a click target for an app's point selection (plotly
    reports point clicks for scatter traces, not for heatmap cells).  x, y: the cells' axis
    coordinates (as the figure's axes read them); layers, heads, values: one per cell.  Named
    ``name + SELECT_SUFFIX``, so an app finds every head click target by its name."""
    import numpy as np
    import plotly.graph_objects as go

    layers, heads = np.asarray(layers, dtype=int).ravel(), np.asarray(heads, dtype=int).ravel()
    values = np.nan_to_num(np.asarray(values, dtype=float).ravel())
    return go.Scatter(
        x=list(x),
        y=list(y),
        customdata=np.stack([layers, heads, values], axis=-1).tolist(),  # plain JSON lists
        mode="markers",
        marker=dict(size=size, color="rgba(0,0,0,0)", symbol="square"),
        hovertemplate=(hover or name) + "<br>L%{customdata[0]}H%{customdata[1]}: %{customdata[2]:.3f}<extra></extra>",
        showlegend=False,
        name=name + SELECT_SUFFIX,
    )
