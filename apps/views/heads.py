"""Heads page: score heatmaps (layer x head) per kind with a sortable table; ablation of chosen
heads against a random control; on text models, retrieval heads (Wu et al.: passkey or
needle-in-a-haystack prompts, the query-masking experiment with its random control, the
depth x length grid) and attention sinks by layer."""

import streamlit as st

from apps import state
from apps.state import panel, selection
from interp import heads as H
from interp.ablation import HOWS
from interp.plots.heads import ablation_bar, head_heatmap, sink_plot
from interp.plots.retrieval import niah_heatmap

st.title("Attention heads")
model = state.current_model()
with state.friendly("heads"):
    model.require_attention("The heads page")
source = state.current_source()
text = state.text_model(model)

scores_tab, ablation_tab, retrieval_tab, sinks_tab = st.tabs(["Scores", "Ablation", "Retrieval heads", "Sinks"])

with scores_tab:
    st.markdown(
        "Scores on `[BOS] r r` probes (a random segment repeated): previous-token, duplicate-token and "
        "induction are TransformerLens head-detector scores (a perfect induction head scores about 0.5), "
        "prefix matching is 1.0 for a perfect induction head, sink is the attention to position 0, "
        "copying comes from the OV circuit's eigenvalues (in [-1, 1])."
    )
    cols = st.columns(3)
    n = cols[0].number_input("probe sequences", 1, 256, 8 if text else 16, key="heads_n")
    length = cols[1].number_input(
        "probe length", 5, min(model.cfg.n_ctx, 2048), min(model.cfg.n_ctx, 64), key="heads_len"
    )
    seed = cols[2].number_input("seed", 0, 10_000, 0, key="heads_seed")
    with state.friendly("head scores"):
        scored = state.head_scores(source, int(n), int(length), int(seed))
    scores = scored.frame
    kinds = st.multiselect(
        "Kinds", H.KINDS, default=["previous_token", "induction", "prefix_matching", "copying"], key="heads_kinds"
    )
    if not kinds:
        st.info("Choose at least one kind of score to see its heatmap.")
    else:
        # the top head of each kind outlined and listed: the finding the page opens on
        top = H.top_heads(scores[scores["kind"].isin(kinds)], k=1).set_index("kind").loc[list(kinds)].reset_index()
        shown = scored.with_figure(
            head_heatmap,
            kinds=list(kinds),
            cols=2 if model.cfg.n_layers > 8 else 3,
            selectable=True,
            highlight={r.kind: [(int(r.layer), int(r.head))] for r in top.itertuples()},
        )
        figure = shown.draw()
        selection.head_chart(figure, "heads_heatmap")  # a click on a cell selects its head
        state.save_button(shown, key="heads_scores")
        st.markdown(
            "**Top head of each kind** (outlined in red): "
            + ", ".join(f"{r.kind} **L{r.layer}H{r.head}** ({r.score:.2f})" for r in top.itertuples())
        )
    # the head panel: the selected head (a click on the map, the selectbox, or ?head=L.H in the URL); a
    # session's first visit (per model) without one opens it on the top induction head (detected, not listed)
    done = st.session_state.setdefault("heads_default_done", set())  # the model sources it was opened for
    if source not in done:
        done.add(source)
        if selection.selected_head(model) is None and not selection.head_in_url():
            best = H.top_heads(scores, "induction", k=1)
            selection.select_head(int(best.layer.iloc[0]), int(best["head"].iloc[0]))
    panel.page_panel(
        model,
        source,
        "heads_panel",
        scores=scores,
        hint="Click a cell of the score map (or choose a head above) to open its panel.",
    )
    threshold = st.slider("Threshold: list heads scoring at least", -1.0, 1.0, 0.3, 0.05, key="heads_threshold")
    table = (
        scores[scores["kind"].isin(kinds) & (scores["score"] >= threshold)]
        .sort_values("score", ascending=False)
        .reset_index(drop=True)
    )
    st.caption(f"{len(table)} (head, kind) pairs at or above {threshold:.2f}; click a column header to sort")
    st.dataframe(
        table,
        width="stretch",
        hide_index=True,
        key="heads_table",
        column_config={"score": st.column_config.NumberColumn(format="%.3f")},
    )

