"""Figures of training dynamics: curves over a checkpoint series (:mod:`interp.dynamics`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

#: panel -> (measures drawn in it, y title)
PANELS: dict[str, tuple[tuple[str, ...], str]] = {
    "loss": (("repeat_loss", "first_loss"), "loss (nats)"),
    "heads": (("prefix_matching", "previous_token"), "head score"),
    "icl": (("icl_score",), "ICL score (nats)"),
}
LABELS = {
    "repeat_loss": "loss on the repeated copy",
    "first_loss": "loss on the first copy",
    "prefix_matching": "prefix matching (induction heads)",
    "previous_token": "previous token (earlier layer)",
    "icl_score": "ICL score (late - early)",
}
COLORS = {
    "repeat_loss": "#d62728",
    "first_loss": "#ff9896",
    "prefix_matching": "#1f77b4",
    "previous_token": "#aec7e8",
    "icl_score": "#2ca02c",
}


def phase_figure(
    curves: pd.DataFrame,
    *,
    step: int | None = None,
    change_steps: Mapping[str, float] | None = None,
    title: str = "",
    panels: Sequence[str] = ("loss", "heads", "icl"),
) -> go.Figure:
    """The induction phase change in one figure: one panel per group of measures (loss, head
    scores, ICL score) against the training step (log axis; step 0 drawn at 0.5), each curve the
    mean over units with a 95% band (1.96 standard errors).  ``curves``:
    ``DataFrame[step, measure, value]`` (``unit`` optional) from :func:`interp.dynamics.phase_curves`.
    ``change_steps``: {measure: step} drawn as dotted lines in the curve's colour; ``step``: the
    chosen checkpoint, a grey line across every panel."""
    from interp.plots import require

    require(curves, ["step", "measure", "value"], "phase_figure")
    g = curves.groupby(["measure", "step"])["value"]
    stats = pd.DataFrame({"mean": g.mean(), "sem": g.std(ddof=1) / np.sqrt(g.count())}).fillna(0.0).reset_index()
    fig = make_subplots(
        rows=len(panels),
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.06,
        subplot_titles=[PANELS[p][1] for p in panels],
    )
    for r, panel in enumerate(panels, start=1):
        for m in PANELS[panel][0]:
            part = stats[stats["measure"] == m].sort_values("step")
            if part.empty:
                continue
            x = np.maximum(part["step"].to_numpy(dtype=float), 0.5)  # step 0 on a log axis
            lo, hi = part["mean"] - 1.96 * part["sem"], part["mean"] + 1.96 * part["sem"]
            color = COLORS.get(m, "#555")
            fig.add_trace(
                go.Scatter(
                    x=np.concatenate([x, x[::-1]]),
                    y=np.concatenate([hi, lo[::-1]]),
                    fill="toself",
                    fillcolor=color,
                    opacity=0.15,
                    line={"width": 0},
                    hoverinfo="skip",
                    showlegend=False,
                ),
                row=r,
                col=1,
            )
            fig.add_trace(
                go.Scatter(x=x, y=part["mean"], mode="lines+markers", name=LABELS.get(m, m), line={"color": color}),
                row=r,
                col=1,
            )
            if change_steps and m in change_steps and np.isfinite(change_steps[m]):
                fig.add_vline(
                    x=max(float(change_steps[m]), 0.5), line={"color": color, "dash": "dot", "width": 2}, row=r, col=1
                )
        if step is not None:
            fig.add_vline(x=max(float(step), 0.5), line={"color": "#444", "width": 1.5}, row=r, col=1)
    fig.update_xaxes(type="log")  # every panel: shared axes must agree on their type
    fig.update_xaxes(title_text="training step", row=len(panels), col=1)
    fig.update_layout(title=title or "Training dynamics", height=260 * len(panels), legend={"orientation": "h"})
    return fig
