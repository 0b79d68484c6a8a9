"""Figures of retrieval experiments: the needle-in-a-haystack accuracy grid."""

from __future__ import annotations

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from interp.plots import require, unpack


def niah_heatmap(frame, *, title: str | None = None) -> go.Figure:
    """Answer accuracy over needle depth (rows) x context length (columns), one panel per
    condition (a frame from :func:`interp.retrieval.niah_grid`)."""
    frame, _ = unpack(frame)
    require(
        frame, ["context_length", "depth", "condition", "accuracy"], "niah_heatmap", "from interp.retrieval.niah_grid"
    )
    conditions = list(dict.fromkeys(frame["condition"]))
    titles = {"none": "unmasked", "masked": "retrieval heads masked", "random": "random heads masked (mean of draws)"}
    fig = make_subplots(rows=1, cols=len(conditions), subplot_titles=[titles.get(c, c) for c in conditions])
    for i, cond in enumerate(conditions, start=1):
        grid = frame[frame["condition"] == cond].pivot_table(
            index="depth", columns="context_length", values="accuracy", aggfunc="mean"
        )
        fig.add_trace(
            go.Heatmap(
                z=grid.to_numpy(),
                x=[str(c) for c in grid.columns],
                y=[f"{d:.0%}" for d in grid.index],
                zmin=0,
                zmax=1,
                colorscale="RdYlGn",
                showscale=i == len(conditions),
                colorbar=dict(title="accuracy"),
                hovertemplate="depth %{y}, context %{x}: %{z:.2f}<extra></extra>",
            ),
            row=1,
            col=i,
        )
        fig.update_xaxes(title_text="context length (tokens)", type="category", row=1, col=i)
        fig.update_yaxes(title_text="needle depth", type="category", row=1, col=i)
    fig.update_layout(title=title or "needle in a haystack: answer accuracy", height=380)
    return fig
