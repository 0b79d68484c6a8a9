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
# # Induction heads from scratch
#
# A two-layer attention-only transformer trained on repeated random segments
# (`induction-2l` in the zoo) learns the textbook induction circuit (Olsson et al. 2022):
# **previous-token heads** in layer 0 write "the token before me was A" into each position,
# and **induction heads** in layer 1 use it (K-composition) to find the earlier occurrence of
# the current token and copy the token that followed it.  Its recipe adds two things to plain
# training so that, as in large models, not every head is part of the circuit: DropHead on
# layer 0 spreads the previous-token job over all four heads there (no single one is a
# bottleneck), and a head-sparsity penalty prunes layer 1 down to the two induction heads it
# needs.  This notebook loads (or retrains)
# the model, measures in-context learning, detects the heads, ablates them and reads the
# composition off the weights.  Every number comes from an `interp` function.

# %%
import pandas as pd
import torch

import interp
from interp import heads, tasks
from interp.ablation import ablation_effect
from interp.attention import attention_patterns
from interp.plots.attention import attention_pattern, head_grid
from interp.plots.heads import ablation_bar, composition_heatmap, head_heatmap, loss_by_position_plot

torch.manual_seed(0)
TRAIN = False  # True: retrain the zoo recipe from scratch (a few minutes on 2 CPU cores)
if TRAIN:
    from interp.training import train

    model, card = train("induction-2l")
else:
    model = interp.load("induction-2l")
    card = model.card
print(model)
pd.Series(card["metrics"], name=card["name"])

# %% [markdown]
# ## In-context learning
#
# On [BOS] followed by a random segment repeated to fill the context, the first copy is
# unpredictable (loss about ln 63 = 4.1 nats) and every later token is predictable from
# context.  The loss per position shows the drop once the segment starts repeating; the ICL
# score is the loss late in the context minus the loss early in it.

# %%
task = tasks.repeated_tokens(128, d_vocab=model.cfg.d_vocab, n_ctx=model.cfg.n_ctx, period=20, seed=1)
by_pos = heads.loss_by_position(model, task)
icl = heads.icl_score(model, task)
print(
    f"ICL score {icl:.2f} nats; loss on the first copy {by_pos.loss[1:19].mean():.2f}, "
    f"on the repeats {by_pos.loss[20:].mean():.2f}"
)
loss_by_position_plot(by_pos, title="next-token loss on [BOS] r r r (period 20)")

# %% [markdown]
# ## Detecting the heads
#
# `heads.scores` computes the TransformerLens head-detector scores (previous-token,
# duplicate-token, induction: "mul" score, so a perfect induction head scores about 0.5),
# prefix matching (1.0 = perfect), attention to the first position (sink) and the OV
# copying score (from the weights) for every head, on [BOS] r r sequences.

# %%
probe = heads.default_tokens(model, n=16)
scores = heads.scores(model, probe)
table = scores.pivot_table(index=["layer", "head"], columns="kind", values="score").round(3)
table

# %%
head_heatmap(scores, ["previous_token", "induction", "prefix_matching", "copying"])

# %%
prev = heads.top_heads(scores, "previous_token", k=model.cfg.n_heads)
induction = heads.top_heads(scores, "prefix_matching", k=model.cfg.n_heads)
prev_heads = [(int(r.layer), int(r.head)) for r in prev[prev.score > 0.5].itertuples()]
induction_heads = [(int(r.layer), int(r.head)) for r in induction[induction.score > 0.5].itertuples()]
prev_head = prev_heads[0]
print("previous-token heads (score > 0.5):", prev_heads)
print("induction heads (prefix matching > 0.5):", induction_heads)
print(
    "every induction head sits after the previous-token heads:",
    all(layer > max(l for l, _ in prev_heads) for layer, _ in induction_heads),
)

# %% [markdown]
# ## What they look at
#
# The previous-token head's pattern is the sub-diagonal; an induction head's is a stripe
# one period back, shifted by one (the token after the earlier occurrence).

# %%
tokens = probe[:1, :33]
patterns = attention_patterns(model, tokens)  # [layer, head, dest, src]
str_tokens = model.to_str_tokens(tokens)
head_grid(patterns[induction_heads[0][0]], str_tokens, layer=induction_heads[0][0])

# %%
l, h = induction_heads[0]
attention_pattern(patterns[l, h], str_tokens, title=f"induction head L{l}H{h}")

# %%
l, h = prev_head
attention_pattern(patterns[l, h], str_tokens, title=f"previous-token head L{l}H{h}")

# %% [markdown]
# ## Ablation
#
# Zero-ablating the induction heads together (their output `z` set to 0) destroys the
# in-context prediction.  The control ablates as many randomly chosen other heads (here pairs
# from layer 0's previous-token heads and layer 1's pruned heads) and costs almost nothing:
# the previous-token job survives the loss of any two of its four heads.  One head at a time,
# each induction head matters on its own, while no previous-token head does; ablating all of
# layer 0 at once breaks the circuit, its other half.

# %%
effect = ablation_effect(model, task, induction_heads, metric="loss", n_random=10)
effect

# %%
ablation_bar(effect, title="loss on repeated tokens (nats), induction heads ablated")

# %%
single = pd.concat(
    [
        ablation_effect(model, task, [head], metric="loss", n_random=0).query("condition == 'target'")
        for head in prev_heads + induction_heads
    ],
    ignore_index=True,
)
layer0 = ablation_effect(model, task, prev_heads, metric="loss", n_random=0).query("condition == 'target'")
pd.concat([single, layer0], ignore_index=True)[["heads", "value", "delta"]]

# %% [markdown]
# ## Composition
#
# K-composition scores how much a layer-0 head's output (OV circuit) feeds a layer-1 head's
# keys.  The previous-token heads should be the sources for the induction heads.

# %%
comp = heads.composition_scores(model, "K")
composition_heatmap(comp, "K")

# %%
into_induction = comp[comp.apply(lambda r: (r.dst_layer, r.dst_head) in induction_heads, axis=1)]
by_source = into_induction.groupby(["src_layer", "src_head"]).score.mean().sort_values(ascending=False)
print(by_source.round(3))
print("strongest K-composition source is a previous-token head:", by_source.index[0] in prev_heads)
