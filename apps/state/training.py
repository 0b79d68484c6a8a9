"""Cached state of the Training and Cells pages: a checkpoint series' phase-change curves and one
checkpoint's attention (Training), an LSTM's cells on held-out Python source (Cells).  Library
calls only, cached; no maths here."""

from __future__ import annotations

import pandas as pd
import streamlit as st
import torch

import interp
from interp.model import Model

ROWS = 16  # [BOS] r r rows the page measures on (4 units of 4: the reproduce entry's quick size)


@st.cache_data(show_spinner="Measuring every checkpoint (loss on repeats, head scores, ICL score) ...", max_entries=8)
def phase(source: str) -> tuple[pd.DataFrame, list[tuple[int, int]], dict[str, float], list[int]]:
    """(curves, detected induction heads, change steps, steps) of a checkpoint series."""
    from interp import dynamics

    stems = dynamics.series(source)
    curves, targets = dynamics.phase_curves(stems, n=ROWS, group=4)
    return curves, targets, dynamics.change_steps(curves), dynamics.steps_of(stems)


@st.cache_resource(max_entries=64)
def checkpoint(source: str, step: int) -> Model:
    """The checkpoint of series ``source`` at training ``step``."""
    from interp import dynamics

    stems = dynamics.series(source)
    return interp.load(str(dict(zip(dynamics.steps_of(stems), stems))[int(step)]))


@st.cache_data(show_spinner=False, max_entries=64)
def patterns(source: str, step: int, heads: tuple[tuple[int, int], ...]) -> tuple[dict, list[str]]:
    """{(layer, head): [dest, src] attention} of the detected heads at ``step`` on one [BOS] r r row."""
    from interp import dynamics
    from interp.attention import attention_patterns

    model = checkpoint(source, step)
    tokens = dynamics.repeated_text(model, 1, 16, seed=1)
    layers = sorted({l for l, _ in heads})
    pats = attention_patterns(model, tokens, layers)
    return {(l, h): pats[layers.index(l), h].numpy() for l, h in heads}, model.to_str_tokens(tokens[0])


@st.cache_data(show_spinner="Reading the cells on held-out Python source ...", max_entries=8)
def cells(source: str, n: int = 8, length: int = 384, skip: int = 64) -> dict:
    """The LSTM's feature cells and gate saturation on ``n`` held-out windows of Python source,
    with the text and every cell's activation of the first window (for the coloured text)."""
    from apps.state import load_model
    from interp.recurrent import cells as C
    from interp.tasks.text import code

    model = load_model(source)
    held = code.corpus(code.HELDOUT_FILES)
    tokens, starts = held.windows(n, length, seed=10_000_019)
    feats = held.window_features(starts, length)
    frame = C.feature_cells(model, tokens, feats, skip=skip)
    saturation = C.gate_saturation(model, tokens, skip=skip)
    acts = C.activations(model, tokens[:1], ("cell",))
    first = {layer: a[0, 1:] for (_, layer), a in acts.items()}  # [pos - 1, cells], BOS dropped
    text = held.text[int(starts[0]) : int(starts[0]) + length - 1]
    return {"frame": frame, "saturation": saturation, "text": text, "acts": first}


def own_text_cells(source: str, text: str) -> tuple[list[str], dict[int, torch.Tensor]]:
    """Every cell's activation on the user's own text: (characters, {layer: [chars, cells]})."""
    from apps.state import load_model
    from interp.recurrent import cells as C

    model = load_model(source)
    tokens = model.to_tokens(text)
    acts = C.activations(model, tokens, ("cell",))
    chars = model.to_str_tokens(tokens[0])[1:]
    return chars, {layer: a[0, 1:] for (_, layer), a in acts.items()}
