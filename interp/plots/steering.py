"""Figures of a steering sweep (the frame of :func:`interp.steering.sweep`).

``sweep_heatmap``: layer x coefficient grid of the behaviour (or damage) for one vector
kind.  ``sweep_curves``: behaviour (and damage) against the coefficient, one line per
layer, the random control of equal norm dashed beside the steering vector.
``tradeoff_plot``: behaviour against damage with the prompting baseline.
``function_vector_curve``: a function vector's held-out accuracy by layer.
"""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from interp.errors import InputError
from interp.plots import require, unpack

VALUES = ("behaviour", "damage", "neutral_loss")
KINDS = ("steer", "random")


def _check(df: pd.DataFrame, value: str) -> None:
    require(
        df,
        ["layer", "coef", "vector", value],
        "a sweep plot",
        f"plottable values: {[v for v in VALUES if v in df.columns]}",
    )


def sweep_heatmap(df, value: str = "behaviour", vector: str = "steer", *, title: str | None = None) -> go.Figure:
    """Heatmap of ``value`` over layer (rows) x coefficient (columns) for one ``vector`` kind."""
    df, _ = unpack(df)
    _check(df, value)
    if vector not in set(df["vector"]):
        raise InputError(f"vector must be one of {sorted(set(df['vector']))}, got {vector!r}")
    grid = df[df["vector"] == vector].pivot_table(index="layer", columns="coef", values=value, aggfunc="mean")
    fig = go.Figure(
        go.Heatmap(
            z=grid.to_numpy(),
            x=[f"{c:g}" for c in grid.columns],
            y=[str(l) for l in grid.index],
            colorscale="Viridis",
            colorbar={"title": value},
            hovertemplate="layer %{y}<br>coef %{x}<br>" + value + " %{z:.4f}<extra></extra>",
        )
    )
    fig.update_layout(
        title=title or f"{value} of the {vector} vector, layer x coefficient",
        xaxis_title="coefficient",
        yaxis_title="layer",
        xaxis_type="category",
        yaxis_type="category",
    )
    return fig


def sweep_curves(df, value: str = "behaviour", *, damage: bool = True, title: str | None = None) -> go.Figure:
    """``value`` against the coefficient, one colour per layer; solid = steering vector,
    dashed = random control of equal norm.  With ``damage`` (and a ``damage`` column), a
    second panel shows the damage the same way."""
    df, _ = unpack(df)
    _check(df, value)
    panels = [value] + (["damage"] if damage and "damage" in df.columns and value != "damage" else [])
    fig = make_subplots(rows=1, cols=len(panels), subplot_titles=panels)
    colours = qualitative.Plotly
    for col, panel in enumerate(panels, start=1):
        for i, (layer, part) in enumerate(df.groupby("layer", sort=True)):
            for kind in KINDS:
                rows = part[part["vector"] == kind].sort_values("coef")
                if rows.empty:
                    continue
                fig.add_trace(
                    go.Scatter(
                        x=rows["coef"],
                        y=rows[panel],
                        mode="lines+markers",
                        name=f"layer {layer} {kind}",
                        legendgroup=f"{layer}-{kind}",
                        showlegend=col == 1,
                        line={"color": colours[i % len(colours)], "dash": "solid" if kind == "steer" else "dash"},
                        hovertemplate=f"layer {layer} ({kind})<br>coef %{{x}}<br>{panel} %{{y:.4f}}<extra></extra>",
                    ),
                    row=1,
                    col=col,
                )
        fig.update_xaxes(title_text="coefficient", row=1, col=col)
        fig.update_yaxes(title_text=panel, row=1, col=col)
    fig.update_layout(title=title or f"steering sweep: {' and '.join(panels)} (dashed: random vector of equal norm)")
    return fig


