"""Lens page: what each layer's residual stream predicts (the logit lens, or the tuned lens
where one is saved or trained here), the target token's probability by layer, and the direct
logit attribution of its logit (or of a difference of two tokens) to every head and MLP."""

import streamlit as st

from apps import state
from apps.state import panel, selection
from interp.lens import NORMS, STAGES
from interp.plots.lens import dla_plot, lens_grid, target_curves

st.title("Lens")
model = state.current_model()
source = state.current_source()
text = state.text_model(model)

st.markdown(
    "Each layer's residual stream read through the final norm and the unembedding (**logit lens**; the "
    "norm's statistics recomputed from the residual it reads, or frozen at the last layer's).  The "
    "**tuned lens** (Belrose et al. 2023) first maps each layer's residual with an affine translator "
    "trained to match the final distribution.  **Direct logit attribution** splits the target's final "
    "logit into what each component writes, the final norm's scale frozen at this run's value."
)
syntax = "text" if text else "named tokens separated by spaces (e.g. `t5 t9 t5`)"
prompt = st.text_area(f"Prompt ({syntax})", state.example_text(model), key="lens_prompt", height=80)
with state.friendly("bad prompt"):
    tokens = model.to_tokens(prompt)
    key = state.token_key(tokens)
    predicted = int(model(tokens)[0, -1].argmax())
cols = st.columns(4)
target_text = cols[0].text_input(
    "Target token (default: the model's prediction)",
    "",
    key="lens_target",
    placeholder=model.to_str_tokens([predicted])[0],
)
contrast_text = cols[1].text_input(
    "Minus this token (optional)", "", key="lens_contrast", help="attribute the logit difference target - this token"
)
available = [
    s for s in STAGES if s != "mid" or ("resid_mid" in model.site_kinds() and model.cfg.family == "transformer")
]
stage = cols[2].selectbox(
    "Residual",
    available,
    index=available.index("post"),
    key="lens_stage",
    help="post: each block's output; pre: each block's input, then the final residual",
)
norm = cols[3].selectbox(
    "Final norm",
    NORMS,
    key="lens_norm",
    help="recomputed: statistics of the residual read; frozen: the last layer's scale "
    "(TransformerLens's cached hook_scale)",
)
with state.friendly("target"):
    target = model.token_id(target_text) if target_text else predicted
    contrast = model.token_id(contrast_text) if contrast_text else None

saved = state.tuned_lens(source, False)
use_tuned = False
if saved is not None and saved.stage == stage:
    use_tuned = st.checkbox("Also read through the tuned lens saved for this model", True, key="lens_tuned")
elif saved is None:
    st.caption("No tuned lens is saved for this model.")
    if st.button(
        "Train a tuned lens (on text the model writes itself; about 2 minutes for smollm2-135m)", key="lens_train"
    ):
        with state.friendly("tuned lens"):
            state.tuned_lens.clear()
            state.tuned_lens(source, True)
        st.rerun()
else:
    st.caption(f"The saved tuned lens reads the {saved.stage} residual: choose that stage to use it.")

with state.friendly("lens"):
    lensed = state.lens(source, key, target, stage, norm, False)
    tuned = state.lens(source, key, target, stage, norm, True) if use_tuned else None
    attributed = state.dla(source, key, target, contrast)
pieces = attributed.frame

color = st.radio(
    "Colour cells by", ("the top token's probability", "the target's probability"), horizontal=True, key="lens_color"
)
grid = tuned if tuned is not None and st.toggle("show the tuned lens's grid", False, key="lens_show_tuned") else lensed
grid = grid.with_figure(lens_grid, color="prob" if color.startswith("the top") else "target_prob")
st.plotly_chart(grid.draw(), key="lens_grid")
state.save_button(grid, key="lens")
curves = {"logit lens": lensed} | ({"tuned lens": tuned} if tuned is not None else {})
st.plotly_chart(target_curves(curves), key="lens_curves")

a = attributed.meta
what = f"{a['target']!r}" + (f" - {a['contrast']!r}" if a["contrast"] is not None else "")
c1, c2 = st.columns(2)
c1.metric(f"logit {what} at the last token", f"{a['logit']:.3f}")
c2.metric("sum of the direct contributions", f"{a['total']:.3f}", help="equal to the logit: the pieces add up")
heads = bool(model.cfg.n_heads)  # recurrent models: no head cells to click
dla_figure = dla_plot(attributed, selectable=heads)
selection.head_chart(dla_figure, "lens_dla")  # a click on a head's cell selects it (the head panel below)
state.save_button(attributed.with_figure(dla_plot), key="lens_dla")
with st.expander("Strongest components"):
    st.dataframe(
        pieces.reindex(pieces["value"].abs().sort_values(ascending=False).index).head(20),
        width="stretch",
        hide_index=True,
    )
if heads:  # the head panel of the selected head (a DLA cell clicked, the selectbox, or ?head=L.H)
    panel.page_panel(
        model,
        source,
        "lens_panel",
        hint="Click a head's cell of the attribution map (or choose one) to open its panel.",
    )
