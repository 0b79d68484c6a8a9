"""Attention page: every head of a layer as a small pattern, one head large with token
labels and hover values, and the prompt coloured by what one destination token attends to."""

import streamlit as st

from apps import state
from interp.plots.attention import attention_pattern, layer_grid, token_attention_html

st.title("Attention patterns")
model = state.current_model()
with state.friendly("attention"):
    model.require_attention("The attention page")

tokens = state.prompt_tokens(model, "attn")
str_tokens = model.to_str_tokens(tokens)
with state.friendly("attention patterns"):
    result = state.attention_patterns(state.current_source(), state.token_key(tokens))
    patterns = result.value.numpy()
n_layers, n_heads, n_pos, _ = patterns.shape
st.caption(f"{n_pos} tokens: " + " ".join(str_tokens))

layer = st.selectbox("Layer", range(n_layers), index=n_layers - 1, key="attn_layer")
shown = result.with_figure(layer_grid, layer=int(layer))  # what is drawn is what a saved run redraws
st.plotly_chart(shown.draw(), key="attn_grid")
state.save_button(shown, key="attention")

head = st.selectbox("Head", range(n_heads), key="attn_head", format_func=lambda h: f"L{layer}H{h}")
st.plotly_chart(
    attention_pattern(patterns[layer, head], str_tokens, title=f"L{layer}H{head}"), key="attn_head_fig", width="content"
)  # the figure's own square size, its labels beside it

st.markdown(
    f"**Token view**: source tokens shaded by the attention L{layer}H{head} pays them "
    "from the destination token (outlined in red), on a fixed 0-1 scale"
)
dest = st.slider("Destination position", 0, n_pos - 1, n_pos - 1, key="attn_dest")
st.html(token_attention_html(patterns[layer, head, dest], str_tokens, dest))
