"""Figures of the lenses: the logit-lens grid (layers x positions, each cell the top token),
target-probability and KL curves per layer (logit vs tuned lens), and direct logit
attribution by layer x head.  Each takes the frames :mod:`interp.lens` returns."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from interp.errors import InputError
from interp.plots import head_targets, require, unpack


def _layer_label(frame: pd.DataFrame, layer: int, stage: str = "post") -> str:
    """``pre``/``mid`` readings end with the final residual (numbered ``n_layers``)."""
    last = int(frame["layer"].max())
    if stage != "post" and layer == last:
        return "final"
    return str(layer)


def lens_grid(frame, *, color: str = "prob", title: str | None = None) -> go.Figure:
    """The logit-lens grid of :func:`interp.lens.logit_lens`: readings (rows, first layer at the
    bottom) x positions (columns, labelled with the input token), each cell printing the top
    token; ``color``: ``"prob"`` (the top token's probability) or ``"target_prob"`` (the
    target's, a frame computed with ``target``).  frame: the frame or its Result (whose meta
    names the stage, the target and whether a tuned lens read it)."""
    frame, meta = unpack(frame)
    require(frame, ["layer", "pos", "input", "rank_k", "token", "prob"], "lens_grid", "from interp.lens.logit_lens")
    if color not in ("prob", "target_prob"):
        raise InputError(f"color must be 'prob' or 'target_prob', got {color!r}")
    if color not in frame.columns:
        raise InputError("color='target_prob' needs a lens frame computed with a target")
    top = frame[frame["rank_k"] == 1]
    layers = sorted(top["layer"].unique())
    positions = sorted(top["pos"].unique())
    z = top.pivot(index="layer", columns="pos", values=color).reindex(index=layers, columns=positions)
    text = top.pivot(index="layer", columns="pos", values="token").reindex(index=layers, columns=positions)
    inputs = top.drop_duplicates("pos").set_index("pos")["input"].reindex(positions)
    xlabels = [f"{p}: {inputs[p]!r}"[:24] for p in positions]  # unique even for repeated tokens
    ylabels = [_layer_label(frame, int(layer), meta.get("stage", "post")) for layer in layers]
    cells = text.to_numpy().astype(str)
    small = len(positions) <= 40 and len(layers) <= 48
    fig = go.Figure(
        go.Heatmap(
            z=z.to_numpy(),
            x=xlabels,
            y=ylabels,
            zmin=0,
            zmax=1,
            colorscale="Blues",
            colorbar=dict(title="p(target)" if color == "target_prob" else "p(top)"),
            text=np.vectorize(lambda t: repr(t)[1:-1][:8])(cells) if small else None,
            texttemplate="%{text}" if small else None,
            textfont=dict(size=9),
            customdata=cells,
            hovertemplate="layer %{y}, %{x}<br>top: %{customdata!r}<br>p = %{z:.3f}<extra></extra>",
        )
    )
    what = f"p({meta['target']!r})" if color == "target_prob" and meta.get("target") else "top token"
    kind = "tuned lens" if meta.get("tuned") else "logit lens"
    fig.update_layout(
        title=title or f"{kind} ({meta.get('stage', 'post')}): {what}",
        height=max(320, 18 * len(layers) + 160),
        xaxis=dict(type="category", tickangle=-45),
        yaxis=dict(type="category", title="layer"),
    )
    return fig


def _curves(frames: Mapping[str, pd.DataFrame], y: str, ytitle: str, title: str) -> go.Figure:
    fig = go.Figure()
    for label, frame in frames.items():
        fig.add_trace(
            go.Scatter(
                x=frame["layer"],
                y=frame[y],
                mode="lines+markers",
                name=label,
                hovertemplate=f"{label}<br>layer %{{x}}: %{{y:.3f}}<extra></extra>",
            )
        )
    fig.update_layout(
        title=title,
        height=360,
        yaxis=dict(title=ytitle),
        xaxis=dict(title="layer", tickmode="linear", dtick=max(1, len(fig.data[0].x) // 16)),
    )
    return fig


def target_curves(frames: Mapping, *, pos: int = -1, title: str | None = None) -> go.Figure:
    """The target's probability per layer at position ``pos``, one line per labelled lens frame
    (e.g. ``{"logit lens": ..., "tuned lens": ...}``, frames or their Results, computed with a
    ``target``)."""
    if not frames:
        raise InputError("no lens frames to draw")
    picked = {}
    target = None
    for label, item in frames.items():
        frame, meta = unpack(item)
        target = target if target is not None else meta.get("target")
        require(
            frame,
            ["layer", "pos", "rank_k", "target_prob"],
            f"target_curves (frame {label!r})",
            "from interp.lens.logit_lens with a target",
        )
        positions = sorted(frame["pos"].unique())
        if not -len(positions) <= pos < len(positions):
            raise InputError(f"pos {pos} is outside the {len(positions)} positions")
        at = frame[(frame["pos"] == positions[pos]) & (frame["rank_k"] == 1)]
        picked[label] = at.sort_values("layer")
    return _curves(picked, "target_prob", "probability", title or f"p({target!r}) by layer")


def kl_curves(frames: Mapping[str, pd.DataFrame], *, title: str | None = None) -> go.Figure:
    """KL(final || lens) per layer, one line per labelled frame of :func:`interp.lens.lens_kl`."""
    if not frames:
        raise InputError("no KL frames to draw")
    for label, frame in frames.items():
        require(frame, ["layer", "kl"], f"kl_curves (frame {label!r})", "from interp.lens.lens_kl")
    fig = _curves(frames, "kl", "KL to the final distribution (nats)", title or "how far each layer is from the answer")
    return fig


def dla_plot(frame, *, title: str | None = None, selectable: bool = False) -> go.Figure:
    """Direct logit attribution (:func:`interp.lens.dla`): per-head contributions as a layer x
    head heatmap (diverging, zero white) beside a bar per other component (embedding, each
    MLP or recurrent layer, biases).  Recurrent models: the bars only.  frame: the frame or its
    Result (whose meta names the target and contrast tokens).  selectable: an invisible click
    target on each head's cell (:func:`interp.plots.head_targets`), for an app's point selection."""
    frame, meta = unpack(frame)
    require(frame, ["component", "kind", "layer", "head", "value"], "dla_plot", "from interp.lens.dla")
    heads = frame[frame["kind"] == "head"]
    rest = frame[frame["kind"] != "head"]
    what = meta.get("target", "target")
    if meta.get("contrast") is not None:
        what = f"{what!r} - {meta['contrast']!r}"
    else:
        what = repr(what)
    title = title or f"direct logit attribution to {what} (sum {frame['value'].sum():.2f})"
    bars = go.Bar(
        x=rest["value"],
        y=rest["component"],
        orientation="h",
        marker_color=np.where(rest["value"] >= 0, "#3b6fb6", "#c0504d"),
        hovertemplate="%{y}: %{x:.3f}<extra></extra>",
        showlegend=False,
    )
    if heads.empty:
        fig = go.Figure(bars)
        fig.update_layout(
            title=title,
            height=max(300, 22 * len(rest) + 120),
            xaxis=dict(title="logit contribution"),
            yaxis=dict(autorange="reversed", type="category"),
        )
        return fig
    grid = heads.pivot_table(index="layer", columns="head", values="value", aggfunc="sum")
    bound = float(np.abs(grid.to_numpy()).max()) or 1.0
    fig = make_subplots(
        rows=1,
        cols=2,
        column_widths=[0.62, 0.38],
        horizontal_spacing=0.12,
        subplot_titles=["heads (layer x head)", "other components"],
    )
    fig.add_trace(
        go.Heatmap(
            z=grid.to_numpy(),
            x=[str(int(h)) for h in grid.columns],
            y=[str(int(l)) for l in grid.index],
            zmid=0,
            zmin=-bound,
            zmax=bound,
            colorscale="RdBu",
            colorbar=dict(title="logit", x=0.56),
            hovertemplate="L%{y}H%{x}: %{z:.3f}<extra></extra>",
        ),
        row=1,
        col=1,
    )
    if selectable:
        layers, heads_ = np.meshgrid(grid.index, grid.columns, indexing="ij")
        fig.add_trace(
            head_targets(
                [str(int(h)) for h in heads_.ravel()],
                [str(int(l)) for l in layers.ravel()],
                layers,
                heads_,
                grid.to_numpy(),
                name="direct logit attribution",
                size=max(8, min(30, 400 // max(grid.shape))),
            ),
            row=1,
            col=1,
        )
    fig.add_trace(bars, row=1, col=2)
    fig.update_xaxes(title_text="head", type="category", row=1, col=1)
    fig.update_yaxes(title_text="layer", type="category", row=1, col=1)
    fig.update_yaxes(autorange="reversed", type="category", row=1, col=2)
    fig.update_xaxes(title_text="logit contribution", row=1, col=2)
    fig.update_layout(title=title, height=max(360, 16 * max(len(grid), len(rest)) + 140))
    return fig
