"""Steering page: a vector from contrast pairs, added at a layer with a chosen coefficient;
next-token distributions and greedy generations without and with it, and a layer x
coefficient sweep against a random vector of equal norm."""

import streamlit as st

from apps import state
from interp.logits import next_token_probs
from interp.plots.logits import next_token_bars
from interp.plots.steering import sweep_curves
from interp.steering import METHODS, compare_generations

st.title("Steering")
model = state.current_model()
source = state.current_source()

# --- the pairs ---------------------------------------------------------------------------
generated = state.contrast_pairs(model, 16, 0)
modes = (["the model's contrast pairs"] if generated is not None else []) + ["type pairs"]
mode = st.radio("Contrast pairs", modes, horizontal=True, key="steer_pairs_mode")
if mode == "type pairs":
    default = "\n".join(f"{' '.join(model.to_str_tokens(p))} | {' '.join(model.to_str_tokens(q))}"
                        for p, q in zip(generated.positive[:4], generated.negative[:4])) if generated is not None else ""
    text = st.text_area("One pair per line: `positive prompt | negative prompt` (same number of tokens)", default,
                        key="steer_pairs_text", height=120)
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        st.error("bad pairs: type at least one line `positive | negative`")
        st.stop()
    if any(line.count("|") != 1 for line in lines):
        st.error("bad pairs: every line needs exactly one `|` between the positive and the negative prompt")
        st.stop()
    with state.friendly("bad pairs"):
        from interp.steering import ContrastPairs

        pos_b, neg_b = ContrastPairs([l.split("|")[0].strip() for l in lines],
                                     [l.split("|")[1].strip() for l in lines]).tokens(model)
        if pos_b.padded or neg_b.padded or pos_b.tokens.shape != neg_b.tokens.shape:
            raise ValueError("on this page the two prompts of a pair need the same length (tokens)")
        positive, negative = pos_b.tokens, neg_b.tokens
else:
    n_pairs = st.number_input("pairs", 1, 256, 16, key="steer_n_pairs")
    pairs = state.contrast_pairs(model, int(n_pairs), 0)
    positive, negative = pairs.positive, pairs.negative
    with st.expander(f"{len(positive)} pairs (positive: mode B, negative: mode A)"):
        st.write(f"`{' '.join(model.to_str_tokens(positive[0]))}`  vs  `{' '.join(model.to_str_tokens(negative[0]))}`")
pos_key, neg_key = (tuple(map(tuple, t.tolist())) for t in (positive, negative))

cols = st.columns(4)
layer = cols[0].selectbox("Layer (residual stream after it)", range(model.cfg.n_layers), key="steer_layer")
method = cols[1].selectbox("Method", METHODS if len(positive) > 1 else ("actadd",), key="steer_method")
coef = cols[2].slider("Coefficient", -10.0, 10.0, 4.0, 0.5, key="steer_coef")
start_pos = cols[3].number_input("from position", 0, model.cfg.n_ctx - 1, 0, key="steer_start")
with state.friendly("steering vector"):
    vec = state.steering_vector(source, pos_key, neg_key, int(layer), method)
st.caption(f"{vec.method} vector at `{vec.site}`, norm {vec.norm:.3g}")

# --- one prompt, unsteered vs steered ----------------------------------------------------
default_prompt = model.decode(negative[0][:8]) if model.word_level else state.example_text(model)
prompt = st.text_input("Prompt to steer", default_prompt, key="steer_prompt")
with state.friendly("bad prompt"):
    tokens = model.to_tokens(prompt)
    base = next_token_probs(model, tokens, k=min(10, model.cfg.d_vocab))
    with vec.apply(model, coef=coef, start_pos=int(start_pos)):
        steered = next_token_probs(model, tokens, k=min(10, model.cfg.d_vocab))
    gens = compare_generations(model, vec, tokens, coef, start_pos=int(start_pos), max_new_tokens=8)
st.plotly_chart(next_token_bars({"unsteered": base, f"steered (coef {coef:g}, layer {layer})": steered},
                                title="next-token distribution"), key="steer_bars")
st.dataframe(gens, width="stretch", hide_index=True)

# --- the sweep ---------------------------------------------------------------------------
st.subheader("Sweep")
# default targets: tokens the positive prompts use (after position 0: BOS or a mode token) and the negative never do
only_positive = sorted(set(positive[:, 1:].flatten().tolist()) - set(negative.flatten().tolist()))
names = model.to_str_tokens(only_positive) if only_positive else []
target_text = st.text_input("Target tokens (behaviour = their probability on the negative prompts)",
                            " ".join(names), key="steer_targets")
coefs_text = st.text_input("Coefficients", "0 1 2 4 8", key="steer_coefs")
if st.button("Sweep every layer", key="steer_sweep"):
    with state.friendly("sweep"):
        targets = model.to_tokens(target_text, prepend_bos=False)[0].tolist()
        try:
            coefs = tuple(float(c) for c in coefs_text.replace(",", " ").split())
        except ValueError:
            raise ValueError(f"coefficients must be numbers separated by spaces, got {coefs_text!r}") from None
        if not coefs:
            raise ValueError("give at least one coefficient")
        frame = state.steering_sweep(source, pos_key, neg_key, method, coefs, tuple(targets), int(start_pos))
    st.plotly_chart(sweep_curves(frame), key="steer_sweep_fig")
    st.dataframe(frame, width="stretch", hide_index=True)
