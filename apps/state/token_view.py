"""The token view as a two-way component: :func:`interp.plots.attention.token_view_html` (the one
renderer of the view: hover a token to colour the prompt by what it reads) drawn in an iframe by a
minimal ``st.components.v2`` component (inline JavaScript, no network, no build step) that passes a
click on a token back to Python, where it sets the shared token (:func:`apps.state.selection.select_token`).

The view's page posts ``{interpToken: pos}`` to its parent on a click; this component's JavaScript,
the parent, turns that message into the trigger value ``token``."""

from __future__ import annotations

import streamlit as st
import streamlit.components.v2 as components

from apps.state.selection import select_token

# mounted in the page's own DOM (isolate_styles=False), so the iframe it draws is a plain iframe of
# the page; one listener per mount, removed when the component unmounts
_JS = """
export default function(component) {
  const { data, parentElement, setTriggerValue } = component;
  let frame = parentElement.querySelector('iframe.interp-token-view');
  if (!frame) {
    frame = document.createElement('iframe');
    frame.className = 'interp-token-view';
    frame.style.border = 'none';
    frame.style.width = '100%';
    parentElement.appendChild(frame);
  }
  frame.style.height = data.height + 'px';
  if (frame.srcdoc !== data.html) frame.srcdoc = data.html;
  const listen = (event) => {
    if (event.source !== frame.contentWindow || !event.data || typeof event.data.interpToken !== 'number') return;
    setTriggerValue('token', event.data.interpToken);
  };
  window.addEventListener('message', listen);
  return () => window.removeEventListener('message', listen);
}
"""

_component = components.component("interp_token_view", js=_JS, isolate_styles=False)


def token_view(html: str, height: int, key: str) -> int | None:
    """Draws a token view page (:func:`interp.plots.attention.token_view_html`, which posts a click
    to its parent); a click on a token selects it as the shared token.  Returns the position clicked
    on this run, if any."""

    def clicked() -> None:  # before the page runs again: every view of this run sees the new token
        pos = (st.session_state.get(key) or {}).get("token")
        if isinstance(pos, int) and not isinstance(pos, bool):
            select_token(pos)

    result = _component(key=key, data={"html": html, "height": int(height)}, on_token_change=clicked, height=height)
    pos = result.token
    return pos if isinstance(pos, int) and not isinstance(pos, bool) else None
