"""Circuit page: every edge of the model's graph scored by edge attribution (EAP or EAP-IG),
pruned to its top-k edges (a log-spaced slider: useful from 1 edge to all of a 270-head
model's), drawn with layers as columns, with the faithfulness of what is kept, MIB's
faithfulness at edge budgets (CPR / CMD) and the circuit as JSON to download."""

import dataclasses

import streamlit as st
import torch

from apps import state
from apps.state import panel, selection
from circuits.attribution import METHODS
from circuits.faithfulness import faithfulness_curve
from circuits.metrics import KINDS
from circuits.plots import circuit_graph, faithfulness_plot

st.title("Circuit")
model = state.current_model()
source = state.current_source()
with state.friendly("circuit"):
    model.require_attention("The circuit page (edge attribution over heads and MLPs)")

clean_key, spec = state.clean_corrupt_inputs(model, "circ")
cols = st.columns(3)
metric = cols[0].selectbox(
    "Metric",
    state.metric_options(spec, [k for k in KINDS if k != "kl"]),
    key="circ_metric_ioi" if spec[0] == "ioi" else "circ_metric",
    help="ioi_logit_diff: logit(indirect object) - logit(subject) at the last token",
)
method = cols[1].selectbox(
    "Method",
    METHODS,
    index=list(METHODS).index("eap-ig"),
    key="circ_method",
    help="eap: gradient at the clean run; eap-ig: averaged over points from corrupt to clean",
)
steps = cols[2].number_input("EAP-IG steps", 1, 50, 5, key="circ_steps", disabled=method != "eap-ig")
steps = int(steps) if method == "eap-ig" else 1
with state.friendly("edge attribution"):
    scored = state.edge_scores(source, clean_key, spec, metric, method, steps)
full = scored.value  # the unpruned circuit; scored.frame: every edge's score

n_edges = len(full.edges)
sizes = sorted(
    {k for k in (1, 2, 3, 5, 10, 20, 30, 50, 100, 200, 300, 500, 1000, 2000, 5000, 10000, 20000) if k < n_edges}
    | {n_edges}
)
# default: the fewest edges whose circuit keeps 80% of the behaviour (faithfulness >= TARGET), so the
# first graph shown is a circuit that explains the behaviour, not an arbitrary top ten
TARGET = 0.8
with state.friendly("the smallest faithful circuit"):
    default, default_faith = state.smallest_faithful(
        source, clean_key, spec, metric, method, steps, tuple(sizes), TARGET
    )
top_k = st.select_slider(
    "Keep the top-k edges by |score|",
    sizes,
    value=default,
    key="circ_top_k",
    help="log-spaced: a few edges to every edge of the graph; edges off every kept path from "
    "the input to the logits are dropped",
)
with state.friendly("pruning"):
    pruned = full.prune(top_k=int(top_k))
    kept = pruned.kept_edges
    faith = state.faithfulness(source, clean_key, spec, metric, method, steps, int(top_k)) if kept else float("nan")
if default_faith < TARGET:
    st.caption(f"Even every edge gives faithfulness {default_faith:.2f} < {TARGET} on these prompts.")
else:
    st.caption(
        f"Opened at {default} edges: the fewest top-k edges whose circuit reaches faithfulness {TARGET} "
        f"({default_faith:.3f}); move the slider to keep more or fewer."
    )
c1, c2, c3 = st.columns(3)
c1.metric("edges kept", f"{len(kept)} / {len(full.edges)}")
c2.metric("nodes", len(pruned.active_nodes()))
c3.metric(
    "faithfulness",
    f"{faith:.3f}",
    help="(circuit - corrupt) / (clean - corrupt): every edge not kept is "
    "patched to the corrupt run; 1 = the circuit alone restores the clean behaviour",
)
DRAWN = 2000  # a browser draws a few thousand edges comfortably
graph = None
if kept:
    if len(kept) > DRAWN:
        st.caption(f"drawing the top {DRAWN} of the {len(kept)} kept edges")
    graph = circuit_graph(pruned if len(kept) <= DRAWN else full.prune(top_k=DRAWN))
    event = st.plotly_chart(graph, key="circ_graph", on_select="rerun", selection_mode="points")
    for point in selection.clicked_points(event, "circ_graph")[-1:]:  # a click on a head node selects it
        trace = graph.data[point["curve_number"]]
        if trace.name == "nodes":  # circuits.plots.circuit_graph's node trace: customdata are node names
            parsed = panel.parse_head_name(str(trace.customdata[point["point_index"]]))
            if parsed is not None:
                selection.select_head(*parsed)
else:
    st.info("No kept edge lies on a path from the input to the logits: keep more edges to see the circuit.")
# the head panel of the selected head (a click on a head node, the selectbox, or ?head=L.H) on these prompts
panel.remember_circuit(source, clean_key, spec, metric, method, steps, int(top_k))
panel.page_panel(
    model,
    source,
    "circ_panel",
    clean=clean_key,
    spec=spec,
    metric=metric,
    hint="Click a head node of the graph (or choose a head above) to open its panel.",
)
# the run: every edge's score (so the circuit can be pruned again), the pruning shown and its faithfulness
kept_run = dataclasses.replace(scored, meta={**scored.meta, "top_k": int(top_k), "faithfulness": float(faith)})
state.save_button(kept_run.with_figure(graph) if graph is not None else kept_run, key="circuit")
st.download_button(
    "Download the circuit (JSON)",
    pruned.to_json,
    file_name=f"{model.cfg.name or 'model'}-circuit.json",
    mime="application/json",
    key="circ_download",
)
with st.expander(f"Edges (the top {min(DRAWN, n_edges)} by |score|; `kept`: in the circuit)"):
    st.dataframe(pruned.edges_frame().nlargest(DRAWN, "abs_score"), width="stretch", hide_index=True)
left, right = st.columns(2)
settings = (clean_key, spec, metric, method, steps)
if left.button("MIB faithfulness at edge budgets (CPR / CMD)", key="circ_mib"):
    st.session_state["circ_mib_for"] = settings  # shown (and savable) until the settings change
if st.session_state.get("circ_mib_for") == settings:
    with state.friendly("MIB"):
        at_budgets = state.mib(source, clean_key, spec, metric, method, steps)
    table, a = at_budgets.frame, at_budgets.meta
    c1, c2 = st.columns(2)
    c1.metric(
        "CPR (area under faithfulness, higher is better)",
        f"{a['cpr']:.3f}",
        help=f"95% bootstrap interval over prompts: [{a['cpr_ci'][0]:.3f}, {a['cpr_ci'][1]:.3f}]",
    )
    c2.metric(
        "CMD (area between faithfulness and 1, lower is better)",
        f"{a['cmd']:.3f}",
        help=f"95% bootstrap interval over prompts: [{a['cmd_ci'][0]:.3f}, {a['cmd_ci'][1]:.3f}]",
    )
    st.plotly_chart(faithfulness_plot(at_budgets), key="circ_mib_fig")
    state.save_button(at_budgets, key="circuit_mib")
    st.dataframe(table, width="stretch", hide_index=True)
if right.button("Faithfulness of the top-k circuits", key="circ_curve"):
    with state.friendly("faithfulness curve"):
        curve = faithfulness_curve(
            full,
            model,
            torch.tensor(clean_key),
            state.corruption(model, clean_key, spec),
            state.resolve_metric(model, spec, metric),
            sizes=[k for k in sizes if k <= 500] + [n_edges],
        )
    st.plotly_chart(faithfulness_plot(curve), key="circ_curve_fig")
    st.dataframe(curve, width="stretch", hide_index=True)