with ablation_tab:
    recipe = state.zoo_recipe(model)
    st.caption(
        f"Task: {'the zoo task ' + recipe.task if recipe else 'repeated random tokens'}; "
        "the control ablates as many randomly chosen other heads."
    )
    all_heads = [(l, h) for l in range(model.cfg.n_layers) for h in range(model.cfg.n_heads)]
    induction = H.top_heads(scores, "induction", k=2)  # default: the detected induction heads
    suggested = [(int(r.layer), int(r.head)) for r in induction.itertuples()]
    chosen = st.multiselect(
        "Heads",
        all_heads,
        default=list(dict.fromkeys(suggested)),
        format_func=lambda lh: f"L{lh[0]}H{lh[1]}",
        key="heads_ablate",
    )
    cols = st.columns(4)
    how = cols[0].selectbox(
        "How",
        HOWS[:3],
        key="heads_how",
        help="zero: output z set to 0; mean: replaced by "
        "its mean over the task batch; resample: taken from another sequence",
    )
    metric = cols[1].selectbox("Metric", ("loss", "accuracy"), key="heads_metric")
    task_n = cols[2].number_input("task sequences", 1, 512, 16 if text else 64, key="heads_task_n")
    n_random = cols[3].number_input("random controls", 0, 10, 3, key="heads_random")
    if st.button("Ablate", type="primary", key="heads_go", disabled=not chosen):
        st.session_state["heads_run"] = (tuple(chosen), how, metric, int(task_n), int(n_random))
    run = st.session_state.get("heads_run")
    if not run or list(run[0]) != chosen:
        st.info(
            "Choose heads and press **Ablate**: the task metric with and without them, against as many "
            "random heads (the control)."
        )
    else:
        with state.friendly("ablation"):
            ablated = state.ablation(source, run[0], run[1], run[2], run[3], int(seed), run[4])
        effect = ablated.frame
        clean = effect.loc[effect.condition == "clean", "value"].iloc[0]
        target = effect.loc[effect.condition == "target", "value"].iloc[0]
        c1, c2 = st.columns(2)
        c1.metric(f"{run[2]} without ablation", f"{clean:.4f}")
        c2.metric(
            f"{run[2]} with {' '.join(f'L{l}H{h}' for l, h in run[0])} ablated ({run[1]})",
            f"{target:.4f}",
            delta=f"{target - clean:+.4f}",
            delta_color="inverse" if run[2] == "loss" else "normal",
        )
        st.plotly_chart(ablation_bar(ablated), key="heads_ablation_bar")
        state.save_button(ablated, key="heads_ablation")
        st.dataframe(effect, width="stretch", hide_index=True)

