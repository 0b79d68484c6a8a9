"""Figures of a sparse dictionary's features (frames of :mod:`interp.sae.features` and
:func:`interp.sae.evaluate.evaluate`)."""

from __future__ import annotations

import html

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from interp.plots import require


def density_histogram(frame: pd.DataFrame, *, title: str | None = None) -> go.Figure:
    """How many latents fire how often: a histogram of log10 density (dead latents counted apart)."""
    require(frame, ["latent", "density"], "density_histogram", "from interp.sae.features.density")
    alive = frame[frame["density"] > 0]
    dead = int((frame["density"] <= 0).sum())
    fig = go.Figure(go.Histogram(x=np.log10(alive["density"]), nbinsx=50, marker_color="#4c78a8"))
    fig.update_layout(
        title=title or f"Feature density ({len(alive)} alive, {dead} dead of {len(frame)})",
        xaxis_title="log10(fraction of tokens active)",
        yaxis_title="latents",
        height=320,
        margin=dict(t=60, b=40),
    )
    return fig


def activation_histogram(frame: pd.DataFrame, *, title: str | None = None) -> go.Figure:
    """One latent's non-zero activations (frame of :func:`interp.sae.features.histogram`)."""
    require(frame, ["latent", "lo", "hi", "count"], "activation_histogram", "from interp.sae.features.histogram")
    latent = int(frame["latent"].iloc[0])
    fig = go.Figure(
        go.Bar(
            x=(frame["lo"] + frame["hi"]) / 2, y=frame["count"], width=frame["hi"] - frame["lo"], marker_color="#f58518"
        )
    )
    fig.update_layout(
        title=title or f"Latent {latent}: activations when active",
        xaxis_title="activation (normalised units)",
        yaxis_title="tokens",
        height=300,
        margin=dict(t=60, b=40),
    )
    return fig


def logit_bars(frame: pd.DataFrame, *, title: str | None = None) -> go.Figure:
    """The tokens one latent promotes (right) and suppresses (left) through the unembedding
    (frame of :func:`interp.sae.features.logit_effects`, one latent)."""
    require(frame, ["latent", "effect", "token", "value"], "logit_bars", "from interp.sae.features.logit_effects")
    latent = int(frame["latent"].iloc[0])
    one = frame[frame["latent"] == latent]
    fig = make_subplots(rows=1, cols=2, subplot_titles=["suppressed", "promoted"], horizontal_spacing=0.18)
    for col, effect, colour in ((1, "suppressed", "#e45756"), (2, "promoted", "#54a24b")):
        part = one[one["effect"] == effect].sort_values("rank")
        fig.add_trace(
            go.Bar(
                x=part["value"],
                y=[repr(t) for t in part["token"]],
                orientation="h",
                marker_color=colour,
                hovertemplate="%{y}: %{x:.3f}<extra></extra>",
            ),
            row=1,
            col=col,
        )
        fig.update_yaxes(autorange="reversed", type="category", row=1, col=col)
    fig.update_layout(
        title=title or f"Latent {latent}: logits of its decoder direction",
        showlegend=False,
        height=max(300, 24 * len(one) // 2 + 120),
        margin=dict(t=70, b=40),
    )
    return fig


def contexts_table(frame: pd.DataFrame, *, title: str | None = None) -> go.Figure:
    """Top-activating contexts with the token the latent fired on highlighted (frame of
    :func:`interp.sae.features.top_contexts`)."""
    require(frame, ["activation", "token", "left", "right"], "contexts_table", "from interp.sae.features.top_contexts")

    def cell(r) -> str:
        esc = lambda s: html.escape(str(s)).replace("\n", "⏎")
        return f"{esc(r['left'])}<b><span style='color:#c2410c'>[{esc(r['token'])}]</span></b>{esc(r['right'])}"

    fig = go.Figure(
        go.Table(
            columnwidth=[1, 8],
            header=dict(values=["activation", "context (the token it fired on in [brackets])"], align="left"),
            cells=dict(
                values=[[f"{v:.2f}" for v in frame["activation"]], [cell(r) for _, r in frame.iterrows()]],
                align="left",
                height=26,
            ),
        )
    )
    fig.update_layout(title=title, height=90 + 28 * len(frame), margin=dict(t=40 if title else 10, b=10, l=10, r=10))
    return fig


def evaluation_bars(frame: pd.DataFrame, *, title: str | None = None) -> go.Figure:
    """FVU and loss recovered of the dictionary beside its PCA baseline (frame of
    :func:`interp.sae.evaluate.evaluate`)."""
    require(frame, ["method", "fvu", "ce_recovered"], "evaluation_bars", "from interp.sae.evaluate.evaluate")
    fig = make_subplots(rows=1, cols=2, subplot_titles=["fraction of variance unexplained", "cross-entropy recovered"])
    for col, metric in ((1, "fvu"), (2, "ce_recovered")):
        fig.add_trace(
            go.Bar(x=frame["method"], y=frame[metric], marker_color=["#4c78a8", "#bab0ac"][: len(frame)]), 1, col
        )
    fig.update_layout(title=title, showlegend=False, height=320, margin=dict(t=60, b=40))
    return fig
