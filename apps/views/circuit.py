"""Circuit page: every edge of the model's graph scored by edge attribution (EAP or EAP-IG),
pruned by an |score| threshold, drawn with layers as columns, with the faithfulness of what
is kept and the circuit as JSON to download."""

import streamlit as st
import torch

from apps import state
from circuits.attribution import METHODS
from circuits.graph import faithfulness_curve
from circuits.metrics import KINDS
from circuits.plots import circuit_graph, faithfulness_plot

st.title("Circuit")
model = state.current_model()
source = state.current_source()
with state.friendly("circuit"):
    model.require_attention("The circuit page (edge attribution over heads and MLPs)")

clean_key, spec = state.clean_corrupt_inputs(model, "circ")
cols = st.columns(3)
metric = cols[0].selectbox("Metric", [k for k in KINDS if k != "kl"], key="circ_metric")
method = cols[1].selectbox("Method", METHODS, index=list(METHODS).index("eap-ig"), key="circ_method",
                           help="eap: gradient at the clean run; eap-ig: averaged over points from corrupt to clean")
steps = cols[2].number_input("EAP-IG steps", 1, 50, 5, key="circ_steps", disabled=method != "eap-ig")
with state.friendly("edge attribution"):
    full = state.edge_scores(source, clean_key, spec, metric, method, int(steps) if method == "eap-ig" else 1)

scores = full.edges_frame()["abs_score"].sort_values(ascending=False).tolist()
top = float(scores[0])
default = float(scores[min(9, len(scores) - 1)])  # about ten edges
threshold = st.slider("Edge threshold: keep edges with |score| at least", 0.0, top, default, top / 200 or 0.01,
                      format="%.4f", key="circ_threshold")
with state.friendly("pruning"):
    pruned = full.prune(threshold=threshold)
    kept = pruned.kept_edges
    text = pruned.to_json()
    faith = state.faithfulness(source, clean_key, spec, metric, text) if kept else float("nan")
c1, c2, c3 = st.columns(3)
c1.metric("edges kept", f"{len(kept)} / {len(full.edges)}")
c2.metric("nodes", len(pruned.active_nodes()))
c3.metric("faithfulness", f"{faith:.3f}", help="(circuit - corrupt) / (clean - corrupt): every edge not kept is "
          "patched to the corrupt run; 1 = the circuit alone restores the clean behaviour")
if kept:
    st.plotly_chart(circuit_graph(pruned), key="circ_graph")
else:
    st.info("No edge passes the threshold: lower it to see the circuit.")
st.download_button("Download the circuit (JSON)", text, file_name=f"{model.cfg.name or 'model'}-circuit.json",
                   mime="application/json", key="circ_download")
with st.expander("Edges (all, by |score|; `kept`: in the circuit shown)"):
    st.dataframe(pruned.edges_frame().sort_values("abs_score", ascending=False), width="stretch", hide_index=True)
if st.button("Faithfulness of the top-k circuits", key="circ_curve"):
    with state.friendly("faithfulness curve"):
        sizes = [k for k in (1, 2, 5, 10, 20, 50, 100, 200, 500) if k < len(full.edges)] + [len(full.edges)]
        curve = faithfulness_curve(full, model, torch.tensor(clean_key),
                                   state.corruption(model, clean_key, spec), metric, sizes=sizes)
    st.plotly_chart(faithfulness_plot(curve), key="circ_curve_fig")
    st.dataframe(curve, width="stretch", hide_index=True)
