""" "Save this run": the one button every analysis page uses to keep what it shows in the run store
(:mod:`interp.runs`), where the Runs page, the CLI and notebooks find it again."""

from __future__ import annotations

import hashlib
import json

import streamlit as st

from apps.state.models import friendly
from interp import runs

SAVED_KEY = "saved_runs"  # session state: what this session saved, {result identity: run id}


def _identity(key: str, result: runs.Result) -> str:
    """The same run recomputed or re-read from Streamlit's cache gets the same identity (its
    provenance and figure), so the button is not offered twice for it."""
    p = result.provenance.to_dict() if result.provenance is not None else {}
    p.pop("wall_seconds", None)
    fig = result.figure.to_dict() if result.figure is not None else None
    text = json.dumps([key, p, fig], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def save_button(result: runs.Result, key: str, *, label: str | None = None) -> str | None:
    """A "Save this run" button for ``result`` (a :class:`interp.runs.Result`, with the figure
    the page drew); once pressed, the run's id and where to find it.  Returns the id once saved.
    label: a note stored with the run (shown in the listing)."""
    saved = st.session_state.setdefault(SAVED_KEY, {})
    ident = _identity(key, result)
    done = saved.get(ident)
    left, right = st.columns([1, 4])
    if st.session_state.get(f"save_{key}") and done is None:  # pressed: saved before the button is drawn again
        with friendly("saving the run"):
            done = runs.save(result, saved_from="app", label=label)
        saved[ident] = done
    left.button(
        "Save this run",
        key=f"save_{key}",
        disabled=done is not None,
        help="keep this result (frame, figure, provenance) in the run store: the Runs page, "
        "`interp runs list` and interp.runs.load() find it",
    )
    if done is not None:
        right.success(f"Saved as run `{done}`: reopen it on the Runs page, or `interp.runs.load('{done}')` in Python")
    return done
