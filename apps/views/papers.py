"""Papers page: published interpretability findings run on the loaded model, the figure beside
the published number, our number with its 95% interval and the verdict (interp.reproduce)."""

import json

import streamlit as st

from apps import state
from apps.state import papers
from interp.reproduce.requirements import unmet

st.title("Papers")
model = state.current_model()
source = state.current_source()
st.markdown(
    "Published findings as experiments: each runs the paper's protocol on this model and sets our number, "
    "with its 95% bootstrap interval over prompts, text rows or seeds, beside the published one, then "
    "applies the finding's rule: **reproduced**, **partial**, **not reproduced** or **not applicable**. "
    "*Quick* runs smaller samples (a first look); the full run takes up to a few minutes on a CPU."
)
with state.friendly("findings"):
    known = papers.findings()
ids = list(known)
wanted = st.query_params.get("finding")
if "papers_finding" not in st.session_state and wanted in known:
    st.session_state["papers_finding"] = wanted
fid = st.selectbox("Finding", ids, format_func=lambda i: f"{i}: {known[i].paper}", key="papers_finding")
if st.query_params.get("finding") != fid:
    st.query_params["finding"] = fid
f = known[fid]
p = f.published
st.markdown(f"**{f.paper}**: {f.claim}")
st.caption(f.citation)
left, right = st.columns(2)
with left:
    value = "qualitative" if p.value is None else f"{p.value:.4g} {p.unit}"
    st.metric(f"Published ({p.model})", value, help=f"{p.where}; checked: {p.source}. {p.detail}")
    st.caption(f"{p.where} · checked: **{p.source}**")
with right:
    st.markdown(f"**Metric.** {f.metric}")
with st.expander("Protocol and rule"):
    st.markdown(f"**Protocol.** {f.protocol}\n\n**Rule.** {f.rule}\n\n**Text.** {f.text}")
    for a in f.also:
        st.markdown(f"**Also published.** {a.value} {a.unit} on {a.model}, {a.where} ({a.source}): {a.detail}")
if f.retrainable:  # e.g. the phase change, LSTM cells: the experiment evaluates its own shipped models
    st.caption("This finding measures models trained for it (its protocol names them), whatever model is loaded.")
reason = unmet(model, f.requires)
if reason is not None:
    st.warning(f"Not applicable to {source}: {reason}")
quick = st.toggle("Quick (smaller samples)", True, key="papers_quick")
if st.button(f"Run {fid} on {source}", key="papers_run", type="primary"):
    st.session_state["papers_ran"] = (source, fid, quick)
if st.session_state.get("papers_ran") == (source, fid, quick):
    with st.spinner(f"Running {fid} on {source} ..."), state.friendly(fid):
        stored = papers.run(source, fid, quick)
    frame, figure, summary = stored.value.frame, stored.value.figure, stored.value.to_json()
    verdict = summary["verdict"]
    # a verdict is a result, not an error of the page: st.error stays for the app's own failures
    show = {"reproduced": st.success, "partial": st.warning, "not reproduced": st.warning, "not applicable": st.info}
    icons = {
        "reproduced": ":material/check_circle:",
        "partial": ":material/contrast:",
        "not reproduced": ":material/cancel:",
        "not applicable": ":material/info:",
    }
    show[verdict](f"**{verdict}** ({summary['seconds']:.0f} s): {summary['reason']}", icon=icons[verdict])
    c1, c2 = st.columns([3, 1])
    c1.plotly_chart(figure, key="papers_figure")
    if summary["ours"] is not None:
        c2.metric(
            f"Ours ({summary['model']})",
            f"{summary['ours']:.4g}",
            help=f"95% interval [{summary['ci_low']:.4g}, {summary['ci_high']:.4g}], n = {summary['n']} {summary['unit']}",
        )
        c2.caption(
            f"95% interval [{summary['ci_low']:.4g}, {summary['ci_high']:.4g}] · n = {summary['n']} {summary['unit']}"
        )
    c2.metric(f"Published ({summary['published_model']})", value)
    c2.caption(f"counts: {summary['counts']}")
    with st.expander("Numbers behind the verdict"):
        st.json(summary["details"])
        st.dataframe(frame.head(500), width="stretch", hide_index=True)
    st.download_button(
        "Download the summary (JSON)", json.dumps(summary, indent=2), f"{fid}-{source}.json", key="papers_json"
    )
    state.save_button(stored, key="papers", label=fid)
else:
    st.info("Press Run to run this finding on the loaded model.")
