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
# # Steering a real LM: sentiment vectors and function vectors
#
# On `smollm2-135m` (SmolLM2-135M-Instruct, from the user cache; `interp fetch smollm2-135m`):
#
# 1. **Contrastive activation addition** (Rimsky et al. 2024) from natural sentiment pairs
#    of different lengths ("I loved this movie, it was wonderful." against "I hated this
#    movie."), swept over layers and coefficients, against a random vector of equal norm
#    and against simply asking for a positive review (prompting is a strong baseline:
#    AxBench, Wu et al. 2025).
# 2. **Function vectors** (Todd et al. 2024): the summed mean outputs of the heads with the
#    largest causal indirect effect on few-shot antonym prompts, added to held-out zero-shot
#    queries, layer by layer.
#
# The tests check the same findings; this notebook shows them.

# %%
import interp
from interp import function_vectors, runs, steering
from interp.logits import next_token_probs
from interp.plots.logits import next_token_bars
from interp.plots.steering import function_vector_curve, sweep_curves, tradeoff_plot
from interp.tasks import text

model = interp.load("smollm2-135m")
sentiment = text.sentiment(model)
print(len(sentiment.pairs), "pairs, e.g.")
print("  +", sentiment.pairs.positive[0])
print("  -", sentiment.pairs.negative[0])
print(
    "behaviour: log-odds of",
    model.to_str_tokens(sentiment.concept[:5]),
    "... against",
    model.to_str_tokens(sentiment.opposite[:5]),
    "...",
)

# %% [markdown]
# ## One vector at layer 20
#
# The difference of the mean last-token residual streams of the positive and negative
# statements, added at every position of a neutral review prompt.

# %%
vector = steering.SteeringVector.from_pairs(model, sentiment.pairs, layer=20)
prompt = sentiment.eval[0]
before = next_token_probs(model, prompt, k=8)
with vector.apply(model, coef=2):
    after = next_token_probs(model, prompt, k=8)
next_token_bars({"unsteered": before, "steered (coef 2, layer 20)": after}, title=prompt)

# %% [markdown]
# Greedy continuations; at coefficient 4 the text degrades (the damage column of the sweep
# below measures how much).

# %%
steering.compare_generations(model, vector, sentiment.eval[:3], coef=2, max_new_tokens=10)

# %% [markdown]
# ## Layers x coefficients, the random control and the prompting baseline
#
# Behaviour: log-odds of a positive word over a negative one as the next token of the
# evaluation prompts (nats).  Damage: KL from the unsteered model on neutral text (nats per
# token).  The star is the unsteered model asked, in words, for a positive review.

# %%
sweep = steering.sweep(
    model,
    sentiment.pairs,
    [16, 24],
    [0, 1, 4],
    sentiment.eval,
    sentiment.behaviour,
    neutral_prompts=sentiment.neutral,
    instruction=sentiment.instruction,
    progress=False,
)
print(sweep[["layer", "coef", "vector", "behaviour", "damage"]].round(3).to_string())
tradeoff_plot(sweep)

# %%
sweep_curves(sweep[sweep.vector.isin(["steer", "random"])])

# %% [markdown]
# ## Function vectors for antonyms
#
# Few-shot prompts in Todd et al.'s Q/A format (printed below) from the train split give the
# heads' causal indirect effects (each head's mean output patched into prompts whose labels
# were shuffled) and their mean outputs; the top 15 heads' outputs summed are the function
# vector.  Held-out words, asked zero-shot ("Q: in\nA:"), measure it.

# %%
task = text.function_task(model, "antonym")
train = text.function_prompts(model, task, 32, split="train", seed=0)
test = text.function_prompts(model, task, len(task.test), split="test", seed=1)
print(repr(model.decode(model.tokenize(train.clean).rows()[0])))
curve = runs.run(
    function_vectors.layer_sweep, model, train, test, layers=[10, 14, 20], top_k=15, coefs=(2.0,), progress=False
)
print("top heads by indirect effect:", curve.meta["heads"][:8])
print(curve.frame[["condition", "layer", "coef", "accuracy"]].round(3).to_string())
function_vector_curve(curve)
