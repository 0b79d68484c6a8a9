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
# # The published findings, run on smollm2-135m
#
# `interp.reproduce` turns a paper's finding into an experiment with a verdict: the paper's
# protocol run on any model, our number with a 95% bootstrap interval over prompts, text rows or
# seeds beside the published one (with the model it was measured on, where in the paper, and how
# it was checked), and the finding's rule applied: **reproduced**, **partial**, **not reproduced**
# or **not applicable** (with the reason).  The causal findings (IOI path patching, the Hydra
# effect, patching best practice, causal tracing in a transformer and in Mamba) live in
# `circuits.reproduce` and register through the `interp.findings` entry point; importing that
# package registers them too.  Five findings about memory and training (the recall gap, flip-flop
# glitches, LSTM cells, the induction phase change, causal tracing in Mamba) measure small models
# the zoo trained for them, whatever model they are given: their summary's `model` names them.
#
# This notebook runs the whole list in one process on one model load, with `quick=True` (smaller
# samples: a first look; `interp reproduce all` or `quick=False` runs the full protocols, up to a
# few minutes each on 2 CPU cores).

# %%
import pandas as pd

import circuits.reproduce  # noqa: F401  registers the causal findings
import interp
from interp import reproduce

model = interp.load("smollm2-135m")
reproduce.list_findings()[["id", "paper", "published", "unit", "published_model", "where", "source"]]

# %% [markdown]
# Every finding runs on the same loaded model.  The model's own text (sampled once from its BOS
# token and cached) stands in for a corpus where a finding needs ordinary text.

# %%
results = {fid: reproduce.run(fid, model, quick=True) for fid in ("olsson2022", "wu2024", "xiao2023")}

# %%
results |= {fid: reproduce.run(fid, model, quick=True) for fid in ("todd2023", "michel2019", "sun2024", "wendler2024")}

# %% [markdown]
# The causal findings, from `circuits.reproduce`:

# %%
results |= {fid: reproduce.run(fid, model, quick=True) for fid in ("wang2022", "mcgrath2023", "zhang2023")}
table = pd.DataFrame(
    [
        {
            "paper": r.summary["paper"],
            "published": r.summary["published"],
            "published on": r.summary["published_model"],
            "ours": r.summary["ours"],
            "95% interval": None
            if r.summary["ours"] is None
            else f"[{r.summary['ci_low']:.3g}, {r.summary['ci_high']:.3g}]",
            "n": r.summary["n"],
            "verdict": r.verdict,
            "seconds": r.summary["seconds"],
        }
        for r in results.values()
    ],
    index=list(results),
)
table

# %% [markdown]
# Why each verdict: the rule's parts, each with the numbers it rests on.

# %%
for fid, r in results.items():
    print(f"{fid} ({r.verdict}): {r.summary['reason']}\n")

# %% [markdown]
# ## Attention sinks (Xiao et al. 2023)
#
# Perplexity along the text with a key-value cache of the most recent tokens alone, with four
# sink tokens kept beside them (positions re-indexed inside the cache), and with full attention.

# %%
results["xiao2023"].figure

# %% [markdown]
# ## Head importance and pruning (Michel et al. 2019)

# %%
results["michel2019"].figure

# %% [markdown]
# ## Function vectors (Todd et al. 2023) and the latent language (Wendler et al. 2024)

# %%
results["todd2023"].figure

# %%
results["wendler2024"].figure

# %% [markdown]
# ## IOI (Wang et al. 2022) and the Hydra effect (McGrath et al. 2023)

# %%
results["wang2022"].figure

# %%
results["mcgrath2023"].figure
