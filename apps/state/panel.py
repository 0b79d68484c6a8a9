"""The head panel: everything the workbench knows about the selected head on the page's clean /
corrupt prompt: its attention pattern, its scores, its activation-patching effect, its direct logit
attribution and its place in the circuit computed for the same prompt (if any).  Every number
comes from a cached library call in :mod:`apps.state.results`; nothing is computed here."""

from __future__ import annotations

import pandas as pd
import streamlit as st
import torch

import interp
from apps.state import results
from apps.state.inputs import Key, clean_corrupt_inputs, metric_label
from apps.state.models import friendly
from apps.state.selection import head_selectbox, select_token, selected_token
from interp.errors import USER_ERRORS
from interp.plots.attention import attention_pattern, token_attention_html

#: what the Circuit page leaves in the session: the circuit it shows and the inputs it was scored on
CIRCUIT_KEY = "circuit_shown"


def remember_circuit(source: str, clean: Key, spec: tuple, metric: str, method: str, steps: int, top_k: int) -> None:
    """Called by the Circuit page: the circuit shown, so head panels on the same prompt place heads in it."""
    st.session_state[CIRCUIT_KEY] = dict(
        source=source, clean=clean, spec=spec, metric=metric, method=method, steps=steps, top_k=top_k
    )


def default_metric(spec: tuple) -> str:
    """The patching metric of a panel on a page without its own: IOI's logit difference on IOI
    prompts, the logit difference of the clean and corrupt predictions, or (noise corruption, no
    corrupt prediction) the clean prediction's log-probability."""
    return "ioi_logit_diff" if spec[0] == "ioi" else "logprob" if spec[0] == "noise" else "logit_diff"


def head_name(layer: int, head: int) -> str:
    """The circuit graph's name of a head (``a{layer}.h{head}``, as circuits.graph names it)."""
    return f"a{layer}.h{head}"


def parse_head_name(name: str) -> tuple[int, int] | None:
    """``(layer, head)`` of a circuit node name ``a{layer}.h{head}``; None for other nodes."""
    import re

    m = re.fullmatch(r"a(\d+)\.h(\d+)", name)
    return (int(m.group(1)), int(m.group(2))) if m else None


def patching_row(source: str, clean: Key, spec: tuple, metric: str, layer: int, head: int) -> pd.Series:
    """The head's row of exact activation patching of every head's output z (denoising)."""
    frame = results.patching(source, clean, spec, "z", ("head",), metric, "denoise", "exact", 1).frame
    return frame[(frame["layer"] == layer) & (frame["head"] == head)].iloc[0]


def dla_value(
    source: str, clean: Key, spec: tuple, layer: int, head: int, metric: str | tuple = ""
) -> tuple[float, int, int | None]:
    """The head's direct logit attribution to logit(answer) - logit(wrong) at the last position of
    the first clean prompt, with the answer and wrong tokens (those the metric names, if it names
    them: ``(kind, answer, wrong)``)."""
    answer, wrong = metric[1:] if isinstance(metric, tuple) else results.answers(source, clean, spec)
    frame = results.dla(source, clean[0], answer, wrong).frame
    return float(frame.loc[frame["component"] == head_name(layer, head), "value"].iloc[0]), answer, wrong


