"""Figures of an LSTM's cells (:mod:`interp.recurrent.cells`): Karpathy et al.'s coloured text
(each character shaded by a cell's activation, -1 red .. +1 blue) and their gate-saturation
scatter (Figure 3)."""

from __future__ import annotations

import html
from collections.abc import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from interp.errors import InputError

LAYER_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b")


def _shade(v: float) -> str:
    """tanh range -1..1 -> red (-1) .. white (0) .. blue (+1), as an rgb() colour."""
    v = float(np.clip(v, -1.0, 1.0)) if np.isfinite(v) else 0.0
    if v < 0:  # towards red (214, 39, 40)
        t = -v
        rgb = (255 - t * (255 - 214), 255 - t * (255 - 39), 255 - t * (255 - 40))
    else:  # towards blue (31, 119, 180)
        t = v
        rgb = (255 - t * (255 - 31), 255 - t * (255 - 119), 255 - t * (255 - 180))
    return "rgb({:.0f},{:.0f},{:.0f})".format(*rgb)


def colored_text(chars: Sequence[str] | str, values: Sequence[float] | np.ndarray, *, title: str = "") -> str:
    """Karpathy et al.'s visualisation as an HTML fragment: every character of ``chars`` on a
    background shaded by its value in ``values`` (one per character; a cell's tanh(c) in
    -1..1: red negative, white 0, blue positive; the value shows on hover).  Newlines break
    lines and spaces are kept (``white-space: pre``)."""
    chars = list(chars)
    values = np.asarray(values, dtype=float).reshape(-1)
    if len(chars) != len(values):
        raise InputError(f"colored_text needs one value per character: {len(chars)} characters, {len(values)} values")
    spans = []
    for c, v in zip(chars, values):
        shown = "\u21b5\n" if c == "\n" else html.escape(c)  # a visible newline mark, then the break
        spans.append(f'<span style="background:{_shade(v)}" title="{v:+.2f}">{shown}</span>')
    head = f'<div class="interp-cell-title"><b>{html.escape(title)}</b></div>' if title else ""
    legend = (
        '<div class="interp-cell-legend" style="font-size:11px;margin:2px 0">'
        f'<span style="background:{_shade(-1)};padding:0 6px">-1</span>'
        f'<span style="background:{_shade(0)};padding:0 6px;border:1px solid #ddd">0</span>'
        f'<span style="background:{_shade(1)};padding:0 6px">+1</span> tanh(c)</div>'
    )
    body = "".join(spans)
    return (
        f'<div class="interp-cell-text">{head}{legend}<pre style="font-family:monospace;font-size:13px;'
        f'line-height:1.35;white-space:pre;margin:0">{body}</pre></div>'
    )


def saturation_figure(saturation: pd.DataFrame, *, title: str = "") -> go.Figure:
    """Karpathy et al.'s Figure 3: per gate (one panel each), every unit as a point at (fraction
    of time left-saturated, fraction right-saturated), coloured by layer.  ``saturation``:
    :func:`interp.recurrent.cells.gate_saturation`'s frame."""
    from interp.plots import require

    require(saturation, ["layer", "gate", "unit", "left", "right"], "saturation_figure")
    gates = list(dict.fromkeys(saturation["gate"]))
    fig = make_subplots(rows=1, cols=len(gates), subplot_titles=[g.replace("_", " ") for g in gates])
    for j, gate in enumerate(gates, start=1):
        for layer in sorted(saturation["layer"].unique()):
            part = saturation[(saturation["gate"] == gate) & (saturation["layer"] == layer)]
            fig.add_trace(
                go.Scatter(
                    x=part["left"],
                    y=part["right"],
                    mode="markers",
                    name=f"layer {layer}",
                    legendgroup=f"layer {layer}",
                    showlegend=j == 1,
                    marker={"color": LAYER_COLORS[int(layer) % len(LAYER_COLORS)], "size": 6, "opacity": 0.7},
                    text=[f"L{layer} unit {u}" for u in part["unit"]],
                ),
                row=1,
                col=j,
            )
        fig.add_trace(
            go.Scatter(x=[0, 1], y=[1, 0], mode="lines", line={"color": "#bbb", "dash": "dot"}, showlegend=False),
            row=1,
            col=j,
        )
        fig.update_xaxes(range=[0, 1], title_text="fraction left-saturated (< 0.1)", row=1, col=j)
        fig.update_yaxes(range=[0, 1], row=1, col=j)
    fig.update_yaxes(title_text="fraction right-saturated (> 0.9)", row=1, col=1)
    fig.update_layout(title=title or "Gate saturation (Karpathy et al. 2015, Figure 3)", height=380)
    return fig


def cells_figure(saturation: pd.DataFrame, best: pd.DataFrame, *, title: str = "") -> go.Figure:
    """Gate saturation per unit (one panel per gate, Karpathy et al.'s Figure 3) beside the best
    cell of each feature: ``best`` is ``DataFrame[feature, layer, cell, correlation, low, high]``
    (held-out correlation with its interval)."""
    from interp.plots import require

    require(saturation, ["layer", "gate", "unit", "left", "right"], "cells_figure")
    require(best, ["feature", "layer", "cell", "correlation", "low", "high"], "cells_figure")
    sat = saturation_figure(saturation)
    gates = list(dict.fromkeys(saturation["gate"]))
    fig = make_subplots(
        rows=1,
        cols=len(gates) + 1,
        subplot_titles=[g.replace("_", " ") for g in gates] + ["best cell per feature (held out)"],
        column_widths=[1.0] * len(gates) + [1.3],
    )
    for trace in sat.data:
        fig.add_trace(trace, row=1, col=int((trace.xaxis or "x")[1:] or 1))  # the panel it was drawn in
    for j in range(1, len(gates) + 1):
        fig.update_xaxes(range=[0, 1], title_text="left-saturated", row=1, col=j)
        fig.update_yaxes(range=[0, 1], row=1, col=j)
    fig.update_yaxes(title_text="right-saturated", row=1, col=1)
    r = best["correlation"].to_numpy(dtype=float)
    fig.add_trace(
        go.Bar(
            x=[f"{f}<br>L{l} cell {c}" for f, l, c in zip(best["feature"], best["layer"], best["cell"])],
            y=r,
            error_y={
                "type": "data",
                "array": best["high"].to_numpy(dtype=float) - r,
                "arrayminus": r - best["low"].to_numpy(dtype=float),
            },
            marker={"color": ["#1f77b4" if v >= 0 else "#d62728" for v in r]},
            name="correlation",
            showlegend=False,
        ),
        row=1,
        col=len(gates) + 1,
    )
    fig.update_yaxes(range=[-1, 1], title_text="correlation with the feature", row=1, col=len(gates) + 1)
    fig.update_layout(title=title or "LSTM cells (Karpathy et al. 2015)", height=420)
    return fig
