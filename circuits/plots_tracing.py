"""Figures of causal tracing (:mod:`circuits.tracing`): Meng et al.'s heatmaps of the indirect
effect by layer and token (one fact) or by layer and position role (averaged over facts), one
panel per component, and several models side by side."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from interp.errors import InputError

#: colour scale per component, as in Meng et al.'s figures (hidden states purple, MLP green, attention red)
COLOURS = {
    "resid": "Purples",
    "mlp": "Greens",
    "attn": "Reds",
    "mixer": "Greens",
    "state": "Blues",
    "gates": "Oranges",
}


def _grid(frame: pd.DataFrame, component: str, window: int, fact: int | None) -> tuple[pd.DataFrame, list[str]]:
    """The (row label x layer) grid of mean effects for one component and window."""
    from circuits.tracing import summary

    d = frame[(frame["component"] == component) & (frame["window"] == window)]
    if d.empty:
        raise InputError(f"no rows for component {component!r} at window {window}")
    if fact is not None:
        d = d[d["fact"] == fact]
        if d.empty:
            raise InputError(f"no rows for fact {fact}")
        d = d.assign(
            _row=[
                f"{t!r}{'*' if r.endswith('subject token') or r == 'middle subject tokens' else ''} {p}"
                for t, r, p in zip(d["token"], d["role"], d["pos"])
            ]
        )
        order = list(dict.fromkeys(d.sort_values("pos")["_row"]))
        grid = d.pivot_table(index="_row", columns="layer", values="effect", aggfunc="mean").reindex(order)
        return grid, list(d.sort_values("layer").drop_duplicates("layer")["layers"].astype(str))
    s = summary(d)
    s = s.assign(_row=s["role"].astype(str))
    order = [r for r in s["role"].cat.categories if r in set(s["_row"])]
    grid = s.pivot_table(index="_row", columns="layer", values="effect", aggfunc="mean", observed=True).reindex(order)
    return grid, list(s.sort_values("layer").drop_duplicates("layer")["layers"].astype(str))


def tracing_heatmap(
    trace, *, window: int | None = None, fact: int | None = None, title: str | None = None
) -> go.Figure:
    """One panel per component (``trace``: the frame of :func:`circuits.tracing.causal_tracing` or
    its :class:`interp.runs.Result`): the indirect effect (restored minus corrupted probability of the
    object) by layer (x; the window's layers) and token (``fact``: one fact's tokens, the subject
    marked ``*``) or position role (default: the mean over facts).  window: which window to
    show (default the trace's largest; ``resid`` is always single layers)."""
    from interp.runs.result import parts

    frame, _ = parts(trace)  # the frame of circuits.causal_tracing, or its interp.runs.Result
    if frame.empty or "component" not in frame.columns:
        raise InputError("tracing_heatmap takes the frame of circuits.tracing.causal_tracing")
    comps = list(dict.fromkeys(frame["component"]))
    w = int(frame["window"].max()) if window is None else int(window)
    fig = make_subplots(rows=1, cols=len(comps), horizontal_spacing=0.09, subplot_titles=comps)
    for i, comp in enumerate(comps, start=1):
        have = set(frame.loc[frame["component"] == comp, "window"])
        cw = w if w in have else max(have)
        grid, labels = _grid(frame, comp, cw, fact)
        name = comp if cw == 1 else f"{comp} (window {cw})"
        fig.layout.annotations[i - 1].update(text=name)
        fig.add_trace(
            _heatmap(
                grid,
                labels,
                comp,
                comp,
                colorbar=dict(x=i / len(comps) - 0.02, len=0.8, thickness=10, title="effect"),
            ),
            row=1,
            col=i,
        )
        fig.update_yaxes(autorange="reversed", row=1, col=i, showticklabels=i == 1)
        fig.update_xaxes(title_text="layer(s)", row=1, col=i)
    what = f"fact {fact}" if fact is not None else f"mean over {frame['fact'].nunique()} facts"
    fig.update_layout(
        title=title or f"Causal tracing: indirect effect on the object's probability ({what})",
        height=360,
        margin=dict(l=10, r=10, t=70, b=40),
    )
    return fig


def _heatmap(grid: pd.DataFrame, labels: list, comp: str, name: str, **options) -> go.Heatmap:
    """One component's effect grid (positions x layers) on a scale from 0 to its maximum."""
    return go.Heatmap(
        z=grid.to_numpy(),
        x=labels,
        y=list(grid.index),
        colorscale=COLOURS.get(comp, "Viridis"),
        zmin=0,
        zmax=max(float(np.nanmax(grid.to_numpy())), 1e-6),
        hovertemplate="layers %{x}<br>%{y}<br>indirect effect %{z:.3f}<extra>" + name + "</extra>",
        **options,
    )


def compare_figure(frames: dict[str, pd.DataFrame], *, title: str | None = None) -> go.Figure:
    """Several models side by side: one row per model (its label), one panel per component,
    each the mean indirect effect by layer and position role (largest window)."""
    if not frames:
        raise InputError("compare_figure needs at least one trace")
    rows = list(frames)
    width = max(frames[r]["component"].nunique() for r in rows)
    titles = []
    for r in rows:
        comps = list(dict.fromkeys(frames[r]["component"]))
        titles += [f"{r}: {c}" for c in comps] + [""] * (width - len(comps))
    fig = make_subplots(
        rows=len(rows), cols=width, subplot_titles=titles, horizontal_spacing=0.06, vertical_spacing=0.2
    )
    for ri, r in enumerate(rows, start=1):
        frame = frames[r]
        w = int(frame["window"].max())
        for ci, comp in enumerate(dict.fromkeys(frame["component"]), start=1):
            have = set(frame.loc[frame["component"] == comp, "window"])
            grid, labels = _grid(frame, comp, w if w in have else max(have), None)
            fig.add_trace(
                _heatmap(grid, labels, comp, f"{r}: {comp}", showscale=False),
                row=ri,
                col=ci,
            )
            fig.update_yaxes(autorange="reversed", row=ri, col=ci, showticklabels=ci == 1)
    fig.update_layout(title=title or "Causal tracing side by side", height=300 * len(rows) + 60)
    return fig
