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
# # Steering a behaviour with a vector
#
# In `steer-2l` the first token picks a mode: after `A` every token comes from the lower half
# of the vocabulary (`a..`), after `B` from the upper half (`b..`).  Contrast pairs (mode-B
# prompts against mode-A prompts) give a steering vector: the mean difference of the residual
# stream at the last position (CAA).  Added to mode-A prompts it should make the model
# continue in the B half.  A random vector of the same norm is the control; the KL from the
# unsteered model measures the collateral damage.

# %%
import pandas as pd

import interp
from interp import metrics, runs, tasks
from interp.logits import next_token_probs
from interp.plots.logits import next_token_bars
from interp.plots.steering import sweep_curves, sweep_heatmap
from interp.steering import SteeringVector, compare_generations, sweep

model = interp.load("steer-2l")
d_vocab = model.cfg.d_vocab
half_a, half_b = tasks.mode_halves(d_vocab)
pairs = tasks.mode_contrast_pairs(32, d_vocab=d_vocab, n_ctx=16, seed=0)
print(model)
print("positive:", " ".join(model.to_str_tokens(pairs.positive[0])))
print("negative:", " ".join(model.to_str_tokens(pairs.negative[0])))

# %% [markdown]
# ## One vector, one prompt

# %%
vec = SteeringVector.from_pairs(model, pairs, layer=0, method="caa")
prompt = tasks.mode_sequences(1, d_vocab=d_vocab, n_ctx=8, mode=0, seed=99).tokens
before = next_token_probs(model, prompt, k=8)
with vec.apply(model, coef=1.0):
    after = next_token_probs(model, prompt, k=8)
print(vec)
next_token_bars({"unsteered": before, "steered (coef 1, layer 0)": after}, title=" ".join(model.to_str_tokens(prompt)))

# %%
compare_generations(
    model, vec, tasks.mode_sequences(4, d_vocab=d_vocab, n_ctx=6, mode=0, seed=5).tokens, coef=1.0, max_new_tokens=8
)

# %% [markdown]
# ## Layers x coefficients, against a random vector
#
# Behaviour: probability mass on the B half at every position after the mode token, on
# held-out mode-A sequences.  Damage: mean KL(unsteered || steered) in nats per position.

# %%
eval_tokens = tasks.mode_sequences(64, d_vocab=d_vocab, n_ctx=16, mode=0, seed=1).tokens
behaviour = metrics.set_prob(half_b, pos=[list(range(1, 16))])  # every position after the mode token
result = runs.run(sweep, model, pairs, None, [0, 0.25, 0.5, 0.6, 0.75, 1, 2, 4], eval_tokens, behaviour, progress=False)
frame = result.frame
print(f"unsteered B-half probability: {result.meta['baseline_behaviour']:.4f}")
sweep_curves(result)

# %%
sweep_heatmap(frame, "behaviour")

# %%
at1 = frame[frame.coef == 1].pivot_table(index="layer", columns="vector", values=["behaviour", "damage"])
print(at1.round(3))

# %% [markdown]
# ## Where along the sequence
#
# The mode token sits at position 0.  Does the vector need to change the mode token's own
# residual stream, or is adding it at the later positions enough?  Compare adding it from
# position 0 with adding it from position 1 on, near the coefficients where steering sets in.

# %%
rows = []
for start in (0, 1):
    part = sweep(
        model,
        {0: vec},
        None,
        [0.5, 0.6, 0.75, 1],
        eval_tokens,
        behaviour,
        start_pos=start,
        random_control=False,
        progress=False,
    )
    rows.append(part.assign(start_pos=start))
by_start = pd.concat(rows).query("vector == 'steer'").pivot_table(index="coef", columns="start_pos", values="behaviour")
by_start.round(3)

# %% [markdown]
# ## CAA, PCA and ActAdd
#
# The three ways to build the vector from the same pairs (ActAdd from the first pair only).

# %%
vectors = {
    "caa": vec,
    "pca": SteeringVector.from_pairs(model, pairs, layer=0, method="pca"),
    "actadd": SteeringVector.from_pairs(model, pairs.positive[:1], pairs.negative[:1], layer=0, method="actadd"),
}
compare = sweep(model, vectors, None, [0.5, 0.6, 0.75, 1], eval_tokens, behaviour, random_control=False, progress=False)
compare[compare.vector != "none"].pivot_table(index="layer", columns="coef", values="behaviour").round(3).rename_axis(
    "method"
)
