"""Figures for head analysis: score heatmaps (layer x head, one panel per kind), composition
matrices, ablation bars with the random control, and loss by position.

Each function takes the DataFrame an ``interp.heads`` / ``interp.retrieval`` /
``interp.ablation`` function returns.  Attention patterns themselves are drawn by
:func:`interp.plots.attention.attention_pattern`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from interp.errors import InputError
from interp.plots import head_targets, require, unpack


def head_heatmap(
    frame,
    kinds: Sequence[str] | str | None = None,
    *,
    title: str | None = None,
    cols: int = 3,
    annotate: bool | None = None,
    selectable: bool = False,
    highlight: dict[str, Sequence[tuple[int, int]]] | None = None,
) -> go.Figure:
    """Scores as layer (rows) x head (columns) heatmaps, one panel per kind.

    frame: ``[layer, head, score]`` plus an optional ``kind`` column (e.g.
    :func:`interp.heads.scores`, :func:`interp.retrieval.retrieval_scores`).  Panels whose
    scores lie in [0, 1] share a 0-1 scale; signed scores (copying) use a diverging -1..1
    scale.  annotate: print values in the cells (default: for grids up to 16 x 16).
    selectable: overlay each panel with an invisible scatter point per cell (``customdata``
    ``[layer, head, score]``): click targets for an app's point selection, which plotly reports
    for scatter traces, not heatmaps (:func:`interp.plots.head_targets`).  highlight: per kind,
    heads ``(layer, head)`` outlined in red (e.g. each kind's top heads).
    """
    frame, _ = unpack(frame)
    require(frame, ["layer", "head", "score"], "head_heatmap")
    frame = frame if "kind" in frame.columns else frame.assign(kind="score")
    present = list(dict.fromkeys(frame["kind"]))
    kinds = present if kinds is None else ([kinds] if isinstance(kinds, str) else list(kinds))
    bad = [k for k in kinds if k not in present]
    if bad:
        raise InputError(f"kinds {bad} are not in the frame; it has {present}")
    cols = max(1, min(cols, len(kinds)))
    rows = math.ceil(len(kinds) / cols)
    n_layers = frame["layer"].nunique()
    panel = max(220, 16 * n_layers + 60)  # px per panel row: a cell stays readable at 30 layers
    fig = make_subplots(
        rows=rows,
        cols=cols,
        subplot_titles=kinds,
        horizontal_spacing=0.08,
        vertical_spacing=min(0.3, 90 / (panel * rows)) if rows > 1 else 0.0,
    )
    for i, kind in enumerate(kinds):
        grid = frame[frame["kind"] == kind].pivot_table(index="layer", columns="head", values="score", aggfunc="mean")
        z = grid.to_numpy()
        signed = bool(np.nanmin(z) < 0)
        show = annotate if annotate is not None else grid.shape[0] <= 16 and grid.shape[1] <= 16
        fig.add_trace(
            go.Heatmap(
                z=z,
                x=[str(h) for h in grid.columns],
                y=[str(l) for l in grid.index],
                coloraxis="coloraxis2" if signed else "coloraxis",
                text=np.round(z, 2) if show else None,
                texttemplate="%{text}" if show else None,
                hovertemplate=f"{kind}<br>L%{{y}}H%{{x}}: %{{z:.3f}}<extra></extra>",
            ),
            row=i // cols + 1,
            col=i % cols + 1,
        )
        if selectable:
            layers, heads = np.meshgrid(grid.index, grid.columns, indexing="ij")
            fig.add_trace(
                head_targets(
                    [str(h) for h in heads.ravel()],
                    [str(l) for l in layers.ravel()],
                    layers,
                    heads,
                    z,
                    name=kind,
                    size=max(8, min(30, 400 // max(grid.shape))),
                ),
                row=i // cols + 1,
                col=i % cols + 1,
            )
        for l, h in (highlight or {}).get(kind, []):  # outlined: e.g. the top heads of the kind
            fig.add_trace(
                go.Scatter(
                    x=[str(h)],
                    y=[str(l)],
                    mode="markers",
                    marker=dict(
                        size=max(10, min(34, 440 // max(grid.shape))),
                        symbol="square-open",
                        color="#d62728",
                        line=dict(width=3),
                    ),
                    hoverinfo="skip",
                    showlegend=False,
                    name=f"{kind} (highlight)",
                ),
                row=i // cols + 1,
                col=i % cols + 1,
            )
        # integer ticks (category axes, not 0.5 steps); axis titles only on the outer panels, so
        # they never sit under the next row's subplot title
        fig.update_xaxes(
            type="category", title_text="head" if i // cols == rows - 1 else None, row=i // cols + 1, col=i % cols + 1
        )
        fig.update_yaxes(
            type="category",
            title_text="layer" if i % cols == 0 else None,
            autorange="reversed",
            row=i // cols + 1,
            col=i % cols + 1,
        )
    # fractions of attention share one 0..1 scale; signed scores (copying) a diverging one
    top = max(1.0, float(frame.loc[frame["kind"].isin(kinds), "score"].max()))
    fig.update_layout(
        title=title,
        height=80 + panel * rows,
        margin=dict(l=50, r=40, t=60, b=40),
        coloraxis=dict(colorscale="Viridis", cmin=0.0, cmax=top, colorbar=dict(title="score", x=1.02)),
        coloraxis2=dict(colorscale="RdBu", cmin=-1.0, cmax=1.0, colorbar=dict(title="signed", x=1.12)),
    )
    return fig


def composition_heatmap(frame: pd.DataFrame, kind: str = "K", *, title: str | None = None) -> go.Figure:
    """One composition kind as a source head (rows) x destination head (columns) matrix;
    cells where the source is not in an earlier layer are blank.

    frame: :func:`interp.heads.composition_scores`.
    """
    require(frame, ["kind", "src_layer", "src_head", "dst_layer", "dst_head", "score"], "composition_heatmap")
    sub = frame[frame["kind"] == kind]
    if sub.empty:
        raise InputError(f"composition kind {kind!r} is not in the frame; it has {sorted(set(frame['kind']))}")
    n_layers = int(max(sub["src_layer"].max(), sub["dst_layer"].max())) + 1
    n_heads = int(max(sub["src_head"].max(), sub["dst_head"].max())) + 1
    labels = [f"L{l}H{h}" for l in range(n_layers) for h in range(n_heads)]
    z = np.full((len(labels), len(labels)), np.nan)
    z[sub["src_layer"] * n_heads + sub["src_head"], sub["dst_layer"] * n_heads + sub["dst_head"]] = sub["score"]
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=labels,
            y=labels,
            colorscale="Viridis",
            zmin=0.0,
            hoverongaps=False,
            colorbar=dict(title="score"),
            hovertemplate=f"{kind}-composition<br>%{{y}} -> %{{x}}: %{{z:.3f}}<extra></extra>",
        )
    )
    fig.update_layout(
        title=title or f"{kind}-composition (source -> destination)",
        height=max(360, 40 + 18 * len(labels)),
        margin=dict(l=60, r=20, t=50, b=60),
    )
    fig.update_xaxes(title="destination head")
    fig.update_yaxes(title="source head", autorange="reversed")
    return fig


def ablation_bar(frame, *, title: str | None = None) -> go.Figure:
    """The task metric clean, with the target heads ablated, and with each random control
    (bars: clean, target, random mean with its standard deviation; dots: each random draw).

    frame: :func:`interp.ablation.ablation_effect`.
    """
    frame, _ = unpack(frame)
    require(frame, ["condition", "value", "heads"], "ablation_bar")
    metric = str(frame["metric"].iloc[0]) if "metric" in frame.columns else "value"
    clean = frame[frame["condition"] == "clean"]["value"]
    target = frame[frame["condition"] == "target"]
    rand = frame[frame["condition"] == "random"]
    names, values, errors = ["clean"], [float(clean.mean())], [0.0]
    if not target.empty:
        names.append("target heads")
        values.append(float(target["value"].mean()))
        errors.append(0.0)
    if not rand.empty:
        names.append(f"random heads (n={len(rand)})")
        values.append(float(rand["value"].mean()))
        errors.append(float(rand["value"].std(ddof=0)))
    hover = ["", " ".join(target["heads"]) if not target.empty else "", ""]
    fig = go.Figure(
        go.Bar(
            x=names,
            y=values,
            error_y=dict(type="data", array=errors),
            hovertext=hover[: len(names)],
            marker_color=["#7f7f7f", "#d62728", "#1f77b4"][: len(names)],
            name=metric,
        )
    )
    if not rand.empty:
        fig.add_trace(
            go.Scatter(
                x=[names[-1]] * len(rand),
                y=rand["value"],
                mode="markers",
                name="random draws",
                marker=dict(color="black", size=6),
                hovertext=rand["heads"],
            )
        )
    fig.update_layout(
        title=title,
        yaxis_title=metric,
        showlegend=False,
        height=380,
        margin=dict(l=60, r=20, t=50 if title else 20, b=40),
    )
    return fig


def loss_by_position_plot(frame: pd.DataFrame, *, title: str | None = None, label: str = "loss") -> go.Figure:
    """Mean next-token loss (nats) against position with a +-1 standard-error band.

    frame: :func:`interp.heads.loss_by_position`.
    """
    require(frame, ["pos", "loss"], "loss_by_position_plot")
    fig = go.Figure()
    if "sem" in frame.columns and frame["sem"].notna().any():
        upper, lower = frame["loss"] + frame["sem"], frame["loss"] - frame["sem"]
        fig.add_trace(
            go.Scatter(
                x=pd.concat([frame["pos"], frame["pos"][::-1]]),
                y=pd.concat([upper, lower[::-1]]),
                fill="toself",
                fillcolor="rgba(31,119,180,0.2)",
                line=dict(width=0),
                hoverinfo="skip",
                showlegend=False,
            )
        )
    fig.add_trace(
        go.Scatter(
            x=frame["pos"],
            y=frame["loss"],
            mode="lines",
            name=label,
            hovertemplate="pos %{x}: %{y:.3f} nats<extra></extra>",
        )
    )
    fig.update_layout(
        title=title,
        xaxis_title="position (predicting the next token)",
        yaxis_title="loss (nats)",
        height=360,
        margin=dict(l=60, r=20, t=50 if title else 20, b=50),
    )
    return fig


def induction_bar(frame, *, title: str | None = None) -> go.Figure:
    """Share of the in-context gain removed per ablation: the induction heads against each
    random draw (dots), one group of bars per way of ablating (a frame from
    :func:`interp.heads.induction_ablation`)."""
    frame, meta = unpack(frame)
    require(frame, ["how", "condition", "removed"], "induction_bar")
    parts = frame[frame["condition"] != "none"]
    hows = list(dict.fromkeys(parts["how"]))
    fig = go.Figure()
    target = parts[parts["condition"] == "induction"].set_index("how")["removed"]
    rand = parts[parts["condition"] == "random"]
    fig.add_trace(
        go.Bar(x=hows, y=[float(target.get(h, np.nan)) for h in hows], name="induction heads", marker_color="#d62728")
    )
    fig.add_trace(
        go.Bar(
            x=hows,
            y=[float(rand[rand["how"] == h]["removed"].mean()) for h in hows],
            name="random heads (mean)",
            marker_color="#1f77b4",
        )
    )
    fig.add_trace(
        go.Scatter(
            x=rand["how"],
            y=rand["removed"],
            mode="markers",
            name="random draws",
            marker=dict(color="black", size=7),
            hovertext=rand.get("heads"),
        )
    )
    k = meta.get("k", "")
    fig.update_layout(
        title=title or f"share of the in-context gain removed by ablating {k} heads",
        barmode="group",
        yaxis_title="gain removed (1 = all)",
        yaxis_range=[min(0.0, float(parts["removed"].min())) - 0.05, 1.05],
        height=380,
    )
    return fig


def sink_plot(share, removal=None, *, title: str | None = None) -> go.Figure:
    """Attention mass on the first token by layer (a :func:`interp.heads.sink_share` frame) and,
    with ``removal`` (:func:`interp.heads.sink_removal`), the loss by position with and
    without the first token."""
    share, _ = unpack(share)
    removal = unpack(removal)[0] if removal is not None else None
    require(share, ["layer", "sink_share"], "sink_plot")
    cols = 2 if removal is not None else 1
    fig = make_subplots(
        rows=1,
        cols=cols,
        subplot_titles=["attention to the first token, by layer"]
        + (["loss without the first token"] if removal is not None else []),
    )
    fig.add_trace(
        go.Bar(
            x=share["layer"],
            y=share["sink_share"],
            name="sink share",
            hovertemplate="layer %{x}: %{y:.3f}<extra></extra>",
        ),
        row=1,
        col=1,
    )
    fig.update_xaxes(title_text="layer", tickmode="linear", dtick=max(1, len(share) // 15), row=1, col=1)
    fig.update_yaxes(title_text="share of attention", range=[0, 1], row=1, col=1)
    if removal is not None:
        require(removal, ["pos", "with_first", "without_first"], "sink_plot")
        for col, name in (("with_first", "with the first token"), ("without_first", "without it")):
            fig.add_trace(go.Scatter(x=removal["pos"], y=removal[col], mode="lines", name=name), row=1, col=2)
        fig.update_xaxes(title_text="position", row=1, col=2)
        fig.update_yaxes(title_text="loss (nats)", row=1, col=2)
    fig.update_layout(title=title, height=380)
    return fig
