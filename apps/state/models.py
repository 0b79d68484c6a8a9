"""The app's model: chosen by the ``?model=`` URL parameter or the sidebar, loaded once per
process (``st.cache_resource``: one instance shared by all sessions, never copied), and the
one way input errors are shown."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import streamlit as st

import interp
from interp.errors import BUG_REPORT, USER_ERRORS, InputError

DEFAULT_MODEL = os.environ.get("INTERP_DEFAULT_MODEL", "induction-2l")


SOURCE_KEY = "model_source"


@contextlib.contextmanager
def friendly(what: str = "") -> Iterator[None]:
    """Shows a user error (:data:`interp.errors.USER_ERRORS`) as ``st.error`` and stops the page;
    any other exception is a bug: shown with its traceback and a line saying so."""
    try:
        yield
    except USER_ERRORS as e:
        msg = str(e).strip() or type(e).__name__
        st.error(f"{what}: {msg}" if what else msg)
        st.stop()
    except Exception as e:
        if type(e).__name__ in ("StopException", "RerunException"):  # streamlit's own control flow
            raise
        st.error(BUG_REPORT)
        st.exception(e)
        st.stop()


@st.cache_resource(show_spinner="Loading the model ...", max_entries=4)
def _load(source: str) -> interp.Model:
    return interp.load(source)


def load_model(source: str) -> interp.Model:
    """The model for ``source`` (zoo name, local HF directory, hub id), loaded once per process."""
    source = (source or "").strip()
    if not source:
        raise InputError("no model given: choose a zoo model, a local folder or a hub id")
    return _load(source)


def current_source() -> str:
    return st.session_state.get(SOURCE_KEY, DEFAULT_MODEL)


def check_source(source: str) -> str:
    """A model source typed into the app or read from the URL, stripped and checked for what
    no model name holds (control characters, absurd length); :func:`interp.load` validates the
    rest (zoo names with suggestions, folders, hub ids)."""
    text = (source or "").strip()
    if not text:
        raise InputError("no model given: choose a zoo model, a local folder or a hub id")
    if len(text) > 500 or any(ord(ch) < 32 for ch in text):
        raise InputError("a model is a zoo name, a local folder or a hub id (owner/name)")
    return text


def init_source() -> None:
    """On a session's first run, takes the model from the URL (``?model=...``), so a reload or a
    shared link opens the same model; afterwards keeps the URL in step with the session."""
    if SOURCE_KEY not in st.session_state:
        wanted = st.query_params.get("model")
        source = DEFAULT_MODEL
        if wanted:
            try:
                source = check_source(wanted)
            except ValueError as e:
                st.session_state["source_error"] = str(e)
        st.session_state[SOURCE_KEY] = source
    if st.query_params.get("model") != st.session_state[SOURCE_KEY]:
        st.query_params["model"] = st.session_state[SOURCE_KEY]


def set_source(source: str) -> interp.Model:
    """Loads ``source`` and makes it the model of every page (raises on bad input)."""
    source = check_source(source)
    model = load_model(source)
    st.session_state[SOURCE_KEY] = source
    st.query_params["model"] = source
    return model


def current_model() -> interp.Model:
    """The session's model; on a load error shows it and stops the page."""
    with friendly(f"could not load {current_source()!r}"):
        return load_model(current_source())


def sidebar_model(model: interp.Model) -> None:
    c = model.cfg
    st.sidebar.markdown(
        f"**Model:** `{current_source()}`  \n{c.family}, {c.n_layers} layers"
        + (f", {c.n_heads} heads" if c.n_heads else "")
        + f", d_model {c.d_model}, "
        f"vocab {c.d_vocab}, context {c.n_ctx}"
    )


def zoo_recipe(model: interp.Model):
    """The zoo recipe a model was trained with, or None for other models."""
    from interp.zoo.recipes import RECIPES

    name = (model.card.get("recipe") or {}).get("name") or model.card.get("name")
    return RECIPES.get(name)
