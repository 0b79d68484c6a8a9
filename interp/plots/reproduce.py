"""Figures of the reproduce entries: a measurement by a variable (layer, fraction pruned,
position, condition) with its interval, one trace per condition, and the published value
as a reference line where it is on the same scale."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import plotly.graph_objects as go

from interp.plots import require

COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf", "#7f7f7f")


def finding_plot(
    frame: pd.DataFrame,
    x: str,
    y: str,
    *,
    group: str | None = None,
    low: str | None = None,
    high: str | None = None,
    kind: str = "line",
    title: str = "",
    x_title: str | None = None,
    y_title: str | None = None,
    reference: float | None = None,
    reference_label: str = "published",
    order: Sequence[str] | None = None,
    log_y: bool = False,
) -> go.Figure:
    """``y`` against ``x`` (one trace per value of ``group``), with error bars from ``low`` /
    ``high`` columns (the 95% interval) where given; ``kind`` "line" or "bar"; ``reference``
    draws a dashed horizontal line (the published value, when it is on the same scale)."""
    cols = [x, y] + [c for c in (group, low, high) if c is not None]
    require(frame, cols, "finding_plot")
    if kind not in ("line", "bar"):
        raise ValueError(f"kind must be 'line' or 'bar', got {kind!r}")
    fig = go.Figure()
    groups = [None] if group is None else list(order or dict.fromkeys(frame[group]))
    for i, g in enumerate(groups):
        part = frame if g is None else frame[frame[group] == g]
        if part.empty:
            continue
        err = None
        if low is not None and high is not None:
            err = dict(
                type="data",
                symmetric=False,
                array=(part[high] - part[y]).clip(lower=0).tolist(),
                arrayminus=(part[y] - part[low]).clip(lower=0).tolist(),
                visible=True,
            )
        color = COLORS[i % len(COLORS)]
        name = str(g) if g is not None else y
        if kind == "bar":
            fig.add_trace(go.Bar(x=part[x].tolist(), y=part[y].tolist(), name=name, error_y=err, marker_color=color))
        else:
            fig.add_trace(
                go.Scatter(
                    x=part[x].tolist(),
                    y=part[y].tolist(),
                    name=name,
                    mode="lines+markers",
                    error_y=err,
                    line_color=color,
                )
            )
    if reference is not None:
        fig.add_hline(y=reference, line_dash="dash", line_color="black", annotation_text=reference_label)
    fig.update_layout(
        title=title,
        xaxis_title=x_title if x_title is not None else x,
        yaxis_title=y_title if y_title is not None else y,
        barmode="group",
        height=420,
        legend_title_text=group or "",
        template="plotly_white",
    )
    if log_y:
        fig.update_yaxes(type="log")
    return fig