def tradeoff_plot(df, *, damage: str = "damage", title: str | None = None) -> go.Figure:
    """Behaviour against damage, one curve per layer (points = coefficients, solid = steering
    vector, dashed = the random control), the unsteered model and the prompting baseline as
    single markers (a :func:`interp.steering.sweep` frame)."""
    df, meta = unpack(df)
    _check(df, "behaviour")
    if damage not in df.columns:
        raise InputError(f"the sweep frame has no {damage!r} column")
    fig = go.Figure()
    colours = qualitative.Plotly
    vec = df[df["vector"].isin(KINDS)]
    for i, (layer, part) in enumerate(vec.groupby("layer", sort=True)):
        for kind in KINDS:
            rows = part[part["vector"] == kind].sort_values("coef")
            if rows.empty:
                continue
            fig.add_trace(
                go.Scatter(
                    x=rows[damage],
                    y=rows["behaviour"],
                    mode="lines+markers",
                    name=f"layer {layer:g} {kind}",
                    line={"color": colours[i % len(colours)], "dash": "solid" if kind == "steer" else "dash"},
                    text=[f"coef {c:g}" for c in rows["coef"]],
                    hovertemplate=f"layer {layer:g} ({kind}), %{{text}}<br>{damage} %{{x:.3f}}<br>"
                    "behaviour %{y:.3f}<extra></extra>",
                )
            )
    for kind, symbol, label in (("none", "circle", "unsteered"), ("prompt", "star", "prompting baseline")):
        rows = df[df["vector"] == kind]
        if not rows.empty:
            fig.add_trace(
                go.Scatter(
                    x=rows[damage],
                    y=rows["behaviour"],
                    mode="markers",
                    name=label,
                    marker=dict(size=14, symbol=symbol, color="black"),
                )
            )
    fig.update_layout(
        title=title or f"steering: behaviour ({meta.get('metric', '')}) against {damage}",
        xaxis_title=f"{damage} (KL from the unsteered model on neutral text, nats)" if damage == "damage" else damage,
        yaxis_title="behaviour",
        height=450,
    )
    return fig


def function_vector_curve(df, *, title: str | None = None) -> go.Figure:
    """Held-out accuracy against the layer the function vector is added after (a
    :func:`interp.function_vectors.layer_sweep` frame): one solid line per coefficient, the
    random vector of equal norm dashed, zero-shot and few-shot accuracy as horizontal lines."""
    df, _ = unpack(df)
    require(
        df,
        ["condition", "layer", "coef", "accuracy"],
        "a function-vector curve",
        "the frame of interp.function_vectors.layer_sweep",
    )
    fig = go.Figure()
    colours = qualitative.Plotly
    vec = df[df["condition"].isin(("fv", "random"))]
    for i, (coef, part) in enumerate(vec.groupby("coef", sort=True)):
        for kind, dash in (("fv", "solid"), ("random", "dash")):
            rows = part[part["condition"] == kind].sort_values("layer")
            if not rows.empty:
                fig.add_trace(
                    go.Scatter(
                        x=rows["layer"],
                        y=rows["accuracy"],
                        mode="lines+markers",
                        name=f"{kind}, coef {coef:g}",
                        line={"color": colours[i % len(colours)], "dash": dash},
                        hovertemplate=f"{kind}, coef {coef:g}<br>layer %{{x}}<br>accuracy %{{y:.3f}}<extra></extra>",
                    )
                )
    for kind, dash in (("zero_shot", "dot"), ("few_shot", "dashdot")):
        rows = df[df["condition"] == kind]
        if not rows.empty:
            fig.add_hline(
                y=float(rows["accuracy"].iloc[0]),
                line_dash=dash,
                line_color="black",
                annotation_text=kind.replace("_", "-"),
                annotation_position="top left",
            )
    fig.update_layout(
        title=title or "function vector: held-out zero-shot accuracy by layer",
        xaxis_title="layer the vector is added after",
        yaxis_title="accuracy",
        yaxis_range=[-0.02, 1.02],
        xaxis={"dtick": 1},
        height=420,
    )
    return fig
