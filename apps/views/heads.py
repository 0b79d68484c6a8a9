"""Heads page: score heatmaps (layer x head) per kind, a sortable table with a threshold,
and ablation of chosen heads with the task metric before and after."""

import streamlit as st

from apps import state
from interp import heads as H
from interp.ablation import HOWS
from interp.plots.heads import ablation_bar, head_heatmap

st.title("Attention heads")
model = state.current_model()
with state.friendly("heads"):
    model.require_attention("The heads page")
source = state.current_source()

st.markdown("Scores on `[BOS] r r` probes (a random segment repeated): previous-token, duplicate-token and "
            "induction are TransformerLens head-detector scores (a perfect induction head scores about 0.5), "
            "prefix matching is 1.0 for a perfect induction head, sink is the attention to position 0, "
            "copying comes from the OV circuit's eigenvalues (in [-1, 1]).")
cols = st.columns(3)
n = cols[0].number_input("probe sequences", 1, 256, 16, key="heads_n")
length = cols[1].number_input("probe length", 5, model.cfg.n_ctx, min(model.cfg.n_ctx, 64), key="heads_len")
seed = cols[2].number_input("seed", 0, 10_000, 0, key="heads_seed")
with state.friendly("head scores"):
    scores = state.head_scores(source, int(n), int(length), int(seed))

kinds = st.multiselect("Kinds", H.KINDS, default=["previous_token", "induction", "prefix_matching", "copying"],
                       key="heads_kinds")
if not kinds:
    st.info("Choose at least one kind of score.")
    st.stop()
st.plotly_chart(head_heatmap(scores, kinds), key="heads_heatmap")

threshold = st.slider("Threshold: list heads scoring at least", -1.0, 1.0, 0.3, 0.05, key="heads_threshold")
table = (scores[scores["kind"].isin(kinds) & (scores["score"] >= threshold)]
         .sort_values("score", ascending=False).reset_index(drop=True))
st.caption(f"{len(table)} (head, kind) pairs at or above {threshold:.2f}; click a column header to sort")
st.dataframe(table, width="stretch", hide_index=True, key="heads_table",
             column_config={"score": st.column_config.NumberColumn(format="%.3f")})

st.subheader("Ablate heads")
recipe = state.zoo_recipe(model)
st.caption(f"Task: {'the zoo task ' + recipe.task if recipe else 'repeated random tokens'}; "
           "the control ablates as many randomly chosen other heads.")
all_heads = [(l, h) for l in range(model.cfg.n_layers) for h in range(model.cfg.n_heads)]
first_kind = table[table["kind"] == kinds[0]]  # default: the top heads of the first kind chosen
suggested = [(int(r.layer), int(r.head)) for r in first_kind.itertuples()][:2]
chosen = st.multiselect("Heads", all_heads, default=list(dict.fromkeys(suggested)),
                        format_func=lambda lh: f"L{lh[0]}H{lh[1]}", key="heads_ablate")
cols = st.columns(4)
how = cols[0].selectbox("How", HOWS[:3], key="heads_how", help="zero: output z set to 0; mean: replaced by "
                        "its mean over the task batch; resample: taken from another sequence")
metric = cols[1].selectbox("Metric", ("loss", "accuracy"), key="heads_metric")
task_n = cols[2].number_input("task sequences", 1, 512, 64, key="heads_task_n")
n_random = cols[3].number_input("random controls", 0, 10, 3, key="heads_random")
if st.button("Ablate", type="primary", key="heads_go", disabled=not chosen):
    st.session_state["heads_run"] = (tuple(chosen), how, metric, int(task_n), int(n_random))
run = st.session_state.get("heads_run")
if run and list(run[0]) == chosen:
    with state.friendly("ablation"):
        effect = state.ablation(source, run[0], run[1], run[2], run[3], int(seed), run[4])
    clean = effect.loc[effect.condition == "clean", "value"].iloc[0]
    target = effect.loc[effect.condition == "target", "value"].iloc[0]
    c1, c2 = st.columns(2)
    c1.metric(f"{run[2]} without ablation", f"{clean:.4f}")
    c2.metric(f"{run[2]} with {' '.join(f'L{l}H{h}' for l, h in run[0])} ablated ({run[1]})", f"{target:.4f}",
              delta=f"{target - clean:+.4f}", delta_color="inverse" if run[2] == "loss" else "normal")
    st.plotly_chart(ablation_bar(effect), key="heads_ablation_bar")
    st.dataframe(effect, width="stretch", hide_index=True)
