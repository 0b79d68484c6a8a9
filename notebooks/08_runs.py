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
# # Results that last: reopening a run saved from the app
#
# Every analysis result can be kept in the run store (`interp.runs`): its tidy frame, the
# context the analysis recorded (clean / corrupt values, the metric, the engine ...), its
# provenance (arguments, the model and the sha256 of its weights, the prompts, seeds, library
# versions, git commit, device, wall time) and how to draw it.  The app's **Save this run**
# button, the CLI's `--save` and `interp.runs.save(result)` all write to the same store
# (`$INTERP_RUNS`, default `$INTERP_CACHE/runs`), so a result found in the browser can be
# reopened here, checked and compared with a new one.
#
# This notebook takes the newest head-score map saved from the app's **Heads** page on
# `induction-2l`, reloads it, recomputes it to check that it reproduces, and compares it with the
# same analysis on another model.

# %%
import interp
from interp import heads, runs
from interp.plots.heads import head_heatmap

model = interp.load("induction-2l")
saved = runs.list(analysis="head_scores", model="induction-2l", saved_from="app")
print(f"{len(saved)} head-score runs on induction-2l saved from the app in {runs.root()}")

# %% [markdown]
# If you have not pressed **Save this run** on the Heads page yet, the next cell does it for you:
# it runs the app's Heads page headless (Streamlit's `AppTest`, the same script `interp app`
# serves) and presses its button, which calls `interp.runs.save(result, saved_from="app")`.

# %%
if saved.empty:
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    import apps

    app = AppTest.from_file(str(Path(apps.__file__).parent / "app.py"), default_timeout=120)
    app.session_state["model_source"] = "induction-2l"
    app.switch_page("views/heads.py").run()
    app.button(key="save_heads_scores").click().run()
    print(app.success[0].value)
    saved = runs.list(analysis="head_scores", model="induction-2l", saved_from="app")
run_id = saved["id"].iloc[0]
from_app = runs.load(run_id)
from_app

# %% [markdown]
# The reloaded run: where it came from, its frame and its figure (redrawn from the plot
# function and arguments the page used).

# %%
p = from_app.provenance
print(f"{p.analysis} ({p.function}), started {p.started}, {p.wall_seconds:.2f} s on {p.device} ({p.dtype})")
print(f"model {p.model['name']}: {p.model['source']}, weights sha256 {p.model['sha256'][:16]}...")
print("versions:", {k: p.versions[k] for k in ("interp", "torch", "transformer-lens")})
print("git:", p.git)
print("arguments:", {k: v for k, v in p.arguments.items() if k != "model"})
print(heads.top_heads(from_app.frame, "induction", k=2))
from_app.draw()

# %% [markdown]
# **Does it reproduce?**  The provenance holds the probe tokens themselves, so the same analysis
# can be run again on exactly the same input; the frames should be equal.

# %%
import torch

probe = torch.tensor(p.prompts[0]["ids"])
again = runs.run(heads.scores, model, probe)
same = runs.diff(from_app, again)
print(f"reproduced: {same.equal}; largest |difference| {same.summary['max_abs_diff']}")
print(same.provenance[["field", "a", "b"]].to_string(index=False))

# %% [markdown]
# **A new run to compare with**: the same probe length on `recall-2l`, the associative-recall
# model of the zoo.  `runs.diff` matches the two frames on their coordinates (layer, head, kind)
# and gives the difference of every score; its figure is the head map of B - A.

# %%
other = interp.load("recall-2l")
new = runs.run(heads.scores, other, heads.default_tokens(other, n=16, length=probe.shape[1], seed=0))
new_id = runs.save(new, saved_from="notebook", label="the app's head scores, on recall-2l")
d = runs.diff(from_app, runs.load(new_id))
print(f"{d.summary['matched']} cells matched on {d.on}; largest |B - A| {d.summary['max_abs_diff']}")
changed = d.frame.reindex(d.frame["score_diff"].abs().sort_values(ascending=False).index)
print(changed.head(8).round(3).to_string(index=False))
d.figure()

# %% [markdown]
# The catalog is a DuckDB database over the Parquet files: every run can be queried in SQL.

# %%
runs.sql(
    "SELECT r.model, f.kind, max(f.score) AS best FROM frames() f JOIN runs r ON f.run_id = r.id "
    "WHERE r.analysis = 'head_scores' AND f.kind = 'induction' GROUP BY 1, 2 ORDER BY 1"
)

# %%
head_heatmap(runs.load(new_id), ["previous_token", "induction"], title="recall-2l, reloaded")
