"""Figures of the memory findings: recall accuracy against the number of key-value pairs by
family and state size (the recall gap), and flip-flop error rates by split with the attention of
a transformer at its reads (attention glitches)."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from interp.plots import require

#: one shade per size rank (smallest light, largest dark)
SHADES = ("#9ecae1", "#3182bd", "#08306b")


def _err(part: pd.DataFrame, y: str, low: str, high: str) -> dict:
    return dict(
        type="data",
        symmetric=False,
        array=(part[high] - part[y]).clip(lower=0).tolist(),
        arrayminus=(part[y] - part[low]).clip(lower=0).tolist(),
        visible=True,
    )


def recall_gap_plot(frame: pd.DataFrame, title: str = "") -> go.Figure:
    """Accuracy against the number of key-value pairs, one line per (family, size) with its 95%
    interval, one panel per family; the dotted line is guessing among the values in context
    (1 / pairs).  frame: ``family, size, state_floats, n_pairs, accuracy, ci_low, ci_high``."""
    require(frame, ["family", "size", "state_floats", "n_pairs", "accuracy", "ci_low", "ci_high"], "recall_gap_plot")
    families = list(dict.fromkeys(frame["family"]))
    fig = make_subplots(rows=1, cols=len(families), shared_yaxes=True, subplot_titles=families)
    pairs = sorted(frame["n_pairs"].unique())
    for col, fam in enumerate(families, start=1):
        part = frame[frame["family"] == fam]
        for rank, size in enumerate(sorted(part["size"].unique())):
            line = part[part["size"] == size].sort_values("n_pairs")
            floats = int(line["state_floats"].iloc[0])
            fig.add_trace(
                go.Scatter(
                    x=line["n_pairs"].tolist(),
                    y=line["accuracy"].tolist(),
                    error_y=_err(line, "accuracy", "ci_low", "ci_high"),
                    mode="lines+markers",
                    name=f"{fam} {size} ({floats:,} state floats)",
                    line_color=SHADES[min(rank, len(SHADES) - 1)],
                    legendgroup=fam,
                ),
                row=1,
                col=col,
            )
        fig.add_trace(
            go.Scatter(
                x=pairs,
                y=[1 / p for p in pairs],
                mode="lines",
                line=dict(dash="dot", color="grey"),
                name="guessing among the values in context",
                showlegend=col == 1,
            ),
            row=1,
            col=col,
        )
        fig.update_xaxes(type="log", tickvals=pairs, title_text="key-value pairs", row=1, col=col)
    fig.update_yaxes(range=[0, 1.05], title_text="recall accuracy", row=1, col=1)
    fig.update_layout(title=title, height=440, template="plotly_white")
    return fig


def glitch_plot(
    rates: pd.DataFrame,
    attention: pd.DataFrame,
    title: str = "",
    *,
    pattern: pd.DataFrame | None = None,
    token_names: list[str] | None = None,
    pattern_title: str = "",
) -> go.Figure:
    """Left: error rate per split and model (95% interval over sequences; log scale, zero errors
    drawn at the bottom with their upper bound).  Right: the transformer's attention from the read
    position to the most recent write, per layer and head, at its errors and at correct reads.

    rates: ``model, split, error_rate, ci_low, ci_high``; attention: ``outcome, head_label,
    to_last_write`` (mean per head).  pattern (optional, with ``token_names``): one read's
    attention row (:func:`interp.glitches.read_pattern`), drawn below as a heatmap."""
    require(rates, ["model", "split", "error_rate", "ci_low", "ci_high"], "glitch_plot")
    require(attention, ["outcome", "head_label", "to_last_write"], "glitch_plot")
    two_rows = pattern is not None and not pattern.empty
    fig = make_subplots(
        rows=2 if two_rows else 1,
        cols=2,
        specs=[[{}, {}], [{"colspan": 2}, None]] if two_rows else None,
        subplot_titles=(
            "error rate at reads",
            "attention from the read to the most recent write",
            *((pattern_title or "one read's attention",) if two_rows else ()),
        ),
        vertical_spacing=0.18,
    )
    colors = {}
    palette = ("#d62728", "#1f77b4", "#2ca02c", "#9467bd")
    for i, (model, part) in enumerate(rates.groupby("model", sort=False)):
        colors[model] = palette[i % len(palette)]
        fig.add_trace(
            go.Bar(
                x=part["split"].tolist(),
                y=part["error_rate"].tolist(),
                error_y=_err(part, "error_rate", "ci_low", "ci_high"),
                name=str(model),
                marker_color=colors[model],
            ),
            row=1,
            col=1,
        )
    for outcome, color in (("correct", "#2ca02c"), ("error", "#d62728")):
        part = attention[attention["outcome"] == outcome]
        if part.empty:
            continue
        fig.add_trace(
            go.Bar(
                x=part["head_label"].tolist(),
                y=part["to_last_write"].tolist(),
                name=f"transformer reads: {outcome}",
                marker_color=color,
            ),
            row=1,
            col=2,
        )
    fig.update_yaxes(title_text="errors / reads", row=1, col=1)
    fig.update_yaxes(title_text="attention weight", range=[0, 1], row=1, col=2)
    if two_rows:
        assert pattern is not None
        heat = read_pattern_plot(pattern, token_names or [str(i) for i in range(int(pattern["token"].max()) + 1)])
        trace = heat.data[0]
        trace.update(colorbar=dict(title="attention", len=0.4, y=0.2))
        fig.add_trace(trace, row=2, col=1)
        fig.update_xaxes(title_text="source position:token", row=2, col=1)
    fig.update_layout(title=title, barmode="group", height=760 if two_rows else 440, template="plotly_white")
    return fig


def read_pattern_plot(pattern: pd.DataFrame, token_names: list[str], title: str = "") -> go.Figure:
    """Heatmap of one read position's attention: rows ``L{layer}H{head}``, columns the source
    positions labelled with their tokens.  pattern: :func:`interp.glitches.read_pattern`'s frame."""
    require(pattern, ["layer", "head", "src", "token", "attention"], "read_pattern_plot")
    grid = pattern.pivot_table(index=["layer", "head"], columns="src", values="attention")
    srcs = list(grid.columns)
    tokens = pattern.drop_duplicates("src").set_index("src")["token"]
    labels = [f"{s}:{token_names[int(tokens[s])]}" for s in srcs]
    fig = go.Figure(
        go.Heatmap(
            z=grid.to_numpy(),
            x=labels,
            y=[f"L{l}H{h}" for l, h in grid.index],
            colorscale="Blues",
            zmin=0,
            zmax=1,
            colorbar_title="attention",
        )
    )
    fig.update_layout(title=title, xaxis_title="source position:token", height=320, template="plotly_white")
    return fig