with retrieval_tab:
    st.markdown(
        "**Retrieval heads** (Wu et al. 2024): while the model copies a needle from a long context into "
        "its answer, a head *retrieves* at a step if its most attended token is the needle token being "
        "copied; its score is the share of answer steps where it does.  Masking the top heads' queries "
        "during decoding should break the answer; as many random heads (the control) should not."
    )
    if not text:
        st.info(
            "Retrieval prompts are English (a passkey or a fact hidden in filler text): load a real model, "
            "e.g. `smollm2-135m` on the Model page, or a Hugging Face folder."
        )
    else:
        cols = st.columns(4)
        task = cols[0].selectbox(
            "Task",
            state.RETRIEVAL_TASKS,
            key="ret_task",
            format_func={"passkey": "passkey", "needle_haystack": "needle in a haystack"}.get,
        )
        r_n = cols[1].number_input("prompts", 1, 64, 4, key="ret_n")
        ctx = cols[2].number_input("context length (tokens)", 64, min(model.cfg.n_ctx, 4096), 200, 8, key="ret_ctx")
        spread = cols[3].checkbox("needle depth spread over prompts", True, key="ret_spread")
        depth = None if spread else st.slider("needle depth (0 = start, 1 = end)", 0.0, 1.0, 0.5, 0.05, key="ret_depth")
        cols = st.columns(3)
        k = cols[0].number_input("heads masked (top k)", 1, model.cfg.n_layers * model.cfg.n_heads, 5, key="ret_k")
        r_random = cols[1].number_input("random draws", 0, 10, 2, key="ret_random")
        r_seed = cols[2].number_input("seed", 0, 10_000, 0, key="ret_seed")
        params = (task, int(r_n), int(ctx), depth, int(k), int(r_random), int(r_seed))
        if st.button("Run the experiment", type="primary", key="ret_go"):
            st.session_state["ret_run"] = params
        if st.session_state.get("ret_run") != params:
            st.info("Press **Run the experiment** (about 10 s for 4 prompts of 200 tokens on smollm2-135m, 2 cores).")
        else:
            with state.friendly("retrieval"):
                result = state.retrieval(source, *params)
            c1, c2, c3 = st.columns(3)
            c1.metric("answer accuracy", f"{result['accuracy']:.2f}")
            c2.metric(f"heads scoring > {result['threshold']}", f"{result['sparsity']:.1%}")
            c3.metric("top heads", " ".join(f"L{l}H{h}" for l, h in result["heads"]))
            with st.expander("first prompt"):
                st.text(result["example"])
            shown = result["run"].with_figure(head_heatmap, title="retrieval score")
            st.plotly_chart(shown.draw(), key="ret_heatmap")
            state.save_button(shown, key="heads_retrieval")
            st.plotly_chart(ablation_bar(result["masking"]), key="ret_masking")
            st.dataframe(result["masking"], width="stretch", hide_index=True)
            st.markdown(
                "**Needle-in-a-haystack grid**: accuracy per context length x depth, unmasked and with the "
                "top heads masked."
            )
            cols = st.columns(3)
            lengths_text = cols[0].text_input("context lengths", "128 256", key="ret_grid_lengths")
            depths_text = cols[1].text_input("depths", "0 0.5 1", key="ret_grid_depths")
            g_n = cols[2].number_input("prompts per cell", 1, 16, 2, key="ret_grid_n")
            if st.button("Run the grid", key="ret_grid_go"):
                with state.friendly("grid"):
                    lengths = tuple(state.parse_numbers(lengths_text, int, "context lengths"))
                    depths = tuple(state.parse_numbers(depths_text, float, "depths"))
                    grid = state.niah(source, lengths, depths, int(g_n), tuple(result["heads"]))
                st.plotly_chart(niah_heatmap(grid), key="ret_grid")

with sinks_tab:
    st.markdown(
        "**Attention sinks**: the share of each layer's attention that lands on the first token, and "
        "the loss when the first token is dropped from the context (on text the model writes itself, or "
        "repeated random tokens for zoo models)."
    )
    cols = st.columns(3)
    s_n = cols[0].number_input("sequences", 1, 32, 2, key="sink_n")
    s_len = cols[1].number_input("length", 8, min(model.cfg.n_ctx, 1024), min(model.cfg.n_ctx, 64), key="sink_len")
    s_seed = cols[2].number_input("seed", 0, 10_000, 0, key="sink_seed")
    if st.button("Measure sinks", key="sink_go"):
        st.session_state["sink_run"] = (int(s_n), int(s_len), int(s_seed))
    if st.session_state.get("sink_run") != (int(s_n), int(s_len), int(s_seed)):
        st.info("Press **Measure sinks**.")
    else:
        with state.friendly("sinks"):
            share, removal = state.sinks(source, int(s_n), int(s_len), int(s_seed))
        st.plotly_chart(sink_plot(share, removal), key="sink_fig")
        state.save_button(share, key="heads_sinks")
        st.dataframe(share.frame, width="stretch", hide_index=True)
