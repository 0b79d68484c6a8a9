"""Steering page: a vector from contrast pairs (text of any length on real models), added at a
layer with a chosen coefficient; next-token distributions and greedy generations without and
with it; a layer x coefficient sweep of behaviour and damage against a random vector of equal
norm and, on text models, the prompting baseline."""

import streamlit as st
import torch

from apps import state
from interp import runs
from interp.errors import InputError
from interp.logits import next_token_probs
from interp.plots.logits import next_token_bars
from interp.plots.steering import sweep_curves, tradeoff_plot
from interp.steering import METHODS, compare_generations

st.title("Steering")
model = state.current_model()
source = state.current_source()
text = state.text_model(model)

EXPLAIN = (
    "A steering vector is the mean difference of the residual stream between **positive** and "
    "**negative** prompts (read at each prompt's last token), added back at one layer to push the model "
    "towards the positive side.  Type one pair per line, `positive prompt | negative prompt`; the two "
    "prompts may differ in length."
)

# --- the pairs ---------------------------------------------------------------------------
task = None
if text:
    with state.friendly("sentiment task"):
        task = state.sentiment_task(model)
    shipped = [f"{p} | {n}" for p, n in zip(task.pairs.positive, task.pairs.negative)]
    example = "\n".join(shipped[:3])
    modes = ["the shipped sentiment pairs", "type pairs"]
else:
    generated = state.contrast_pairs(model, 16, 0)
    shipped = None
    example = (
        "\n".join(
            f"{state.tokens_text(model, p)} | {state.tokens_text(model, q)}"
            for p, q in zip(generated.positive[:3], generated.negative[:3])
        )
        if generated is not None
        else f"{state.example_text(model)} | {state.example_text(model)}"
    )
    modes = (["the model's contrast pairs"] if generated is not None else []) + ["type pairs"]
mode = st.radio("Contrast pairs", modes, horizontal=True, key="steer_pairs_mode")
if mode == "type pairs":
    typed = st.text_area(
        "One pair per line: `positive prompt | negative prompt`",
        "",
        key="steer_pairs_text",
        height=120,
        placeholder=example,
    )
    lines = [line for line in typed.splitlines() if line.strip()]
    if not lines:
        st.info(EXPLAIN + "  For example:")
        st.code(example, language=None)
        st.stop()
    if any(line.count("|") != 1 for line in lines):
        st.error("bad pairs: every line needs exactly one `|` between the positive and the negative prompt")
        st.stop()
    halves = [[part.strip() for part in line.split("|")] for line in lines]
    with state.friendly("bad pairs"):
        from interp.steering import ContrastPairs

        pos_b, neg_b = ContrastPairs([h[0] for h in halves], [h[1] for h in halves]).tokens(model)
    positive, negative = tuple(h[0] for h in halves), tuple(h[1] for h in halves)
elif text:
    positive, negative = tuple(task.pairs.positive), tuple(task.pairs.negative)
    with st.expander(f"{len(positive)} sentiment pairs (positive | negative)"):
        st.code("\n".join(shipped), language=None)
else:
    n_pairs = st.number_input("pairs", 1, 256, 16, key="steer_n_pairs")
    pairs = state.contrast_pairs(model, int(n_pairs), 0)
    positive, negative = (
        tuple(tuple(int(t) for t in row) for row in side) for side in (pairs.positive, pairs.negative)
    )
    with st.expander(f"{len(positive)} pairs (positive: mode B, negative: mode A)"):
        st.write(
            f"`{state.tokens_text(model, pairs.positive[0])}`  vs  `{state.tokens_text(model, pairs.negative[0])}`"
        )

cols = st.columns(4)
default_layer = model.cfg.n_layers * 2 // 3 if text else 0
layer = cols[0].selectbox(
    "Layer (residual stream after it)", range(model.cfg.n_layers), index=default_layer, key="steer_layer"
)
method = cols[1].selectbox("Method", METHODS if len(positive) > 1 else ("actadd",), key="steer_method")
coef = cols[2].slider("Coefficient", -10.0, 10.0, 2.0 if text else 4.0, 0.5, key="steer_coef")
start_pos = cols[3].number_input(
    "from position",
    0,
    model.cfg.n_ctx - 1,
    0,
    key="steer_start",
    help="the vector is added at this position and after it",
)
with state.friendly("steering vector"):
    vec = state.steering_vector(source, positive, negative, int(layer), method)
    pos_rows, neg_rows = (model.tokenize(list(side)).rows() for side in (positive, negative))
st.caption(f"{vec.method} vector at `{vec.site}` from {len(positive)} pairs, norm {vec.norm:.3g}")

