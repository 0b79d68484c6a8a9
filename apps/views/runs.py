"""Runs page: the run store (every result saved from a page, the CLI or a notebook), filtered by
model, analysis and date; one run reopened with its figure, context and provenance; two runs
side by side with their differences (provenance, context, and the frames cell by cell)."""

import datetime as dt

import pandas as pd
import streamlit as st

from apps import state
from interp import runs
from interp.errors import USER_ERRORS

st.title("Runs")
st.caption(
    f"Saved results in `{runs.root()}`: press **Save this run** on any page, pass `--save` to an `interp` "
    "command, or call `interp.runs.save(result)`; `interp.runs.load(id)` reopens one in Python."
)

with state.friendly("run store"):
    catalog = runs.list()
if catalog.empty:
    st.info("No runs saved yet: press **Save this run** on an analysis page, or run e.g. `interp heads MODEL --save`.")
    st.stop()


def describe(run_id: str) -> str:
    row = catalog.set_index("id").loc[run_id]
    return f"{run_id}: {row['analysis']} on {row['model'] or 'no model'} ({row['saved_from']})"


def draw(result: runs.Result, key: str) -> None:
    try:
        fig = result.draw()
    except USER_ERRORS as e:  # a plot function this version no longer has, a frame it refuses
        st.warning(f"cannot redraw the figure: {e}")
        return
    if fig is None:
        st.caption("(this run has no figure)")
    else:
        st.plotly_chart(fig, key=key)


def loaded(run_id: str) -> runs.Result:
    with state.friendly(f"run {run_id}"):
        return runs.load(run_id)


# --- filters -----------------------------------------------------------------------------
cols = st.columns(3)
models = sorted(m for m in catalog["model"].dropna().unique())
analyses = sorted(catalog["analysis"].dropna().unique())
chosen_models = cols[0].multiselect("Model", models, key="runs_models", placeholder="every model")
chosen_analyses = cols[1].multiselect("Analysis", analyses, key="runs_analyses", placeholder="every analysis")
first, last = catalog["saved"].min().date(), catalog["saved"].max().date()
days = cols[2].date_input("Saved between", (first, last), key="runs_days")
shown = catalog
if chosen_models:
    shown = shown[shown["model"].isin(chosen_models)]
if chosen_analyses:
    shown = shown[shown["analysis"].isin(chosen_analyses)]
if isinstance(days, (tuple, list)) and len(days) == 2:
    lo, hi = (pd.Timestamp(d) for d in days)
    shown = shown[(shown["saved"] >= lo) & (shown["saved"] < hi + pd.Timedelta(days=1))]
elif isinstance(days, dt.date):
    shown = shown[shown["saved"].dt.date == days]
st.caption(f"{len(shown)} of {len(catalog)} runs (saved times in UTC)")
st.dataframe(
    shown[["id", "saved", "analysis", "model", "n_rows", "wall_seconds", "saved_from", "label", "git_commit"]],
    width="stretch",
    hide_index=True,
    key="runs_table",
)
ids = list(shown["id"])
if not ids:
    st.info("No run matches these filters.")
    st.stop()

one_tab, two_tab = st.tabs(["Open a run", "Compare two runs"])
params = st.query_params

with one_tab:
    wanted = params.get("run")
    run_id = st.selectbox(
        "Run", ids, index=ids.index(wanted) if wanted in ids else 0, key="runs_open", format_func=describe
    )
    r = loaded(run_id)
    p = r.provenance
    if p is not None:
        model = p.model or {}
        st.markdown(
            f"**{r.analysis}** (`{p.function}`) on **{model.get('name') or 'no model'}**, started {p.started}, "
            f"{p.wall_seconds:.2f} s on {p.device} ({p.dtype}); interp {p.versions.get('interp')}"
            + (f", commit `{(p.git or {}).get('commit', '')[:12]}`" if p.git else "")
        )
    draw(r, "runs_open_fig")
    if r.meta:
        st.dataframe(
            pd.DataFrame({"key": list(r.meta), "value": [str(v)[:300] for v in r.meta.values()]}),
            width="stretch",
            hide_index=True,
            key="runs_open_meta",
        )
    with st.expander("Provenance"):
        st.json(p.to_dict() if p is not None else {}, expanded=False)
    st.dataframe(r.frame.head(500), width="stretch", hide_index=True, key="runs_open_frame")
    st.code(f"import interp.runs\nresult = interp.runs.load({run_id!r})", language="python")

with two_tab:
    if len(ids) < 2:
        st.info("Save a second run to compare two.")
    else:
        # default: the two newest runs of the newest run's analysis (else the two newest)
        same = list(shown[shown["analysis"] == shown["analysis"].iloc[0]]["id"])
        default_a, default_b = (same[1], same[0]) if len(same) >= 2 else (ids[1], ids[0])
        default_a = params.get("a") if params.get("a") in ids else default_a
        default_b = params.get("b") if params.get("b") in ids else default_b
        cols = st.columns(2)
        a_id = cols[0].selectbox("Run A", ids, index=ids.index(default_a), key="runs_a", format_func=describe)
        b_id = cols[1].selectbox("Run B", ids, index=ids.index(default_b), key="runs_b", format_func=describe)
        a, b = loaded(a_id), loaded(b_id)
        with state.friendly("comparing the runs"):
            d = runs.diff(a, b)
        left, right = st.columns(2)
        with left:
            st.markdown(f"**A** `{a_id}`")
            draw(a, "runs_a_fig")
        with right:
            st.markdown(f"**B** `{b_id}`")
            draw(b, "runs_b_fig")
        s = d.summary
        c1, c2, c3 = st.columns(3)
        c1.metric("rows matched", f"{s['matched']} / {max(s['rows_a'], s['rows_b'])}", help=f"on {', '.join(d.on)}")
        c2.metric("frames", "equal" if s["equal"] else "differ")
        largest = max(s["max_abs_diff"].values(), default=0.0)
        c3.metric("largest |B - A|", f"{largest:.4g}", help=str(s["max_abs_diff"]))
        if not s["equal"]:
            fig = None
            try:
                fig = d.figure()
            except USER_ERRORS as e:
                st.caption(f"no difference figure: {e}")
            if fig is not None:
                fig.update_layout(title=f"B - A ({a.analysis})")
                st.plotly_chart(fig, key="runs_diff_fig")
        st.markdown("**What differs in how they were made** (provenance; run-to-run noise last)")
        st.dataframe(d.provenance.astype(str), width="stretch", hide_index=True, key="runs_diff_prov")
        if len(d.meta):
            st.markdown("**Context** (meta)")
            st.dataframe(d.meta.astype(str), width="stretch", hide_index=True, key="runs_diff_meta")
        numeric = [c for c in d.values if f"{c}_diff" in d.frame.columns]
        table = d.frame
        if numeric:
            table = table.reindex(table[f"{numeric[0]}_diff"].abs().sort_values(ascending=False).index)
        st.markdown("**The frames, cell by cell** (largest differences first)")
        st.dataframe(table.head(500), width="stretch", hide_index=True, key="runs_diff_frame")
