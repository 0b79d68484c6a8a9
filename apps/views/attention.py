"""Attention page: every head of a layer as a small pattern with token labels, a token view
(hover a token: the prompt coloured by where it attends, the layer's heads averaged or one head),
one head large with token labels and hover values, and the prompt coloured by what one
destination token attends to."""

import streamlit as st

from apps import state
from apps.state import selection
from interp.plots.attention import attention_pattern, layer_grid, token_attention_html, token_view_html

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

chosen = selection.selected_head(model)  # the shared selection opens the page on its head
layer = st.selectbox("Layer", range(n_layers), index=chosen[0] if chosen else n_layers - 1, key="attn_layer")
shown = result.with_figure(layer_grid, layer=int(layer))  # what is drawn is what a saved run redraws
st.plotly_chart(shown.draw(), key="attn_grid")
state.save_button(shown, key="attention")

# the token view: hover (or click, to pin) a token to colour the prompt by where it attends
st.markdown(
    "**Token view**: hover a token to colour every token by the attention it pays them "
    "(click to pin it); the layer's heads averaged, or one head"
)
view = st.selectbox(
    "Token view: heads",
    [None, *range(n_heads)],
    key="attn_view_head",
    format_func=lambda h: f"mean of layer {layer}'s heads" if h is None else f"L{layer}H{h}",
)
pinned = selection.selected_token(n_pos)
st.iframe(  # a same-origin srcdoc iframe: the tokens are HTML-escaped, the data JSON numbers
    token_view_html(
        patterns[layer],
        str_tokens,
        head=view,
        dest=pinned,
        label=f"L{layer} mean of heads" if view is None else f"L{layer}H{view}",
    ),
    height=min(400, 70 + 34 * (1 + sum(len(t) + 2 for t in str_tokens) // 110)),
)

head = st.selectbox(
    "Head",
    range(n_heads),
    index=chosen[1] if chosen and chosen[0] == layer else 0,
    key="attn_head",
    format_func=lambda h: f"L{layer}H{h}",
)
st.plotly_chart(
    attention_pattern(patterns[layer, head], str_tokens, title=f"L{layer}H{head}"), key="attn_head_fig", width="content"
)  # the figure's own square size, its labels beside it

st.markdown(
    f"**One destination**: source tokens shaded by the attention L{layer}H{head} pays them "
    "from the destination token (outlined in red), on a fixed 0-1 scale"
)
dest = st.slider("Destination position", 0, n_pos - 1, n_pos - 1, key="attn_dest")
st.html(token_attention_html(patterns[layer, head, dest], str_tokens, dest))
