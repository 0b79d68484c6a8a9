# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Associative recall: patching and a circuit
#
# `recall-2l` reads `BOS k1 v1 k2 v2 k3 v3 k4 v4 q` and answers the value bound to the
# query key `q`.  This notebook finds the heads that retrieve the value (Wu et al. 2024
# retrieval score, ablation), then asks causally how the answer is computed: activation
# patching of the residual stream and of each head, its attribution-patching estimate, and an
# edge-level circuit (EAP-IG) with its faithfulness.  Two corruptions ask two questions:
# swapping the query for another key (which path reads *which key is asked*?) and replacing
# the bound value in the context (which path carries *the value*?).

# %%
import tempfile
from pathlib import Path

import pandas as pd

import interp
from circuits import corrupt as C
from circuits import metrics as M
from circuits.attribution import attribute, edge_attribution
from circuits.faithfulness import faithfulness_curve
from circuits.graph import Circuit
from circuits.patching import patch
from circuits.plots import agreement_scatter, circuit_graph, faithfulness_plot, patching_heatmap
from interp import tasks
from interp.ablation import ablation_effect
from interp.plots.heads import ablation_bar, head_heatmap
from interp.retrieval import retrieval_scores

model = interp.load("recall-2l")
N_PAIRS, D_VOCAB = 4, model.cfg.d_vocab
task = tasks.associative_recall(256, n_pairs=N_PAIRS, d_vocab=D_VOCAB, n_queries=1, seed=7)
print(model)
print(" ".join(model.to_str_tokens(task.tokens[0])), "->", model.to_str_tokens(task.info["answer"][0])[0])
print(f"accuracy on one-query prompts: {task.accuracy(model(task.tokens)):.3f}")

# %% [markdown]
# ## Retrieval heads
#
# A head's retrieval score is the fraction of answer tokens it copies from the context while
# attending to them (> 0.1: a retrieval head).  Ablating the retrieval heads should break
# recall, ablating as many other heads much less.

# %%
scores = retrieval_scores(model, task, progress=False)
retrieval = [(int(r.layer), int(r["head"])) for _, r in scores[scores.retrieval].iterrows()]
print("retrieval heads:", retrieval)
head_heatmap(scores, title="retrieval score (Wu et al. 2024)")

# %%
effect = ablation_effect(model, task, retrieval, metric="accuracy", n_random=3)
ablation_bar(effect, title="recall accuracy with heads zero-ablated")

# %% [markdown]
# ## Two corruptions
#
# Prompts where the query asks for the third pair (so that positions line up across the
# batch).  *Query swap*: the query becomes another key of the context, whose value is the
# corrupt answer.  *Value swap*: the value bound to the queried key is replaced in the
# context by another value token, which becomes the corrupt answer.  The metric is the logit
# difference between the clean and the corrupt answer at the last position.

# %%
slot = 2  # the third pair: key at 5, value at 6
rows = task.info["value_pos"][:, -1] == 1 + 2 * slot + 1
clean = task.tokens[rows][:32]
n = len(clean)
answer = clean[:, 2 * slot + 2]
other_key, other_value = clean[:, 2 * ((slot + 1) % N_PAIRS) + 1], clean[:, 2 * ((slot + 1) % N_PAIRS) + 2]
query_swap = C.replace_tokens(clean, [-1], d_vocab=D_VOCAB, replacement=other_key[:, None])
new_value = D_VOCAB // 2 + (answer - D_VOCAB // 2 + 17) % (D_VOCAB // 2)  # another value token
value_swap = C.replace_tokens(clean, [2 * slot + 2], d_vocab=D_VOCAB, replacement=new_value[:, None])
corruptions = {
    "query swap": (query_swap, M.logit_diff(answer[:, None], other_value[:, None])),
    "value swap": (value_swap, M.logit_diff(answer[:, None], new_value[:, None])),
}
str_tokens = model.to_str_tokens(clean[0])
for name, (corrupt, _) in corruptions.items():
    print(f"{name:>10}:", " ".join(model.to_str_tokens(corrupt[0])))

# %% [markdown]
# ## Activation patching of the residual stream
#
# Denoising: the clean residual stream at one (layer, position) patched into the corrupt run.
# 1 = the clean answer restored.

# %%
resid = {
    name: patch(model, clean, corrupt, site="resid_pre", by="pos", metric=metric, progress=False)
    for name, (corrupt, metric) in corruptions.items()
}
patching_heatmap(resid["query swap"], tokens=str_tokens, title="query swap: resid_pre, denoising")

# %%
patching_heatmap(resid["value swap"], tokens=str_tokens, title="value swap: resid_pre, denoising")

# %% [markdown]
# ## Per head: exact patching and its attribution estimate
#
# Each head's output (`z`, all positions) patched alone, exactly (one run per head) and by
# attribution patching (two forwards and one backward for all heads at once).

# %%
heads_exact, heads_attr = {}, {}
for name, (corrupt, metric) in corruptions.items():
    heads_exact[name] = patch(model, clean, corrupt, site="z", by="head", metric=metric, progress=False)
    heads_attr[name] = attribute(model, clean, corrupt, site="z", by="head", metric=metric)
pd.concat({name: f.pivot(index="layer", columns="head", values="normalised") for name, f in heads_exact.items()}).round(
    3
)

# %%
agreement_scatter(
    heads_exact["value swap"],
    heads_attr["value swap"],
    value="effect",
    title="value swap: attribution estimate vs exact effect, one point per head",
)

# %% [markdown]
# ## Circuits (EAP-IG)
#
# Every edge of the graph (input, heads through their q / k / v inputs, MLPs, logits) is scored
# by EAP-IG; the circuit keeps the edges of largest |score|.  Faithfulness runs the model with
# every other edge patched to the corrupt run.

# %%
circuits = {
    name: edge_attribution(model, clean, corrupt, metric=metric, method="eap-ig", progress=False)
    for name, (corrupt, metric) in corruptions.items()
}
curves = pd.concat(
    [
        faithfulness_curve(
            c, model, clean, corruptions[name][0], corruptions[name][1], sizes=[5, 10, 20, 50, 100]
        ).assign(corruption=name)
        for name, c in circuits.items()
    ]
)
curves

# %%
faithfulness_plot(curves[curves.corruption == "value swap"], title="value swap: faithfulness of top-k circuits")

# %%
small = {name: c.prune(top_k=12) for name, c in circuits.items()}
circuit_graph(small["query swap"], title="query swap: the 12 strongest edges")

# %%
circuit_graph(small["value swap"], title="value swap: the 12 strongest edges")

# %%
for name, c in small.items():
    kept = c.edges_frame().query("kept").sort_values("abs_score", ascending=False)
    print(f"{name}: faithfulness {c.faithfulness(model, clean, *corruptions[name]):.3f}")
    print(kept[["src", "dst", "component", "score"]].head(6).to_string(index=False), "\n")

# %% [markdown]
# The circuit is saved as JSON (format `interp.circuit`) and read back unchanged:

# %%
path = Path(tempfile.mkdtemp()) / "recall-value-swap.json"
small["value swap"].to_json(path)
again = Circuit.from_json(path)
print("read back:", again)
print(path.read_text()[:400])
