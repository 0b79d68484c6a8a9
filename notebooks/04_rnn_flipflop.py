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
# # Flip-flop LSTM: where the stored bit lives
#
# The flip-flop language has four instructions: `W0` / `W1` write a bit, `IGN` is ignored,
# and at `READ` the model must output the last bit written (`0` or `1`).  The zoo's
# `flipflop-lstm` (one LSTM layer of 32 units) solves it.  An LSTM step carries two states,
# the cell `c` and the hidden `h = o * tanh(c)`; the workbench unrolls the recurrence, so
# both are hook sites at every step (`blocks.0.hook_cell`, `blocks.0.hook_hidden`), and a
# patch at step t reaches every later step.  Activation patching then says in which state
# the bit is kept between the write and the read, and correlation plus a unit-level patch
# says by which units.

# %%
import pandas as pd
import plotly.express as px
import torch

import interp
from circuits import runs
from circuits.patching import patch
from interp import tasks
from interp.runs import run

TRAIN = False  # True: retrain the zoo recipe (seconds to a minute)
if TRAIN:
    from interp.training import train

    model, card = train("flipflop-lstm")
else:
    model = interp.load("flipflop-lstm")
    card = model.card
task = tasks.flip_flop(512, length=64, seed=11)
print(model)
print(f"accuracy at READ on held-out sequences: {task.accuracy(model(task.tokens)):.3f}")
print("hook sites:", model.site_names)

# %% [markdown]
# ## Patching the hidden and the cell state
#
# Clean and corrupt prompts differ only in the last write before the final `READ` (position
# 4), so the correct answers differ.  Denoising patches one state at one step from the clean
# run into the corrupt run; the metric is the logit difference between the clean answer and
# the corrupt one at the final `READ`, normalised so 1 = clean behaviour, 0 = corrupt.

# %%
clean = [
    "BOS W1 IGN IGN W0 IGN IGN IGN IGN IGN READ",
    "BOS W0 IGN IGN W1 IGN IGN IGN IGN IGN READ",
    "BOS W0 IGN W1 W0 IGN READ IGN IGN IGN READ",
    "BOS W1 IGN W0 W1 IGN READ IGN IGN IGN READ",
]
corrupt = [
    "BOS W1 IGN IGN W1 IGN IGN IGN IGN IGN READ",
    "BOS W0 IGN IGN W0 IGN IGN IGN IGN IGN READ",
    "BOS W0 IGN W1 W1 IGN READ IGN IGN IGN READ",
    "BOS W1 IGN W0 W0 IGN READ IGN IGN IGN READ",
]
WRITE, READ = 4, 10
results = {
    site: run(patch, model, clean, corrupt, site=site, by="pos", metric="logit_diff", progress=False)
    for site in ("hidden", "cell")
}
frames = {site: r.frame for site, r in results.items()}
both = pd.concat([f.assign(site=site) for site, f in frames.items()], ignore_index=True)
print(
    f"logit diff clean {results['cell'].meta['clean_value']:.2f}, corrupt {results['cell'].meta['corrupt_value']:.2f}"
)
both.pivot(index="pos", columns="site", values="normalised").round(3).T

# %%
px.line(
    both,
    x="pos",
    y="normalised",
    color="site",
    markers=True,
    title="denoising one step of one state (1 = clean answer restored)",
)

# %%
cell, hidden = (frames[s].set_index("pos")["normalised"] for s in ("cell", "hidden"))
# the cell state carries the bit from the write on; the hidden state only matters at the read
print(
    f"cell state from the write on: min {cell.loc[WRITE:].min():.3f}; hidden state between write and read: "
    f"max {hidden.loc[WRITE : READ - 1].max():.3f}; hidden at the read: {hidden.loc[READ]:.3f}"
)

# %% [markdown]
# ## Which units track the bit
#
# Correlate each unit's activation with the stored bit (`info["bit"]` of the task), over
# every position after the first write.

# %%
sites = {"cell": "blocks.0.hook_cell", "hidden": "blocks.0.hook_hidden"}
_, cache = model.run_with_cache(task.tokens, names=list(sites.values()))
known = task.info["bit"] >= 0
bit = pd.Series(task.info["bit"][known].float().numpy())
corr = pd.DataFrame({name: pd.DataFrame(cache[site][known].numpy()).corrwith(bit) for name, site in sites.items()})
corr.index.name = "unit"
best = {name: int(corr[name].abs().idxmax()) for name in sites}
print({name: (unit, round(float(corr.loc[unit, name]), 3)) for name, unit in best.items()})
corr.abs().describe().round(3)

# %%
unit = best["hidden"]
seq = pd.DataFrame(
    {
        "pos": range(40),
        "token": model.to_str_tokens(task.tokens[0, :40]),
        f"hidden unit {unit}": cache[sites["hidden"]][0, :40, unit].numpy(),
        "stored bit": task.info["bit"][0, :40].numpy(),
    }
)
px.line(
    seq,
    x="pos",
    y=[f"hidden unit {unit}", "stored bit"],
    hover_data=["token"],
    markers=True,
    title="the best-correlated hidden unit follows the stored bit",
)

# %% [markdown]
# ## Is the bit in one unit of the cell state?
#
# Patch only some units of the cell state, at every step from the write on, from the clean
# run into the corrupt run (a hook on `blocks.0.hook_cell`; the recurrence carries each
# patched step on).  One unit at a time, then the k units most correlated with the bit.

# %%
pair = runs.prepare(model, clean, corrupt, "logit_diff")
_, clean_cache = model.run_with_cache(pair.clean, names=[sites["cell"]])
clean_cell = clean_cache[sites["cell"]]


@torch.no_grad()
def patch_units(units: list[int]) -> float:
    def hook(x, hook):
        x = x.clone()
        x[:, WRITE:, units] = clean_cell[:, WRITE:, units]
        return x

    logits = model.run_with_hooks(pair.corrupt, [(sites["cell"], hook)])
    return float(pair.normalise(float(pair.metric(logits).mean())))


single = pd.Series({u: patch_units([u]) for u in range(model.cfg.d_model)}, name="restored")
order = corr["cell"].abs().sort_values(ascending=False).index.tolist()
top_k = pd.DataFrame([{"k": k, "restored": patch_units(order[:k])} for k in (1, 2, 4, 8, 16, model.cfg.d_model)])
print("best single unit:", int(single.idxmax()), f"restores {single.max():.2f} of the clean logit difference")
top_k

# %%
px.line(
    top_k,
    x="k",
    y="restored",
    markers=True,
    log_x=True,
    title="cell-state units patched (most bit-correlated first) vs clean behaviour restored",
)

# %% [markdown]
# Patching all units restores the clean answer; how many it takes, and how much the best
# single unit restores, says whether this LSTM keeps the bit in one unit or spreads it
# over many correlated ones.