def head_panel(
    model: interp.Model,
    source: str,
    head: tuple[int, int],
    clean: Key,
    spec: tuple,
    metric: str | tuple,
    scores: pd.DataFrame | None = None,
    key: str = "panel",
) -> None:
    """Draws the panel of ``head`` on the first prompt of ``clean`` (corruption ``spec``, patching
    metric ``metric``).  scores: :func:`interp.heads.scores` (default: the Heads page's default probes)."""
    layer, h = head
    name = f"L{layer}H{h}"
    st.subheader(f"Head {name}", anchor="head-panel")
    tokens = clean[0]
    str_tokens = model.to_str_tokens(torch.tensor([tokens]))
    c1, c2, c3 = st.columns(3)
    try:  # a part that does not apply to these prompts says why; the rest of the panel and page go on
        row = patching_row(source, clean, spec, metric, layer, h)
        c1.metric(
            "patching effect (normalised)",
            f"{row['normalised']:.4f}",
            help=f"exact patching of {name}'s output z, clean into corrupt (denoise), metric "
            f"{metric_label(model, metric)}: "
            "1 = this head alone restores the clean value, 0 = no effect",
        )
        c2.metric("patching effect (metric change)", f"{row['effect']:.4f}")
    except USER_ERRORS as e:
        c1.warning(f"patching: {e}")
    target = against = ""
    try:
        value, answer, wrong = dla_value(source, clean, spec, layer, h, metric)
        target = repr(model.decode([answer]))
        against = f" - logit({model.decode([wrong])!r})" if wrong is not None else ""
        c3.metric(
            "direct logit attribution",
            f"{value:.4f}",
            help=f"{name}'s direct contribution to logit({target}){against} at the last position (interp.lens.dla)",
        )
    except USER_ERRORS as e:
        c3.warning(f"direct logit attribution: {e}")
    st.caption(
        f"Patching metric: {metric_label(model, metric)}"
        + (f"; DLA target: logit({target}){against} at the last position" if target else "")
    )
    with friendly("attention"):
        pattern = results.attention_patterns(source, tokens).value[layer, h].numpy()
    st.plotly_chart(
        attention_pattern(pattern, str_tokens, title=f"{name} on the prompt"), key=f"{key}_attn", width="content"
    )  # the figure's own square size, its labels beside it
    token = selected_token(len(tokens))
    st.session_state[f"{key}_token"] = token if token is not None else len(tokens) - 1
    st.selectbox(
        "Token (destination)",
        list(range(len(tokens))),
        key=f"{key}_token",
        format_func=lambda p: f"{p}: {str_tokens[p]}",
        on_change=lambda: select_token(st.session_state[f"{key}_token"]),
    )
    dest = int(st.session_state[f"{key}_token"])
    st.html(token_attention_html(pattern[dest], str_tokens, dest))
    left, right = st.columns(2)
    with left:
        if scores is None:
            with friendly("head scores"):
                text = model.tokenizer is not None and not model.word_level
                scores = results.head_scores(source, 8 if text else 16, min(model.cfg.n_ctx, 64), 0).frame
        mine = scores[(scores["layer"] == layer) & (scores["head"] == h)]
        st.markdown(f"**Scores** of {name} (interp.heads.scores on the Heads page's probes)")
        st.dataframe(mine[["kind", "score"]], hide_index=True, key=f"{key}_scores", width="stretch")
    with right:
        _circuit_place(source, clean, spec, layer, h, key)


def page_panel(
    model: interp.Model,
    source: str,
    key: str,
    *,
    clean: Key | None = None,
    spec: tuple | None = None,
    metric: str | tuple | None = None,
    scores: pd.DataFrame | None = None,
    hint: str = "Click a head in a figure above (or choose one here) to open its panel.",
) -> tuple[int, int] | None:
    """The "Head" selectbox and the panel of the selected head, on the page's own clean / corrupt
    prompts and metric, or (a page without them: ``clean`` None) on the shared head-panel prompts
    in an expander.  Returns the selected head (None: the hint is shown instead)."""
    head = head_selectbox(model, f"{key}_head")
    if head is None:
        st.info(hint)
        return None
    if clean is None or spec is None:
        with st.expander("Prompt of the head panel (clean and corrupt)"):
            clean, spec = clean_corrupt_inputs(model, "hp")
    panel_metric = default_metric(spec) if metric is None else metric
    head_panel(model, source, head, clean, spec, panel_metric, scores=scores, key=key)
    return head


def _circuit_place(source: str, clean: Key, spec: tuple, layer: int, head: int, key: str) -> None:
    shown = st.session_state.get(CIRCUIT_KEY)
    if not shown or shown["source"] != source or shown["clean"] != clean or shown["spec"] != spec:
        st.caption("No circuit computed for this prompt yet: open the Circuit page with the same prompt.")
        return
    with friendly("circuit"):
        full = results.edge_scores(
            source, clean, spec, shown["metric"], shown["method"], shown["steps"]
        ).value  # cached: the Circuit page scored it
        pruned = full.prune(top_k=int(shown["top_k"]))
    name = head_name(layer, head)
    inside = name in pruned.active_nodes()
    st.markdown(
        f"**In the circuit** (top {shown['top_k']} edges, {shown['method']}, {shown['metric']}): "
        + ("yes" if inside else "no")
    )
    edges = pruned.edges_frame()
    mine = edges[(edges["src"] == name) | (edges["dst"] == name)]
    st.dataframe(
        mine[["src", "dst", "component", "score", "kept"]].head(20),
        hide_index=True,
        key=f"{key}_edges",
        width="stretch",
    )
