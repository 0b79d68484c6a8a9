"""The app's one shared selection: a head ``(layer, head)`` and a token position, kept in
``st.session_state`` and in the URL (``?head=L.H&token=N``), so a reload or a shared link opens
the same selection.  Every page reads it and any page may set it (a click on the score map, a
circuit node, the "Head" selectbox); :func:`init_selection` follows how
:func:`apps.state.models.init_source` keeps ``?model=`` in step."""

from __future__ import annotations

import re

import streamlit as st

import interp

HEAD_KEY, TOKEN_KEY, URL_HEAD_KEY = "selected_head", "selected_token", "selected_head_in_url"
_HEAD = re.compile(r"^\s*(\d{1,4})\.(\d{1,4})\s*$")


def parse_head(text: str | None) -> tuple[int, int] | None:
    """``"L.H"`` as ``(layer, head)``; None for anything else (a URL is user input)."""
    m = _HEAD.match(text or "")
    return (int(m.group(1)), int(m.group(2))) if m else None


def head_label(head: tuple[int, int]) -> str:
    """The URL form ``L.H`` of a head."""
    return f"{head[0]}.{head[1]}"


def _sync_url() -> None:
    head, token = st.session_state.get(HEAD_KEY), st.session_state.get(TOKEN_KEY)
    for name, value in (("head", head_label(head) if head else None), ("token", None if token is None else str(token))):
        if value is None:
            if name in st.query_params:
                del st.query_params[name]
        elif st.query_params.get(name) != value:
            st.query_params[name] = value


def init_selection() -> None:
    """On a session's first run, takes the selection from the URL (malformed values are
    ignored: nothing selected); afterwards keeps the URL in step with the session."""
    if HEAD_KEY not in st.session_state:
        st.session_state[URL_HEAD_KEY] = "head" in st.query_params
        st.session_state[HEAD_KEY] = parse_head(st.query_params.get("head"))
        token = (st.query_params.get("token") or "").strip()
        st.session_state[TOKEN_KEY] = int(token) if token.isdigit() and len(token) < 7 else None
    _sync_url()


def head_in_url() -> bool:
    """Whether the session opened on a URL naming a head (valid or not): a page's default head
    then gives way to it (a malformed one selects nothing, as the link said)."""
    return bool(st.session_state.get(URL_HEAD_KEY))


def select_head(layer: int, head: int) -> None:
    """Makes ``(layer, head)`` the selected head of every page (and of the URL)."""
    st.session_state[HEAD_KEY] = (int(layer), int(head))
    _sync_url()


def select_token(pos: int | None) -> None:
    """Makes ``pos`` the selected token position (None: no token)."""
    st.session_state[TOKEN_KEY] = None if pos is None else int(pos)
    _sync_url()


def selected_head(model: interp.Model) -> tuple[int, int] | None:
    """The selected head if ``model`` has it (a link made on a larger model may name one it lacks)."""
    head = st.session_state.get(HEAD_KEY)
    n_heads = model.cfg.n_heads or 0
    attn = set(model.cfg.attn_layers or range(model.cfg.n_layers)) if n_heads else set()
    if head and head[0] in attn and 0 <= head[1] < n_heads:
        return head
    return None


def selected_token(n_pos: int) -> int | None:
    """The selected token position if the prompt has it."""
    pos = st.session_state.get(TOKEN_KEY)
    return pos if pos is not None and 0 <= pos < n_pos else None


def head_selectbox(model: interp.Model, key: str, container=st) -> tuple[int, int] | None:
    """The "Head" selectbox (``L.H``): the fallback to clicking; shows and sets the shared
    selection."""
    n_heads = model.cfg.n_heads or 0
    layers = sorted(model.cfg.attn_layers or range(model.cfg.n_layers))
    options = ["none"] + [f"{l}.{h}" for l in layers for h in range(n_heads)]
    current = selected_head(model)
    st.session_state[key] = head_label(current) if current else "none"  # in step with clicks elsewhere

    def changed() -> None:
        head = parse_head(st.session_state[key])
        if head is None:
            st.session_state[HEAD_KEY] = None
            _sync_url()
        else:
            select_head(*head)

    container.selectbox("Head", options, key=key, on_change=changed, help="layer.head; or click a head in the figure")
    return selected_head(model)


def clicked_points(event, key: str) -> list[dict]:
    """The points of a plotly chart's selection event that are new since the last run (a chart
    keeps reporting its last selection on every rerun; only a new click should move the shared
    selection)."""
    points = list(((event or {}).get("selection") or {}).get("points") or [])
    seen = st.session_state.get(f"{key}__seen")
    marker = repr([(p.get("curve_number"), p.get("point_index")) for p in points])
    st.session_state[f"{key}__seen"] = marker
    return points if points and marker != seen else []


def select_clicked_head(event, figure, key: str) -> tuple[int, int] | None:
    """Selects the head of a new click on ``figure``'s head click targets (the traces
    :func:`interp.plots.head_targets` adds: a score-map cell, a DLA cell, a patching-map cell, an
    overview thumbnail); returns it, or None when the event holds no new click on one.  ``event``:
    what ``st.plotly_chart(figure, key=key, on_select="rerun", selection_mode="points")`` returned."""
    from interp.plots import SELECT_SUFFIX

    for point in clicked_points(event, key)[-1:]:
        trace = figure.data[point["curve_number"]]
        if (trace.name or "").endswith(SELECT_SUFFIX) and trace.customdata is not None:
            cell = trace.customdata[point["point_index"]]
            select_head(int(cell[0]), int(cell[1]))
            return int(cell[0]), int(cell[1])
    return None


def head_chart(figure, key: str, container=st) -> tuple[int, int] | None:
    """Draws a figure with head click targets (:func:`interp.plots.head_targets`); a click on one
    selects that head (the shared selection); returns the head clicked on this run, if any."""
    event = container.plotly_chart(figure, key=key, on_select="rerun", selection_mode="points")
    return select_clicked_head(event, figure, key)
