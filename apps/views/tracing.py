"""Tracing page: causal tracing of one fact (Meng et al. 2022; for state-space models Sharma et
al. 2024): the subject's token embeddings are noised, then one clean state at a time is restored
per (layer, position); the heatmap shows how much each restores the object's probability
(circuits.causal_tracing, circuits.plots_tracing)."""

import streamlit as st

from apps import state
from apps.state import tracing as trace_state
from circuits.plots_tracing import tracing_heatmap
from circuits.tracing import components

st.title("Causal tracing")
model = state.current_model()
source = state.current_source()
st.markdown(
    "Where does the model store a fact?  The **subject**'s token embeddings are corrupted with Gaussian noise "
    "(3 x the embedding std), then the clean value of one state, at one layer (or a window of layers) and "
    "one position, is restored.  The **indirect effect** is the object's probability with the state "
    "restored minus its corrupted probability, averaged over the noise draws.  Meng et al. found the "
    "facts of GPT at the mid-layer MLPs of the subject's last token; Sharma et al. the same of Mamba's mixers."
)

with state.friendly("causal tracing"):
    kind = trace_state.fact_source(model)
    known = trace_state.known_facts(source)
    have = components(model)

modes = ["a fact the model knows"] + (["type a fact"] if kind == "text" else [])
mode = st.radio("Fact", modes, horizontal=True, key="trace_mode")
if mode == "type a fact":
    c = st.columns(3)
    template = c[0].text_input("Prompt (the subject as {} or written out)", "The {} is located in the city of")
    subject = c[1].text_input("Subject", "Eiffel Tower")
    obj = c[2].text_input("Object (one token)", "Paris")
    key = (template, subject, obj)
    with state.friendly("bad fact"):  # checked before anything runs: one-token object, subject in the prompt
        trace_state.fact_set(model, key)
else:
    if not known:
        st.info("the model answers none of its facts correctly: nothing to trace")
        st.stop()
    labels = dict(known)
    key = st.selectbox(
        f"One of the {len(known)} facts the model answers correctly",
        list(labels),
        format_func=lambda k: labels[k],
        key="trace_fact",
    )

c = st.columns(4)
chosen = c[0].multiselect(
    "Components",
    list(have),
    default=list(have),
    key="trace_components",
    help="; ".join(f"{name}: restores {site}" for name, site in have.items()),
)
window = c[1].number_input(
    "window (layers restored together)",
    1,
    model.cfg.n_layers,
    min(10, model.cfg.n_layers),
    key="trace_window",
    help="residual states are restored one layer at a time; single layers are shown beside any window",
)
samples = c[2].number_input("noise draws", 1, 20, 3, key="trace_samples")
seed = c[3].number_input("seed", 0, 10_000, 0, key="trace_seed")
if not chosen:
    st.info("choose at least one component")
    st.stop()

# a real model takes tens of seconds per fact: trace on request; a zoo model at once
request = (source, key, tuple(chosen), int(window), int(samples), int(seed))
if model.cfg.n_layers > 8 and st.session_state.get("trace_request") != request:
    if not st.button("Trace", type="primary", key="trace_go"):
        st.info("Press **Trace** to run (one fact on a 30-layer model takes about a minute on a CPU).")
        st.stop()
    st.session_state["trace_request"] = request

with state.friendly("causal tracing"):
    result = trace_state.trace(source, key, tuple(chosen), int(window), int(samples), int(seed))
frame, meta = result.frame, result.meta
c1, c2, c3 = st.columns(3)
c1.metric("object probability, clean", f"{frame['clean'].iloc[0]:.4f}")
c2.metric("corrupted (subject noised)", f"{frame['corrupted'].iloc[0]:.4f}")
c3.metric("states restored", len(frame))
windows = sorted(set(frame["window"]))
shown_window = (
    st.radio(
        "Show", windows, index=len(windows) - 1, horizontal=True, key="trace_show", format_func=lambda w: f"window {w}"
    )
    if len(windows) > 1
    else windows[0]
)
shown = result.with_figure(tracing_heatmap, window=int(shown_window), fact=0)
st.plotly_chart(shown.draw(), key="trace_heatmap")
state.save_button(shown, key="tracing")
st.markdown("**States with the largest indirect effect**")
st.dataframe(
    frame.sort_values("effect", ascending=False).head(20)[
        ["component", "window", "layers", "pos", "token", "role", "prob", "effect", "normalised"]
    ],
    width="stretch",
    hide_index=True,
)
