"""Plotly figures of patching results and circuits (they take the frames and circuits the analyses return)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from circuits.graph import Circuit
from interp.errors import InputError
from interp.plots import head_targets, unpack


def _pos_labels(positions: Sequence[int], tokens: Sequence[str] | None) -> list[str]:
    if tokens is None:
        return [str(p) for p in positions]
    return [f"{p}: {tokens[p]}" if 0 <= p < len(tokens) else str(p) for p in positions]


def _check(df: pd.DataFrame, value: str) -> None:
    if value not in df.columns:
        raise InputError(
            f"column {value!r} not in the frame; choose one of {[c for c in df.columns if df[c].dtype.kind == 'f']}"
        )
    if "layer" not in df.columns:
        raise InputError("a patching frame needs a 'layer' column (from circuits.patching.patch or attribute)")


def patching_heatmap(
    df,
    *,
    value: str = "normalised",
    tokens: Sequence[str] | None = None,
    title: str | None = None,
    selectable: bool = False,
) -> go.Figure:
    """Heatmap of a sweep: layer x position, layer x head, or (layer, head) x position.

    value: the column shown (``normalised``, ``effect`` or ``value``).  tokens: string tokens
    of one prompt, to label positions.  Windows (a ``window`` column) get one panel each;
    pattern sweeps by source position one panel per head of largest effect.  df: the sweep's
    frame or its :class:`interp.runs.Result` (whose meta gives the title's site, metric and
    direction).  selectable: per-head sweeps get an invisible click target on each cell
    (:func:`interp.plots.head_targets`, customdata ``[layer, head, value]``), for an app's point
    selection; cells of windows of several layers, which name no single head, get none.
    """
    df, meta = unpack(df)
    _check(df, value)
    if "src_pos" in df.columns:
        return _pattern_panels(df, value, tokens, title)
    panels = (
        [("", df)] if "window" not in df.columns else [(f"window {w}", d) for w, d in df.groupby("window", sort=True)]
    )
    by_pos_and_head = "pos" in df.columns and "head" in df.columns
    xcol = "pos" if "pos" in df.columns else ("head" if "head" in df.columns else None)
    fig = make_subplots(rows=1, cols=len(panels), subplot_titles=[p[0] for p in panels])
    zmax = float(np.nanmax(np.abs(df[value].to_numpy()))) or 1.0
    n_rows = 0
    for i, (_, d) in enumerate(panels, start=1):
        d = d.sort_values(["layer"] + (["head"] if by_pos_and_head else []))
        layer = d["layers"].astype(str) if "layers" in d.columns else d["layer"].astype(str)
        row = ("L" + layer + " H" + d["head"].astype(str)) if by_pos_and_head else layer
        d = d.assign(_row=row, _x=d[xcol] if xcol else 0)
        grid = d.pivot_table(index="_row", columns="_x", values=value, aggfunc="first").reindex(
            list(dict.fromkeys(d["_row"]))
        )
        n_rows = max(n_rows, len(grid))
        xs = list(grid.columns)
        fig.add_trace(
            go.Heatmap(
                z=grid.to_numpy(),
                x=_pos_labels(xs, tokens) if xcol == "pos" else [str(x) for x in xs],
                y=list(grid.index),
                colorscale="RdBu",
                zmid=0,
                zmin=-zmax,
                zmax=zmax,
                colorbar=dict(title=value),
                showscale=i == len(panels),
                hovertemplate=f"%{{y}}, {xcol or ''} %{{x}}: %{{z:.4f}}<extra></extra>",
            ),
            row=1,
            col=i,
        )
        single = d if "layers" not in d.columns else d[~d["layers"].astype(str).str.contains("-")]
        if selectable and "head" in d.columns and len(single):
            fig.add_trace(
                head_targets(
                    _pos_labels(list(single["_x"]), tokens) if xcol == "pos" else single["_x"].astype(str),
                    single["_row"],
                    single["layer"],
                    single["head"],
                    single[value],
                    name=f"{value}",
                    size=max(8, min(30, 400 // max(grid.shape))),
                ),
                row=1,
                col=i,
            )
        fig.update_xaxes(
            title_text={"pos": "position", "head": "head"}.get(xcol or "", ""), type="category", row=1, col=i
        )
        fig.update_yaxes(
            title_text="layer, head" if by_pos_and_head else "layer",
            autorange="reversed",
            type="category",
            row=1,
            col=i,
        )
    fig.update_layout(
        title=title or _title(meta, value),
        height=max(300, 18 * n_rows + 150),
    )
    return fig


def _title(meta: dict, value: str) -> str:
    direction = "noising" if meta.get("direction") == "noise" else "denoising"
    return f"{direction} patching of {meta.get('site', '')} ({meta.get('metric', '')}, {value})"


def _pattern_panels(df: pd.DataFrame, value: str, tokens, title) -> go.Figure:
    score = df.groupby(["layer", "head"])[value].apply(lambda s: s.abs().max()).sort_values(ascending=False)
    top = list(score.index[:6])
    fig = make_subplots(rows=1, cols=len(top), subplot_titles=[f"L{l} H{h}" for l, h in top])
    zmax = float(np.nanmax(np.abs(df[value].to_numpy()))) or 1.0
    for i, (l, h) in enumerate(top, start=1):
        d = df[(df["layer"] == l) & (df["head"] == h)]
        grid = d.pivot_table(index="pos", columns="src_pos", values=value, aggfunc="first")
        fig.add_trace(
            go.Heatmap(
                z=grid.to_numpy(),
                x=_pos_labels(list(grid.columns), tokens),
                y=_pos_labels(list(grid.index), tokens),
                colorscale="RdBu",
                zmid=0,
                zmin=-zmax,
                zmax=zmax,
                showscale=i == len(top),
            ),
            row=1,
            col=i,
        )
        fig.update_xaxes(title_text="source position", type="category", row=1, col=i)
        fig.update_yaxes(title_text="destination", autorange="reversed", type="category", row=1, col=i)
    fig.update_layout(title=title or f"attention-pattern patching ({value}), heads of largest effect")
    return fig


def circuit_graph(circuit: Circuit, *, kept_only: bool = True, title: str | None = None) -> go.Figure:
    """The circuit with layers as columns: input left, logits right; heads stacked by index and
    the MLP below them (a grouped-query layer's key-value nodes just left of its heads); edges
    red where corrupting them lowers the metric (negative score), blue where it raises it, as
    wide as ``|score|`` (four width bands); hover a node or an edge's midpoint for its score.
    Readable with hundreds of heads: prune first (``circuit.prune(top_k=...)``)."""
    edges = circuit.kept_edges if kept_only else circuit.edges
    n_heads = int(circuit.meta.get("n_heads", max([n.head or 0 for n in circuit.nodes] + [0]) + 1))
    groups = circuit.meta.get("kv_groups") or {}
    group = len(next(iter(groups.values()))) if groups else 1  # query heads per key-value node
    pos = {}
    for n in circuit.nodes:
        if n.kind == "kv":
            pos[n.name] = (n.layer - 0.35, (n.head or 0) * group + (group - 1) / 2)
        else:
            pos[n.name] = (n.layer, {"input": n_heads / 2, "logits": n_heads / 2, "mlp": n_heads}.get(n.kind, n.head))
    fig = go.Figure()
    top = max([abs(e.score) for e in edges] + [1e-12])
    for sign, colour in ((-1, "#b2182b"), (1, "#2166ac")):
        for band in range(4):
            lo, hi = top * band / 4, top * (band + 1) / 4
            xs, ys = [], []
            for e in edges:
                if (e.score < 0) == (sign < 0) and (lo < abs(e.score) <= hi or (band == 0 and abs(e.score) == 0)):
                    (x0, y0), (x1, y1) = pos[e.src], pos[e.dst]
                    xs += [x0, (x0 + x1) / 2, x1, None]
                    ys += [y0, (y0 + y1) / 2 + 0.15, y1, None]
            if xs:
                fig.add_trace(
                    go.Scatter(
                        x=xs,
                        y=ys,
                        mode="lines",
                        hoverinfo="skip",
                        showlegend=False,
                        line=dict(width=1 + 2 * band, color=colour),
                        opacity=0.35 + 0.2 * band,
                    )
                )
    if edges:  # hover targets at the edge midpoints
        mids = [((pos[e.src][0] + pos[e.dst][0]) / 2, (pos[e.src][1] + pos[e.dst][1]) / 2 + 0.15) for e in edges]
        fig.add_trace(
            go.Scatter(
                x=[m[0] for m in mids],
                y=[m[1] for m in mids],
                mode="markers",
                marker=dict(size=6, color="rgba(0,0,0,0)"),
                hoverinfo="text",
                showlegend=False,
                text=[f"{e.key}: {e.score:.4f}" for e in edges],
            )
        )
    active = {x for e in edges for x in (e.src, e.dst)}
    names = [n.name for n in circuit.nodes if n.name in active or not kept_only]
    fig.add_trace(
        go.Scatter(
            x=[pos[n][0] for n in names],
            y=[pos[n][1] for n in names],
            mode="markers+text" if len(names) <= 80 else "markers",
            text=names,
            customdata=names,  # click targets: an app maps a selected point back to its node
            name="nodes",
            textposition="top center",
            marker=dict(size=11, color="#444"),
            hoverinfo="text",
            showlegend=False,
        )
    )
    n_layers = int(circuit.meta.get("n_layers", max(n.layer for n in circuit.nodes)))
    step = max(1, n_layers // 16)
    ticks = [-1] + list(range(0, n_layers, step)) + [n_layers]
    fig.update_xaxes(
        tickvals=ticks, ticktext=["input"] + [f"L{l}" for l in ticks[1:-1]] + ["logits"], range=[-1.6, n_layers + 0.6]
    )
    fig.update_yaxes(visible=False, autorange="reversed")
    fig.update_layout(
        title=title
        or f"circuit: {len(edges)} edges ({circuit.meta.get('method', '')}, {circuit.meta.get('metric', '')})",
        height=max(450, 40 * n_heads + 150),
        plot_bgcolor="white",
    )
    return fig


def faithfulness_plot(curve, title: str | None = None) -> go.Figure:
    """Faithfulness against the circuit's size: a :func:`circuits.faithfulness.faithfulness_curve` frame
    (edges kept) or a :meth:`circuits.graph.Circuit.mib` frame (percent of edges, with CPR and
    CMD in the title, read from its Result's meta)."""
    curve, a = unpack(curve)
    x = "percent" if "percent" in curve.columns else "n_edges"
    for col in (x, "faithfulness"):
        if col not in curve.columns:
            raise InputError(f"the frame needs a {col!r} column (from faithfulness_curve or Circuit.mib)")
    fig = go.Figure(
        go.Scatter(
            x=curve[x],
            y=curve["faithfulness"],
            mode="lines+markers",
            hovertemplate=f"{x} %{{x}}: faithfulness %{{y:.3f}}<extra></extra>",
        )
    )
    fig.add_hline(y=1.0, line_dash="dot")
    extra = ""
    if "cpr" in a:
        extra = (
            f": CPR {a['cpr']:.3f} [{a['cpr_ci'][0]:.3f}, {a['cpr_ci'][1]:.3f}], "
            f"CMD {a['cmd']:.3f} [{a['cmd_ci'][0]:.3f}, {a['cmd_ci'][1]:.3f}]"
        )
    fig.update_layout(
        title=title or f"faithfulness of the top circuits{extra}",
        xaxis_title="edges kept (% of all)" if x == "percent" else "edges kept",
        yaxis_title="faithfulness (circuit - corrupt) / (clean - corrupt)",
        xaxis_type="log",
    )
    return fig


def calibration_plot(df, *, label: int = 5, title: str | None = None) -> go.Figure:
    """Attribution patching and EAP-IG against exact patching, one point per head (a
    :func:`circuits.calibration.calibration` frame); the heads each estimate misses most are named."""
    from circuits.calibration import ESTIMATES, worst

    df, meta = unpack(df)
    for col in ("layer", "head", "exact", *ESTIMATES):
        if col not in df.columns:
            raise InputError(f"the frame needs a {col!r} column (from circuits.calibration.calibration)")
    rho = meta.get("spearman", {})
    fig = make_subplots(
        rows=1, cols=2, subplot_titles=[f"{e} (Spearman {rho.get(e, float('nan')):.2f})" for e in ESTIMATES]
    )
    names = [f"L{l}H{h}" for l, h in zip(df["layer"], df["head"])]
    lo, hi = float(df[["exact", *ESTIMATES]].min().min()), float(df[["exact", *ESTIMATES]].max().max())
    for i, est in enumerate(ESTIMATES, start=1):
        fig.add_trace(
            go.Scatter(
                x=df["exact"],
                y=df[est],
                mode="markers",
                text=names,
                hoverinfo="text+x+y",
                marker=dict(size=6),
                showlegend=False,
            ),
            row=1,
            col=i,
        )
        missed = worst(df, est, label)
        fig.add_trace(
            go.Scatter(
                x=missed["exact"],
                y=missed[est],
                mode="markers+text",
                showlegend=False,
                text=[f"L{l}H{h}" for l, h in zip(missed["layer"], missed["head"])],
                textposition="top center",
                marker=dict(size=9, color="#d62728"),
            ),
            row=1,
            col=i,
        )
        fig.add_trace(
            go.Scatter(
                x=[lo, hi],
                y=[lo, hi],
                mode="lines",
                line=dict(dash="dot", color="#999"),
                showlegend=False,
                hoverinfo="skip",
            ),
            row=1,
            col=i,
        )
        fig.update_xaxes(title_text=f"exact effect ({meta.get('metric', '')})", row=1, col=i)
        fig.update_yaxes(title_text="estimate", row=1, col=i)
    secs = meta.get("seconds", {})
    cost = ", ".join(f"{k} {v:.1f} s" for k, v in secs.items())
    fig.update_layout(title=title or f"gradient estimates vs exact head patching (noising); cost: {cost}", height=450)
    return fig


def agreement_scatter(
    exact: pd.DataFrame, estimate: pd.DataFrame, value: str = "effect", title: str | None = None
) -> go.Figure:
    """Exact patching effects against attribution estimates, one point per cell."""
    keys = [c for c in ("layer", "window", "pos", "head", "src_pos") if c in exact.columns and c in estimate.columns]
    merged = exact.merge(estimate, on=keys, suffixes=("_exact", "_estimate"))
    label = merged.apply(lambda r: " ".join(f"{k}={int(r[k])}" for k in keys), axis=1)
    fig = go.Figure(
        go.Scatter(
            x=merged[f"{value}_exact"], y=merged[f"{value}_estimate"], mode="markers", text=label, hoverinfo="text+x+y"
        )
    )
    lo = float(min(merged[f"{value}_exact"].min(), merged[f"{value}_estimate"].min()))
    hi = float(max(merged[f"{value}_exact"].max(), merged[f"{value}_estimate"].max()))
    fig.add_trace(go.Scatter(x=[lo, hi], y=[lo, hi], mode="lines", line=dict(dash="dot"), showlegend=False))
    fig.update_layout(
        title=title or f"attribution patching vs exact patching ({value})",
        xaxis_title=f"exact {value}",
        yaxis_title=f"attribution {value}",
        showlegend=False,
    )
    return fig