# --- one prompt, unsteered vs steered ----------------------------------------------------
default_prompt = (
    task.eval[0]
    if text
    else negative[0]
    if isinstance(negative[0], str)
    else state.tokens_text(model, torch.tensor(negative[0][:8]))
)
prompt = st.text_input("Prompt to steer", default_prompt, key="steer_prompt")
with state.friendly("bad prompt"):
    tokens = model.to_tokens(prompt)
    if int(start_pos) >= tokens.shape[1]:
        raise InputError(
            f"'from position' {int(start_pos)} is past the prompt's {tokens.shape[1]} tokens: "
            "the vector would touch nothing"
        )
    base = next_token_probs(model, tokens, k=min(10, model.cfg.d_vocab))
    with vec.apply(model, coef=coef, start_pos=int(start_pos)):
        steered = next_token_probs(model, tokens, k=min(10, model.cfg.d_vocab))
    generated = runs.run(
        compare_generations, model, vec, tokens, coef, start_pos=int(start_pos), max_new_tokens=12 if text else 8
    )
    gens = generated.frame
st.plotly_chart(
    next_token_bars(
        {"unsteered": base, f"steered (coef {coef:g}, layer {layer})": steered}, title="next-token distribution"
    ),
    key="steer_bars",
)
st.dataframe(gens, width="stretch", hide_index=True)
state.save_button(generated, key="steering_generations")

# --- the sweep ---------------------------------------------------------------------------
st.subheader("Sweep")
if text:
    st.caption(
        "Behaviour: log-odds of the target words against the opposite words at each evaluation prompt's "
        "last token.  Damage: KL of the next-token distribution on neutral text.  The prompting baseline "
        "puts the instruction in front of each prompt instead of steering."
    )
    words = lambda ids: " ".join(w.strip() for w in model.to_str_tokens(ids))
    cols = st.columns(2)
    target_text = cols[0].text_input("Target words", words(task.concept), key="steer_targets")
    opposite_text = cols[1].text_input("Opposite words", words(task.opposite), key="steer_opposites")
    evals_text = st.text_area("Evaluation prompts (one per line)", "\n".join(task.eval), key="steer_evals", height=100)
    instruction = st.text_input("Prompting baseline's instruction (empty: none)", task.instruction, key="steer_instr")
    neutral = tuple(task.neutral)
else:
    # default targets: tokens the positive prompts use (after position 0) and the negative never do
    pos_ids = {int(t) for row in pos_rows for t in row[1:]}
    neg_ids = {int(t) for row in neg_rows for t in row}
    only_positive = sorted(pos_ids - neg_ids)
    target_text = st.text_input(
        "Target tokens (behaviour = their probability on the negative prompts)",
        " ".join(model.to_str_tokens(only_positive)) if only_positive else "",
        key="steer_targets",
    )
    instruction, neutral = None, None
cols = st.columns(2)
layer_default = sorted({model.cfg.n_layers // 3, model.cfg.n_layers // 2, model.cfg.n_layers * 2 // 3})
layers = cols[0].multiselect("Layers", list(range(model.cfg.n_layers)), default=layer_default, key="steer_layers")
coefs_text = cols[1].text_input("Coefficients", "0 1 2 4", key="steer_coefs")
inputs = (positive, negative, method, tuple(sorted(layers)), coefs_text, target_text, int(start_pos)) + (
    (opposite_text, evals_text, instruction) if text else ()
)
if st.button("Sweep", key="steer_sweep", disabled=not layers):
    st.session_state["steer_sweep_for"] = inputs  # shown (and savable) until an input changes
if layers and st.session_state.get("steer_sweep_for") == inputs:
    with state.friendly("sweep"):
        coefs = tuple(state.parse_numbers(coefs_text, float, "coefficients"))
        if text:
            ids = lambda text_: tuple(model.token_id(" " + w) for w in text_.split())
            behaviour = ("logodds", ids(target_text), ids(opposite_text))
            if not behaviour[1] or not behaviour[2]:
                raise InputError("give at least one target word and one opposite word")
            evals = tuple(line.strip() for line in evals_text.splitlines() if line.strip())
            if not evals:
                raise InputError("give at least one evaluation prompt")
        else:
            targets = tuple(model.to_tokens(target_text, prepend_bos=False)[0].tolist())
            behaviour, evals = ("prob", targets), negative
        swept = state.steering_sweep(
            source,
            positive,
            negative,
            method,
            tuple(sorted(layers)),
            coefs,
            behaviour,
            evals,
            neutral,
            instruction,
            int(start_pos),
        )
    left, right = st.columns(2)
    left.plotly_chart(sweep_curves(swept), key="steer_sweep_fig")
    right.plotly_chart(tradeoff_plot(swept), key="steer_tradeoff_fig")
    state.save_button(swept.with_figure(sweep_curves), key="steering_sweep")
    st.dataframe(swept.frame, width="stretch", hide_index=True)
else:
    st.info(
        "Press **Sweep**: behaviour and damage at each chosen layer and coefficient, for the vector and for a "
        "random vector of the same norm" + (", beside the prompting baseline." if text else ".")
    )
