"""Next-token distributions side by side (frames of :func:`interp.logits.next_token_probs`)."""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from interp.errors import InputError
from interp.plots import require


def next_token_bars(frames: Mapping[str, pd.DataFrame], *, title: str | None = None) -> go.Figure:
    """One horizontal bar panel per labelled distribution (e.g. "unsteered", "steered"),
    most probable token on top; the x axes share the 0..1 probability scale."""
    if not frames:
        raise InputError("no distributions to draw")
    for label, frame in frames.items():
        require(frame, ["token", "prob"], f"next_token_bars (frame {label!r})", "from interp.logits.next_token_probs")
    fig = make_subplots(
        rows=1, cols=len(frames), subplot_titles=list(frames), shared_xaxes=True, horizontal_spacing=0.12
    )
    for i, (label, frame) in enumerate(frames.items(), start=1):
        fig.add_trace(
            go.Bar(
                x=frame["prob"],
                y=[f"{t} " for t in frame["token"]],
                orientation="h",
                name=label,
                hovertemplate="%{y}: %{x:.4f}<extra>" + label + "</extra>",
            ),
            row=1,
            col=i,
        )
        fig.update_yaxes(autorange="reversed", type="category", row=1, col=i)
        fig.update_xaxes(range=[0, 1], title_text="probability", row=1, col=i)
    k = max(len(f) for f in frames.values())
    fig.update_layout(title=title, showlegend=False, height=max(300, 24 * k + 120), margin=dict(t=60, b=40))
    return fig
