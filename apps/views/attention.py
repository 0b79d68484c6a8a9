"""Attention page: every head of the model at once (layer x head thumbnails; click one to select
it), every head of a layer as a small pattern with token labels, a token view (hover a token: the
prompt coloured by where it attends, the layer's heads averaged or one head; click: the shared
token), one head large with token labels and hover values (a button opens its panel on the Heads
page), and the prompt coloured by what one destination token attends to.  Attention-free models
(RNN, LSTM, GRU, SSM) get the same token view of their gradient saliency (:mod:`interp.saliency`):
what each position's output reads from each earlier token."""

import streamlit as st

from apps import state
from apps.state import selection
from apps.state.token_view import token_view
from interp.plots.attention import (
    attention_pattern,
    head_overview,
    layer_grid,
    token_attention_html,
    token_view_html,
)

st.title("Attention patterns")
model = state.current_model()
source = state.current_source()
tokens = state.prompt_tokens(model, "attn")
str_tokens = model.to_str_tokens(tokens)


def view_height(labels: list[str]) -> int:
    """Pixels for the token view: a line per ~110 characters of tokens, at most 400."""
    return min(400, 70 + 34 * (1 + sum(len(t) + 2 for t in labels) // 110))


if not model.has_attention:  # the same token view of what the recurrent state reads
    from interp.saliency import ssm_layers

    layers = ssm_layers(model)
    reads = ["gradient saliency"] + [f"hidden attention of SSM layer {l}" for l in layers]
    read = st.radio("What each token reads", reads, horizontal=True, key="attn_read")
    if read == reads[0]:
        st.info(
            f"{model.cfg.name or 'This model'} is a {model.cfg.family} model without attention heads. The token "
            "view shows its **gradient saliency**: hovering a token colours each earlier token by its share of the "
            "gradient norm of the output there (the logit of the top prediction) with respect to that token's "
            "embedding (interp.saliency.token_saliency)."
        )
        with state.friendly("saliency"):
            sal = state.saliency(source, state.token_key(tokens)).numpy()
    else:
        layer = layers[reads.index(read) - 1]
        st.info(
            f"The selective scan of layer {layer} written as attention (Ali et al. 2024): the output at t is exactly "
            "a sum over s <= t of alpha[t, s] times the scan's input at s, plus a skip term; hovering a token colours "
            "each earlier token by the mean over channels of |alpha|, divided by the row's sum "
            "(interp.saliency.ssm_read)."
        )
        with state.friendly("hidden attention"):
            sal = state.ssm_read(source, state.token_key(tokens), layer).numpy()
    st.caption(f"{len(str_tokens)} tokens: " + " ".join(str_tokens))
    token_view(
        token_view_html(sal, str_tokens, dest=selection.selected_token(len(str_tokens)), label=read),
        view_height(str_tokens),
        key="attn_token_view",
    )
    st.plotly_chart(
        attention_pattern(sal, str_tokens, title=f"{read} [dest, src] (rows sum to 1)", zmax=None),
        key="attn_saliency_fig",
        width="content",
    )
    st.stop()

with state.friendly("attention patterns"):
    result = state.attention_patterns(source, state.token_key(tokens))
    patterns = result.value.numpy()
n_layers, n_heads, n_pos, _ = patterns.shape
st.caption(f"{n_pos} tokens: " + " ".join(str_tokens))

# every head at once; a click selects the head and moves the layer and head pickers below to it
overview = result.with_figure(head_overview, selected=selection.selected_head(model))
clicked = selection.head_chart(overview.draw(), "attn_overview")
if clicked is not None:
    st.session_state["attn_layer"], st.session_state["attn_head"] = clicked
chosen = selection.selected_head(model)  # the shared selection opens the page on its head
if "attn_layer" not in st.session_state:
    st.session_state["attn_layer"] = chosen[0] if chosen else n_layers - 1


def select_shown_head() -> None:
    """A layer or head chosen here is the shared selected head (as a click on the overview is)."""
    selection.select_head(int(st.session_state["attn_layer"]), int(st.session_state.get("attn_head", 0)))


layer = st.selectbox("Layer", range(n_layers), key="attn_layer", on_change=select_shown_head)
shown = result.with_figure(layer_grid, layer=int(layer))  # what is drawn is what a saved run redraws
st.plotly_chart(shown.draw(), key="attn_grid")
state.save_button(shown, key="attention")

# the token view: hover a token to colour the prompt by where it attends; a click selects the token
st.markdown(
    "**Token view**: hover a token to colour every token by the attention it pays them "
    "(click to pin it and make it the selected token of every page); the layer's heads averaged, or one head"
)
view = st.selectbox(
    "Token view: heads",
    [None, *range(n_heads)],
    key="attn_view_head",
    format_func=lambda h: f"mean of layer {layer}'s heads" if h is None else f"L{layer}H{h}",
)
clicked_token = token_view(
    token_view_html(
        patterns[layer],
        str_tokens,
        head=view,
        dest=selection.selected_token(n_pos),
        label=f"L{layer} mean of heads" if view is None else f"L{layer}H{view}",
    ),
    view_height(str_tokens),
    key="attn_token_view",
)

if "attn_head" not in st.session_state:
    st.session_state["attn_head"] = chosen[1] if chosen and chosen[0] == layer else 0
head = st.selectbox(
    "Head", range(n_heads), key="attn_head", format_func=lambda h: f"L{layer}H{h}", on_change=select_shown_head
)
if st.button(
    f"Open L{layer}H{head}'s panel",
    key="attn_open_panel",
    icon=":material/open_in_new:",
    help="the Heads page's head panel: its scores, patching effect, DLA and place in the circuit",
):
    selection.select_head(int(layer), int(head))
    st.switch_page("views/heads.py", query_params=st.query_params.to_dict())
st.plotly_chart(
    attention_pattern(patterns[layer, head], str_tokens, title=f"L{layer}H{head}"), key="attn_head_fig", width="content"
)  # the figure's own square size, its labels beside it

st.markdown(
    f"**One destination**: source tokens shaded by the attention L{layer}H{head} pays them "
    "from the destination token (outlined in red), on a fixed 0-1 scale"
)
if clicked_token is not None or "attn_dest" not in st.session_state:  # follows the shared token
    token = selection.selected_token(n_pos)
    st.session_state["attn_dest"] = n_pos - 1 if token is None else token
dest = st.slider("Destination position", 0, n_pos - 1, key="attn_dest")
st.html(token_attention_html(patterns[layer, head, dest], str_tokens, dest))
