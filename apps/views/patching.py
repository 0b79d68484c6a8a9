"""Patching page: clean and corrupt prompts (typed, or the model's task with tokens replaced or
noised), a site, metric and direction; exact activation patching or its attribution
estimate, as a heatmap and a table."""

import streamlit as st
import torch

from apps import state
from apps.state import panel, selection
from circuits import sites
from circuits.metrics import KINDS
from circuits.plots import patching_heatmap
from circuits.runs import DIRECTIONS

st.title("Activation patching")
model = state.current_model()
source = state.current_source()


clean_key, spec = state.clean_corrupt_inputs(model, "patch")

available = sites.available(model)
cols = st.columns(4)
default_site = next((s for s in ("z", "hidden", "state", "resid_pre") if s in available), available[0])
site = cols[0].selectbox(
    "Site",
    available,
    index=available.index(default_site),
    key="patch_site",
    help="; ".join(f"{k}: {sites.SITES[k].description}" for k in available if k in sites.SITES),
)
layout = sites.resolve(model, site).layout
axes = [a for a in sites.AXES[layout] if a != "src_pos"]
# text models open on the IOI example by head (Wang et al.'s finding is per head); others by position
by_default = ["head"] if state.text_model(model) and "head" in axes else axes[:1]
by = cols[1].multiselect("Sweep by (besides layer)", axes, default=by_default, key=f"patch_by_{layout}")
metric = cols[2].selectbox(
    "Metric",
    state.metric_options(spec, KINDS),
    key="patch_metric_ioi" if spec[0] == "ioi" else "patch_metric",
    help="answers: the clean run's prediction at the last position; logit_diff's wrong "
    "token: the corrupt run's; ioi_logit_diff: logit(indirect object) - logit(subject)",
)
direction = cols[3].radio(
    "Direction",
    DIRECTIONS,
    key="patch_direction",
    help="denoise: clean activations into the corrupt run; noise: corrupt into clean",
)
if spec[0] == "tokens":  # a prompt pair: the answer and wrong tokens, filled with the IOI example's names
    metric = state.answer_inputs(model, "patch", metric)
cols = st.columns(2)
mode = cols[0].radio(
    "Mode",
    ("exact", "attribution"),
    horizontal=True,
    key="patch_mode",
    help="exact: one run per patched cell; attribution: a gradient estimate for all cells "
    "from two forwards and one backward",
)
window = cols[1].number_input(
    "layers patched together (exact)", 1, model.cfg.n_layers, 1, key="patch_window", disabled=mode != "exact"
)

with state.friendly("patching"):
    result = state.patching(
        source,
        clean_key,
        spec,
        site,
        tuple(a for a in ("pos", "head") if a in by),
        metric,
        direction,
        mode,
        int(window) if mode == "exact" else 1,
    )
frame, a = result.frame, result.meta
c1, c2, c3 = st.columns(3)
label = state.metric_label(model, metric) if isinstance(metric, tuple) else a.get("metric", metric)
c1.metric(f"{label} clean", f"{a['clean_value']:.4f}")
c2.metric(f"{label} corrupt", f"{a['corrupt_value']:.4f}")
c3.metric("cells", len(frame))
value = st.radio(
    "Show",
    ("normalised", "effect", "value"),
    horizontal=True,
    key="patch_value",
    help="normalised: (patched - corrupt) / (clean - corrupt); effect: patched minus the unpatched "
    "run patched into; value: the metric of the patched run",
)
heads = bool(model.cfg.n_heads) and "head" in frame.columns  # per-head cells: click one to select it
shown = result.with_figure(
    patching_heatmap,
    value=value,
    tokens=model.to_str_tokens(torch.tensor(clean_key[:1])),
    title=f"{mode} patching of {site}, {direction}, {label}",
    selectable=heads,
)
selection.head_chart(shown.draw(), "patch_heatmap")
state.save_button(shown, key="patching")
st.markdown("**Cells with the largest effect** (`normalised`: 1 = the clean value, 0 = the corrupt one)")
st.dataframe(
    frame.reindex(frame["normalised"].abs().sort_values(ascending=False).index).head(20),
    width="stretch",
    hide_index=True,
)
if model.cfg.n_heads:  # the head panel of the selected head on these prompts and this metric
    panel.page_panel(
        model,
        source,
        "patch_panel",
        clean=clean_key,
        spec=spec,
        metric=metric,
        hint="Sweep z (or another head site) by head and click a cell (or choose a head) to open its panel.",
    )
