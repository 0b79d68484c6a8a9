"""Attention-pattern figures: one head large, all heads of a layer as a grid, and a token
view that colours source tokens by the attention a destination token pays them.

Patterns come as ``[dest, src]`` arrays (torch or numpy) or as the tidy frame of
:func:`interp.attention.patterns_frame` (columns ``dest, src, attention``, one head).
Positions are numeric axes labelled with the tokens, so repeated tokens stay distinct.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from interp.errors import InputError
from interp.plots import require

COLORSCALE = "Blues"


def _matrix(pattern) -> np.ndarray:
    """``[dest, src]`` float array with NaN where src > dest (masked, drawn blank)."""
    if isinstance(pattern, pd.DataFrame):
        missing = {"dest", "src", "attention"} - set(pattern.columns)
        if missing:
            raise InputError(f"a pattern frame needs columns dest, src, attention; missing {sorted(missing)}")
        if "head" in pattern and pattern["head"].nunique() > 1 or "layer" in pattern and pattern["layer"].nunique() > 1:
            raise InputError("the pattern frame holds several heads: select one (layer, head) first")
        n = int(max(pattern["dest"].max(), pattern["src"].max())) + 1
        m = np.full((n, n), np.nan)
        m[pattern["dest"].to_numpy(), pattern["src"].to_numpy()] = pattern["attention"].to_numpy()
        return m
    m = np.asarray(pattern.detach().cpu() if hasattr(pattern, "detach") else pattern, dtype=float)
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise InputError(f"a pattern must be a square [dest, src] matrix, got shape {m.shape}")
    m = m.copy()
    m[np.triu_indices(m.shape[0], k=1)] = np.nan
    return m


def _check_tokens(str_tokens: Sequence[str], n: int) -> list[str]:
    if len(str_tokens) != n:
        raise InputError(f"{len(str_tokens)} token labels for a pattern over {n} positions")
    return [str(t) for t in str_tokens]


def _hover(str_tokens: list[str]) -> np.ndarray:
    """customdata [dest, src, 2]: the dest and src token strings for the hover text."""
    n = len(str_tokens)
    toks = np.array(str_tokens, dtype=object)
    return np.stack([np.repeat(toks[:, None], n, 1), np.repeat(toks[None, :], n, 0)], axis=-1)


HOVER = "dest %{y} <b>%{customdata[0]}</b><br>src %{x} <b>%{customdata[1]}</b><br>attention %{z:.3f}<extra></extra>"


def attention_pattern(
    pattern, str_tokens: Sequence[str], *, title: str | None = None, zmax: float | None = 1.0, max_labels: int = 80
) -> go.Figure:
    """One head's pattern as a heatmap: rows are destination (query) positions, columns
    source (key) positions, both labelled with their tokens; hover shows the probability.

    pattern: ``[dest, src]`` (probabilities in [0, 1]).  zmax: top of the colour scale
    (None: the pattern's maximum).  Tick labels are thinned beyond ``max_labels`` positions.
    """
    m = _matrix(pattern)
    toks = _check_tokens(str_tokens, m.shape[0])
    n = len(toks)
    step = max(1, math.ceil(n / max_labels))
    ticks = dict(
        tickmode="array", tickvals=list(range(0, n, step)), ticktext=[f"{toks[i]} ·{i}" for i in range(0, n, step)]
    )
    fig = go.Figure(
        go.Heatmap(
            z=m,
            x=list(range(n)),
            y=list(range(n)),
            customdata=_hover(toks),
            hovertemplate=HOVER,
            colorscale=COLORSCALE,
            zmin=0.0,
            zmax=zmax,
            colorbar=dict(title="attn"),
            hoverongaps=False,
        )
    )
    side = min(1000, max(560, 18 * n + 200))  # large enough to read a 20-token prompt's labels
    fig.update_layout(
        title=title,
        width=side + 90,
        height=side,
        margin=dict(l=60, r=10, t=50 if title else 20, b=60),
        plot_bgcolor="white",
    )
    fig.update_xaxes(title="source position (key)", tickangle=-90, tickfont=dict(size=9), **ticks)
    fig.update_yaxes(
        title="destination position (query)", autorange="reversed", tickfont=dict(size=9), scaleanchor="x", **ticks
    )
    return fig


def head_grid(
    patterns,
    str_tokens: Sequence[str],
    *,
    layer: int,
    cols: int = 4,
    heads: Sequence[int] | None = None,
    max_labels: int = 24,
) -> go.Figure:
    """All heads of one layer as small patterns on one colour scale (0 to 1).

    patterns: ``[n_heads, dest, src]``.  heads: the head numbers of the slices (default
    ``0..``).  Panels are titled ``L{layer}H{head}``, both axes labelled with the tokens
    (``token ·pos``, thinned beyond ``max_labels`` positions); hover shows tokens and value.
    """
    arr = np.asarray(patterns.detach().cpu() if hasattr(patterns, "detach") else patterns, dtype=float)
    if arr.ndim != 3:
        raise InputError(f"patterns must be [n_heads, dest, src], got shape {arr.shape}")
    heads = list(range(arr.shape[0])) if heads is None else list(heads)
    toks = _check_tokens(str_tokens, arr.shape[1])
    cols = max(1, min(cols, len(heads)))
    rows = math.ceil(len(heads) / cols)
    fig = make_subplots(
        rows=rows,
        cols=cols,
        subplot_titles=[f"L{layer}H{h}" for h in heads],
        horizontal_spacing=0.03,
        vertical_spacing=0.08,
    )
    custom = _hover(toks)
    for i, h in enumerate(heads):
        fig.add_trace(
            go.Heatmap(
                z=_matrix(arr[i]),
                customdata=custom,
                hovertemplate=HOVER,
                coloraxis="coloraxis",
                name=f"L{layer}H{h}",
                hoverongaps=False,
            ),
            row=i // cols + 1,
            col=i % cols + 1,
        )
    # token labels on both axes of every panel, thinned to at most max_labels per axis
    n = len(toks)
    step = max(1, math.ceil(n / max_labels))
    ticks = dict(
        tickmode="array",
        tickvals=list(range(0, n, step)),
        ticktext=[f"{toks[i]} ·{i}" for i in range(0, n, step)],
        tickfont=dict(size=7),
    )
    fig.update_layout(
        coloraxis=dict(colorscale=COLORSCALE, cmin=0.0, cmax=1.0, colorbar=dict(title="attn")),
        height=330 * rows + 40,
        margin=dict(l=70, r=10, t=40, b=10),
        plot_bgcolor="white",
    )
    fig.update_xaxes(constrain="domain", tickangle=-90, **ticks)
    fig.update_yaxes(autorange="reversed", constrain="domain", **ticks)
    for i in range(len(heads)):  # square panels
        fig.update_yaxes(scaleanchor=f"x{i + 1 if i else ''}", row=i // cols + 1, col=i % cols + 1)
    return fig


def layer_grid(result, layer: int | None = None, *, cols: int = 4) -> go.Figure:
    """:func:`head_grid` of one layer (default the last) from a tidy pattern frame
    (:func:`interp.attention.patterns_frame`) or the :class:`interp.runs.Result` of
    :func:`interp.attention.attention_patterns` (whose meta gives the token labels)."""
    from interp.runs import parts

    frame, meta = parts(result)
    require(frame, ["layer", "head", "dest", "src", "attention"], "layer_grid", "from interp.attention.patterns_frame")
    layers = sorted(int(l) for l in frame["layer"].unique())
    layer = layers[-1] if layer is None else int(layer)
    if layer not in layers:
        raise InputError(f"layer {layer} is not in the frame; it has {layers}")
    part = frame[frame["layer"] == layer]
    heads = sorted(int(h) for h in part["head"].unique())
    n = int(frame["dest"].max()) + 1
    arr = np.zeros((len(heads), n, n))
    index = {h: i for i, h in enumerate(heads)}
    arr[part["head"].map(index).to_numpy(), part["dest"].to_numpy(), part["src"].to_numpy()] = part["attention"]
    tokens = list(meta.get("str_tokens") or [str(i) for i in range(n)])
    return head_grid(arr, tokens, layer=layer, cols=cols, heads=heads)


def _pool(m: np.ndarray, bins: int) -> np.ndarray:
    """``[dest, src]`` pooled to ``[bins, bins]``: destinations averaged, sources summed, so each
    row stays a distribution over (coarse) sources and a sharp pattern stays sharp."""
    n = m.shape[0]
    if n <= bins:
        return m
    edges = np.linspace(0, n, bins + 1).round().astype(int)
    rows = np.add.reduceat(m, edges[:-1], axis=0) / np.diff(edges)[:, None]
    return np.add.reduceat(rows, edges[:-1], axis=1)


def head_overview(result, *, bins: int = 12, selectable: bool = True, selected: tuple[int, int] | None = None):
    """Every head of every layer at once: a layer (rows) x head (columns) grid of small attention
    thumbnails, one heatmap on one 0..1 colour scale, so the kinds of head read at a glance
    (a diagonal: previous-token; a column at the left: a sink on the first token; a stripe
    below the diagonal: induction).  Scales to 30 x 9 heads and to 32 x 32.

    result: the tidy frame of :func:`interp.attention.patterns_frame` (columns ``layer, head,
    dest, src, attention``) or the Result of :func:`interp.attention.attention_patterns`.
    bins: thumbnail side in cells; longer prompts are pooled (destinations averaged, sources
    summed: each thumbnail row is still a distribution).  selectable: an invisible click target
    on each thumbnail (:func:`interp.plots.head_targets`; customdata ``[layer, head, attention to
    the first token]``).  selected: a head outlined in red.
    """
    from interp.plots import head_targets
    from interp.runs import parts

    frame, _ = parts(result)
    require(
        frame, ["layer", "head", "dest", "src", "attention"], "head_overview", "from interp.attention.patterns_frame"
    )
    if bins < 2:
        raise InputError(f"bins must be at least 2, got {bins}")
    layers = sorted(int(l) for l in frame["layer"].unique())
    heads = sorted(int(h) for h in frame["head"].unique())
    n = int(frame["dest"].max()) + 1
    arr = np.zeros((len(layers), len(heads), n, n))
    li, hi = {l: i for i, l in enumerate(layers)}, {h: i for i, h in enumerate(heads)}
    arr[
        frame["layer"].map(li).to_numpy(),
        frame["head"].map(hi).to_numpy(),
        frame["dest"].to_numpy(),
        frame["src"].to_numpy(),
    ] = frame["attention"].to_numpy()
    b = min(bins, n)
    cell = b + 1  # a thumbnail and one blank separator
    big = np.full((len(layers) * cell - 1, len(heads) * cell - 1), np.nan)
    for i in range(len(layers)):
        for j in range(len(heads)):
            thumb = _pool(arr[i, j], b).copy()
            if n <= bins:  # unpooled: the masked cells blank, as in attention_pattern
                thumb[np.triu_indices(b, k=1)] = np.nan
            big[i * cell : i * cell + b, j * cell : j * cell + b] = thumb
    centre = (b - 1) / 2
    fig = go.Figure(
        go.Heatmap(
            z=big,
            x=np.arange(big.shape[1]),
            y=np.arange(big.shape[0]),
            colorscale=COLORSCALE,
            zmin=0.0,
            zmax=1.0,
            colorbar=dict(title="attn"),
            hoverinfo="skip",
            hoverongaps=False,
        )
    )
    if selectable:
        ls, hs = np.meshgrid(np.arange(len(layers)), np.arange(len(heads)), indexing="ij")
        fig.add_trace(
            head_targets(
                hs.ravel() * cell + centre,
                ls.ravel() * cell + centre,
                np.asarray(layers)[ls.ravel()],
                np.asarray(heads)[hs.ravel()],
                arr[ls.ravel(), hs.ravel(), :, 0].mean(-1),
                name="head",
                hover="attention to the first token (mean over destinations)",
                size=max(6, min(40, 900 // max(len(layers), len(heads)))),
            )
        )
    if selected is not None and selected[0] in li and selected[1] in hi:
        i, j = li[selected[0]], hi[selected[1]]
        fig.add_shape(
            type="rect",
            x0=j * cell - 0.5,
            x1=j * cell + b - 0.5,
            y0=i * cell - 0.5,
            y1=i * cell + b - 0.5,
            line=dict(color="#d62728", width=2),
        )
    px = max(2.0, min(14.0, 1500 / max(big.shape)))  # pixels per cell: 30 x 9 and 32 x 32 fit in 1,500 px
    fig.update_xaxes(
        tickmode="array",
        tickvals=[j * cell + centre for j in range(len(heads))],
        ticktext=[str(h) for h in heads],
        side="top",
        showgrid=False,
        zeroline=False,
    )
    fig.update_yaxes(
        tickmode="array",
        tickvals=[i * cell + centre for i in range(len(layers))],
        ticktext=[str(l) for l in layers],
        title="layer",
        autorange="reversed",
        scaleanchor="x",
        showgrid=False,
        zeroline=False,
    )
    fig.update_layout(
        width=round(px * big.shape[1]) + 180,
        height=round(px * big.shape[0]) + 110,
        margin=dict(l=60, r=10, t=70, b=10),
        plot_bgcolor="white",
        title=f"every head on the prompt: layer (rows) x head (columns), {len(layers)} x {len(heads)}; "
        "click one to select it",
    )
    return fig


def token_attention_html(weights, str_tokens: Sequence[str], dest: int) -> str:
    """HTML of the prompt with each source token shaded by the attention ``dest`` pays it.

    weights: ``[src]`` attention from position ``dest`` (row ``dest`` of a pattern).
    Shading is the attention itself on a fixed 0..1 scale (a uniform head looks pale, a head
    that attends to one token dark there); the exact value is in each token's tooltip.
    The destination token is outlined; tokens after it (which it cannot see) are grey.
    """
    w = np.asarray(weights.detach().cpu() if hasattr(weights, "detach") else weights, dtype=float)
    toks = _check_tokens(str_tokens, w.shape[0])
    if not 0 <= dest < len(toks):
        raise InputError(f"dest must be in [0, {len(toks)}), got {dest}")
    spans = []
    for i, tok in enumerate(toks):
        text = html.escape(tok)
        if i > dest:
            spans.append(
                f'<span style="color:#aaa;padding:2px 3px" title="pos {i}: after the destination">{text}</span>'
            )
            continue
        alpha = float(np.clip(w[i], 0.0, 1.0))
        style = (
            f"background:rgba(8,81,156,{alpha:.3f});color:{'white' if alpha > 0.55 else 'black'};"
            "padding:2px 3px;border-radius:3px;margin:1px"
        )
        if i == dest:
            style += ";outline:2px solid #d62728"
        spans.append(f'<span style="{style}" title="pos {i} {text}: {w[i]:.3f}">{text}</span>')
    return '<div style="line-height:2.1;font-family:monospace">' + " ".join(spans) + "</div>"


def token_view_html(
    patterns, str_tokens: Sequence[str], *, head: int | None = None, dest: int | None = None, label: str = ""
) -> str:
    """A self-contained HTML page (inline JavaScript, no network) of the prompt's tokens: hovering
    or clicking a token colours every token by the attention the hovered token pays it (a click
    pins it), like CircuitsVis's token view.

    patterns: ``[n_heads, dest, src]`` (one layer) or ``[dest, src]`` (one head).  head: which head
    of a layer to show; None: the mean over the layer's heads (still a distribution over sources).
    dest: the token shown before any hover (default the last).  Shading is the attention itself on
    a fixed 0..1 scale (``rgba(8, 81, 156, attention)``); tokens after the hovered one (which it
    cannot see) are grey.  A click also posts ``{interpToken: pos}`` to the parent window when the
    page is embedded (an app turns it into a selection).  For an iframe or any browser.
    """
    arr = np.asarray(patterns.detach().cpu() if hasattr(patterns, "detach") else patterns, dtype=float)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3 or arr.shape[1] != arr.shape[2]:
        raise InputError(f"patterns must be [n_heads, dest, src] or [dest, src], got shape {arr.shape}")
    if head is not None and not 0 <= head < arr.shape[0]:
        raise InputError(f"head must be in [0, {arr.shape[0]}), got {head}")
    m = arr.mean(0) if head is None else arr[head]  # the mean of distributions is a distribution
    toks = _check_tokens(str_tokens, m.shape[0])
    n = len(toks)
    dest = n - 1 if dest is None else int(dest)
    if not 0 <= dest < n:
        raise InputError(f"dest must be in [0, {n}), got {dest}")
    rows = np.round(np.nan_to_num(np.tril(m)), 4).tolist()
    spans = " ".join(
        f'<span class="tok" data-pos="{i}">{html.escape(t).replace(" ", "&nbsp;") or "&nbsp;"}</span>'
        for i, t in enumerate(toks)
    )
    return f"""<!doctype html><html><head><meta charset="utf-8"><style>
body {{ font-family: monospace; margin: 4px; }}
#tokens {{ line-height: 2.2; }}
.tok {{ padding: 2px 3px; border-radius: 3px; margin: 1px; cursor: pointer; }}
#info {{ font-family: sans-serif; font-size: 13px; color: #444; margin-bottom: 4px; }}
</style></head><body>
<div id="info"></div><div id="tokens">{spans}</div>
<script>
const A = {json.dumps(rows)};
const LABEL = {json.dumps(label)};
const spans = Array.from(document.querySelectorAll('#tokens .tok'));
let pinned = {dest};
function show(i) {{
  spans.forEach((s, j) => {{
    const w = j <= i ? A[i][j] : 0;
    s.style.backgroundColor = j <= i ? 'rgba(8, 81, 156, ' + w.toFixed(4) + ')' : 'transparent';
    s.style.color = j > i ? '#aaa' : (w > 0.55 ? 'white' : 'black');
    s.style.outline = j === i ? '2px solid #d62728' : 'none';
    s.title = 'pos ' + j + ': ' + (j <= i ? w.toFixed(3) : 'after the hovered token');
  }});
  document.getElementById('info').textContent = LABEL + ' attention from pos ' + i + ' "' +
    spans[i].textContent + '" (hover a token; click to pin and select it)';
}}
spans.forEach(s => {{
  const i = Number(s.dataset.pos);
  s.addEventListener('mouseover', () => show(i));
  s.addEventListener('click', () => {{
    pinned = i; show(i);
    // embedded (an app's iframe): tell the page which token was clicked; a plain page has no parent
    if (window.parent !== window) window.parent.postMessage({{interpToken: i}}, '*');
  }});
}});
document.getElementById('tokens').addEventListener('mouseleave', () => show(pinned));
show(pinned);
</script></body></html>"""
