"""The app's model: chosen by the ``?model=`` URL parameter or the sidebar, loaded once per
process (``st.cache_resource``: one instance shared by all sessions, never copied), and the
one way input errors are shown."""

from __future__ import annotations

import contextlib
import functools
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
def _load(source: str, device: str = "cpu", dtype: str = "float32") -> interp.Model:
    return interp.load(source, device=device, dtype=dtype)


def load_model(source: str) -> interp.Model:
    """The model for ``source`` (zoo name, local HF directory, hub id) on the session's device and
    dtype (:func:`current_placement`), loaded once per process."""
    source = (source or "").strip()
    if not source:
        raise InputError("no model given: choose a zoo model, a local folder or a hub id")
    return _load(source, *current_placement())


# --- where the model runs: a device and dtype choice in the sidebar ---------------------------------
DEVICE_KEY, DTYPE_KEY = "model_device", "model_dtype"


def devices() -> list[str]:
    """The devices this machine has (the CPU and each CUDA device)."""
    from interp.sharding import available_devices

    return available_devices()


def dtypes(device: str) -> list[str]:
    """The dtypes ``device`` runs (bfloat16 only where it is native)."""
    from interp.loading import supported_dtypes

    return supported_dtypes(device)


def current_placement() -> tuple[str, str]:
    """The session's ``(device, dtype)``: the sidebar's choice, else ``INTERP_DEVICE`` /
    ``INTERP_DTYPE``, else the CPU in float32; a choice this machine cannot run falls back to those."""
    have = devices()
    device = st.session_state.get(DEVICE_KEY) or os.environ.get("INTERP_DEVICE", "cpu")
    device = device if device in have else ("cuda:0" if device == "cuda" and "cuda:0" in have else "cpu")
    dtype = st.session_state.get(DTYPE_KEY) or os.environ.get("INTERP_DTYPE", "float32")
    return device, dtype if dtype in dtypes(device) else "float32"


def sidebar_placement() -> None:
    """The device and dtype choice (only what this machine runs); a change reloads the model there
    (each placement is cached once) and every cached result is keyed by it (:func:`cached`)."""
    device, dtype = current_placement()
    have = devices()
    st.sidebar.selectbox(
        "Device",
        have,
        index=have.index(device),
        key=DEVICE_KEY,
        help="where the model runs (the devices this machine has)",
    )
    kinds = dtypes(st.session_state.get(DEVICE_KEY, device))
    st.sidebar.selectbox(
        "Dtype",
        kinds,
        index=kinds.index(dtype) if dtype in kinds else 0,
        key=DTYPE_KEY,
        help="the model's weights and activations; reductions stay in float32",
    )


def cached(**options):
    """``st.cache_data(**options)`` keyed by the session's device and dtype as well as the
    arguments: a result of the bfloat16 model is not the float32 model's."""

    def wrap(fn):
        def placed(placement: tuple[str, str], *args, **kwargs):
            return fn(*args, **kwargs)

        # streamlit keys a cache by module and qualified name: one per wrapped function
        placed.__module__, placed.__qualname__ = fn.__module__, f"{fn.__qualname__}[placed]"
        inner = st.cache_data(**options)(placed)

        @functools.wraps(fn)
        def call(*args, **kwargs):
            return inner(current_placement(), *args, **kwargs)

        call.clear = inner.clear  # type: ignore[attr-defined]
        return call

    return wrap


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
    sidebar_placement()
    st.sidebar.markdown(
        f"**Model:** `{current_source()}`  \n{c.family}, {c.n_layers} layers"
        + (f", {c.n_heads} heads" if c.n_heads else "")
        + f", d_model {c.d_model}, "
        f"vocab {c.d_vocab}, context {c.n_ctx}; on {model.device}, {str(model.dtype).replace('torch.', '')}"
    )


def zoo_recipe(model: interp.Model):
    """The zoo recipe a model was trained with, or None for other models."""
    from interp.zoo.recipes import all_recipes

    name = (model.card.get("recipe") or {}).get("name") or model.card.get("name")
    return all_recipes().get(name)
