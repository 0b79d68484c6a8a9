"""The Papers page's cached runs: one :func:`interp.reproduce.run` per (model, finding, quick),
kept for the process (``st.cache_resource``: the run to store), and the findings registered from both packages."""

from __future__ import annotations

import streamlit as st

from apps.state.models import load_model


def findings() -> dict:
    """Every registered finding by id (the causal ones from circuits.reproduce included)."""
    import circuits.reproduce  # noqa: F401  registers the causal findings even where the entry points are not installed
    from interp import reproduce

    return reproduce.findings()


@st.cache_resource(show_spinner=False, max_entries=64)
def run(source: str, finding_id: str, quick: bool):
    """``interp.reproduce.run`` of ``finding_id`` on the model ``source``, as the run to store
    (:class:`interp.runs.Result`; ``value`` is the reproduction's own result: frame, figure,
    summary).  Kept for the process."""
    from interp import reproduce, runs

    findings()
    stored = runs.run(reproduce.run, finding_id, load_model(source), quick=quick)
    return stored.with_figure(stored.value.figure) if stored.value.figure is not None else stored
