"""Cached sparse-dictionary results for the Features page: the dictionaries saved for a model,
a quick one trained when none is, the scan of held-out text and the frames read from it."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from apps.state.models import load_model

#: the preview dictionary the page trains when none is saved (seconds on a zoo model, about a
#: minute for smollm2-135m on 2 cores); `interp sae train` makes a full one
QUICK = {"n_tokens": 8192, "k": 16, "epochs": 8.0}


def saved(source: str) -> list[str]:
    """Stems of the dictionaries saved in the cache for the model, newest first."""
    from interp.sae import saved as saved_stems

    return [str(p) for p in saved_stems(load_model(source))]


@st.cache_resource(show_spinner="Training a quick preview dictionary ...", max_entries=8)
def quick_dictionary(source: str) -> str:
    """Trains (or loads, if cached) the preview dictionary at the middle layer's residual
    stream; returns its stem."""
    from interp import sae
    from interp.sae.train import dictionary_path

    model = load_model(source)
    kind = "resid_post" if "resid_post" in model.site_kinds() else "hidden"
    site = model.site(kind, model.cfg.n_layers // 2)
    width = 4 * model.cfg.d_model
    sae.train(model, site, width=width, progress=False, **QUICK)  # type: ignore[arg-type]
    stem = dictionary_path(model, site, kind="topk", width=width, k=QUICK["k"], n_tokens=int(QUICK["n_tokens"]), seed=0)
    return str(stem)


@st.cache_resource(show_spinner="Loading the dictionary ...", max_entries=8)
def dictionary(source: str, stem: str):
    from interp import sae

    return sae.load(load_model(source), stem)


@st.cache_resource(show_spinner="Reading held-out text through the dictionary ...", max_entries=8)
def scan(source: str, stem: str, n_tokens: int):
    from interp.sae import features as F

    return F.scan(load_model(source), dictionary(source, stem), n_tokens=n_tokens)


@st.cache_data(show_spinner=False, max_entries=16)
def density(source: str, stem: str, n_tokens: int) -> pd.DataFrame:
    from interp.sae import features as F

    return F.density(scan(source, stem, n_tokens))


@st.cache_data(show_spinner=False, max_entries=64)
def latent_frames(source: str, stem: str, n_tokens: int, latent: int) -> tuple[pd.DataFrame, ...]:
    """Top contexts, activation histogram and promoted / suppressed tokens of one latent."""
    from interp.sae import features as F

    model, s = load_model(source), scan(source, stem, n_tokens)
    return (
        F.top_contexts(model, s, latent, n=12),
        F.histogram(s, latent),
        F.logit_effects(model, dictionary(source, stem), [latent], k=10),
    )


@st.cache_data(show_spinner=False, max_entries=64)
def search(source: str, stem: str, n_tokens: int, word: str) -> pd.DataFrame:
    from interp.sae import features as F

    return F.search(load_model(source), scan(source, stem, n_tokens), word)
