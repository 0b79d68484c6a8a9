"""Writes the notebooks of this folder from the cell lists below (``python notebooks/build.py``).

The notebooks are generated, so they stay small, reviewable and free of stored outputs;
``tests/test_notebooks.py`` executes each one and checks they match this file.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent


def md(text: str):
    return new_markdown_cell(text.strip())


def code(text: str):
    return new_code_cell(text.strip())


INDUCTION = [
    md("""
# Induction heads from scratch

A two-layer attention-only transformer trained on repeated random segments
(`induction-2l` in the zoo) learns the textbook induction circuit (Olsson et al. 2022):
**previous-token heads** in layer 0 write "the token before me was A" into each position,
and **induction heads** in layer 1 use it (K-composition) to find the earlier occurrence of
the current token and copy the token that followed it.  Its recipe adds two things to plain
training so that, as in large models, not every head is part of the circuit: DropHead on
layer 0 spreads the previous-token job over all four heads there (no single one is a
bottleneck), and a head-sparsity penalty prunes layer 1 down to the two induction heads it
needs.  This notebook loads (or retrains)
the model, measures in-context learning, detects the heads, ablates them and reads the
composition off the weights.  Every number comes from an `interp` function.
"""),
    code("""
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
"""),
    md("""
## In-context learning

On [BOS] followed by a random segment repeated to fill the context, the first copy is
unpredictable (loss about ln 63 = 4.1 nats) and every later token is predictable from
context.  The loss per position shows the drop once the segment starts repeating; the ICL
score is the loss late in the context minus the loss early in it.
"""),
    code("""
task = tasks.repeated_tokens(128, d_vocab=model.cfg.d_vocab, n_ctx=model.cfg.n_ctx, period=20, seed=1)
by_pos = heads.loss_by_position(model, task)
icl = heads.icl_score(model, task)
print(f"ICL score {icl:.2f} nats; loss on the first copy {by_pos.loss[1:19].mean():.2f}, "
      f"on the repeats {by_pos.loss[20:].mean():.2f}")
loss_by_position_plot(by_pos, title="next-token loss on [BOS] r r r (period 20)")
"""),
    md("""
## Detecting the heads

`heads.scores` computes the TransformerLens head-detector scores (previous-token,
duplicate-token, induction: "mul" score, so a perfect induction head scores about 0.5),
prefix matching (1.0 = perfect), attention to the first position (sink) and the OV
copying score (from the weights) for every head, on [BOS] r r sequences.
"""),
    code("""
probe = heads.default_tokens(model, n=16)
scores = heads.scores(model, probe)
table = scores.pivot_table(index=["layer", "head"], columns="kind", values="score").round(3)
table
"""),
    code("""
head_heatmap(scores, ["previous_token", "induction", "prefix_matching", "copying"])
"""),
    code("""
prev = heads.top_heads(scores, "previous_token", k=model.cfg.n_heads)
induction = heads.top_heads(scores, "prefix_matching", k=model.cfg.n_heads)
prev_heads = [(int(r.layer), int(r.head)) for r in prev[prev.score > 0.5].itertuples()]
induction_heads = [(int(r.layer), int(r.head)) for r in induction[induction.score > 0.5].itertuples()]
prev_head = prev_heads[0]
print("previous-token heads (score > 0.5):", prev_heads)
print("induction heads (prefix matching > 0.5):", induction_heads)
# the circuit needs the previous-token heads before the induction heads
assert all(layer > max(l for l, _ in prev_heads) for layer, _ in induction_heads)
"""),
    md("""
## What they look at

The previous-token head's pattern is the sub-diagonal; an induction head's is a stripe
one period back, shifted by one (the token after the earlier occurrence).
"""),
    code("""
tokens = probe[:1, :33]
patterns = attention_patterns(model, tokens)          # [layer, head, dest, src]
str_tokens = model.to_str_tokens(tokens)
head_grid(patterns[induction_heads[0][0]], str_tokens, layer=induction_heads[0][0])
"""),
    code("""
l, h = induction_heads[0]
attention_pattern(patterns[l, h], str_tokens, title=f"induction head L{l}H{h}")
"""),
    code("""
l, h = prev_head
attention_pattern(patterns[l, h], str_tokens, title=f"previous-token head L{l}H{h}")
"""),
    md("""
## Ablation

Zero-ablating the induction heads together (their output `z` set to 0) destroys the
in-context prediction.  The control ablates as many randomly chosen other heads (here pairs
from layer 0's previous-token heads and layer 1's pruned heads) and costs almost nothing:
the previous-token job survives the loss of any two of its four heads.  One head at a time,
each induction head matters on its own, while no previous-token head does; ablating all of
layer 0 at once breaks the circuit, its other half.
"""),
    code("""
effect = ablation_effect(model, task, induction_heads, metric="loss", n_random=10)
effect
"""),
    code("""
ablation_bar(effect, title="loss on repeated tokens (nats), induction heads ablated")
"""),
    code("""
single = pd.concat([ablation_effect(model, task, [head], metric="loss", n_random=0).query("condition == 'target'")
                    for head in prev_heads + induction_heads], ignore_index=True)
layer0 = ablation_effect(model, task, prev_heads, metric="loss", n_random=0).query("condition == 'target'")
pd.concat([single, layer0], ignore_index=True)[["heads", "value", "delta"]]
"""),
    md("""
## Composition

K-composition scores how much a layer-0 head's output (OV circuit) feeds a layer-1 head's
keys.  The previous-token heads should be the sources for the induction heads.
"""),
    code("""
comp = heads.composition_scores(model, "K")
composition_heatmap(comp, "K")
"""),
    code("""
into_induction = comp[comp.apply(lambda r: (r.dst_layer, r.dst_head) in induction_heads, axis=1)]
by_source = into_induction.groupby(["src_layer", "src_head"]).score.mean().sort_values(ascending=False)
print(by_source.round(3))
assert by_source.index[0] in prev_heads
"""),
]


RNN_FLIPFLOP = [
    md("""
# Flip-flop LSTM: where the stored bit lives

The flip-flop language has four instructions: `W0` / `W1` write a bit, `IGN` is ignored,
and at `READ` the model must output the last bit written (`0` or `1`).  The zoo's
`flipflop-lstm` (one LSTM layer of 32 units) solves it.  An LSTM step carries two states,
the cell `c` and the hidden `h = o * tanh(c)`; the workbench unrolls the recurrence, so
both are hook sites at every step (`blocks.0.hook_cell`, `blocks.0.hook_hidden`), and a
patch at step t reaches every later step.  Activation patching then says in which state
the bit is kept between the write and the read, and correlation plus a unit-level patch
says by which units.
"""),
    code("""
import pandas as pd
import plotly.express as px
import torch

import interp
from circuits import runs
from circuits.patching import patch
from interp import tasks

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
"""),
    md("""
## Patching the hidden and the cell state

Clean and corrupt prompts differ only in the last write before the final `READ` (position
4), so the correct answers differ.  Denoising patches one state at one step from the clean
run into the corrupt run; the metric is the logit difference between the clean answer and
the corrupt one at the final `READ`, normalised so 1 = clean behaviour, 0 = corrupt.
"""),
    code("""
clean = ["BOS W1 IGN IGN W0 IGN IGN IGN IGN IGN READ", "BOS W0 IGN IGN W1 IGN IGN IGN IGN IGN READ",
         "BOS W0 IGN W1 W0 IGN READ IGN IGN IGN READ", "BOS W1 IGN W0 W1 IGN READ IGN IGN IGN READ"]
corrupt = ["BOS W1 IGN IGN W1 IGN IGN IGN IGN IGN READ", "BOS W0 IGN IGN W0 IGN IGN IGN IGN IGN READ",
           "BOS W0 IGN W1 W1 IGN READ IGN IGN IGN READ", "BOS W1 IGN W0 W0 IGN READ IGN IGN IGN READ"]
WRITE, READ = 4, 10
frames = {site: patch(model, clean, corrupt, site=site, by="pos", metric="logit_diff", progress=False)
          for site in ("hidden", "cell")}
both = pd.concat([f.assign(site=site) for site, f in frames.items()], ignore_index=True)
print(f"logit diff clean {frames['cell'].attrs['clean_value']:.2f}, corrupt {frames['cell'].attrs['corrupt_value']:.2f}")
both.pivot(index="pos", columns="site", values="normalised").round(3).T
"""),
    code("""
px.line(both, x="pos", y="normalised", color="site", markers=True,
        title="denoising one step of one state (1 = clean answer restored)")
"""),
    code("""
cell, hidden = (frames[s].set_index("pos")["normalised"] for s in ("cell", "hidden"))
# the cell state carries the bit from the write on; the hidden state only matters at the read
assert cell.loc[WRITE:].min() > 0.9
assert hidden.loc[WRITE:READ - 1].max() < cell.loc[WRITE:READ - 1].min()
assert hidden.loc[READ] > 0.99
"""),
    md("""
## Which units track the bit

Correlate each unit's activation with the stored bit (`info["bit"]` of the task), over
every position after the first write.
"""),
    code("""
sites = {"cell": "blocks.0.hook_cell", "hidden": "blocks.0.hook_hidden"}
_, cache = model.run_with_cache(task.tokens, names=list(sites.values()))
known = task.info["bit"] >= 0
bit = pd.Series(task.info["bit"][known].float().numpy())
corr = pd.DataFrame({name: pd.DataFrame(cache[site][known].numpy()).corrwith(bit) for name, site in sites.items()})
corr.index.name = "unit"
best = {name: int(corr[name].abs().idxmax()) for name in sites}
print({name: (unit, round(float(corr.loc[unit, name]), 3)) for name, unit in best.items()})
corr.abs().describe().round(3)
"""),
    code("""
unit = best["hidden"]
seq = pd.DataFrame({"pos": range(40), "token": model.to_str_tokens(task.tokens[0, :40]),
                    f"hidden unit {unit}": cache[sites["hidden"]][0, :40, unit].numpy(),
                    "stored bit": task.info["bit"][0, :40].numpy()})
px.line(seq, x="pos", y=[f"hidden unit {unit}", "stored bit"], hover_data=["token"], markers=True,
        title=f"the best-correlated hidden unit follows the stored bit")
"""),
    md("""
## Is the bit in one unit of the cell state?

Patch only some units of the cell state, at every step from the write on, from the clean
run into the corrupt run (a hook on `blocks.0.hook_cell`; the recurrence carries each
patched step on).  One unit at a time, then the k units most correlated with the bit.
"""),
    code("""
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
"""),
    code("""
px.line(top_k, x="k", y="restored", markers=True, log_x=True,
        title="cell-state units patched (most bit-correlated first) vs clean behaviour restored")
"""),
    md("""
Patching all units restores the clean answer; how many it takes, and how much the best
single unit restores, says whether this LSTM keeps the bit in one unit or spreads it
over many correlated ones.
"""),
]


STEERING = [
    md("""
# Steering a behaviour with a vector

In `steer-2l` the first token picks a mode: after `A` every token comes from the lower half
of the vocabulary (`a..`), after `B` from the upper half (`b..`).  Contrast pairs (mode-B
prompts against mode-A prompts) give a steering vector: the mean difference of the residual
stream at the last position (CAA).  Added to mode-A prompts it should make the model
continue in the B half.  A random vector of the same norm is the control; the KL from the
unsteered model measures the collateral damage.
"""),
    code("""
import pandas as pd

import interp
from interp import tasks
from interp.logits import next_token_probs
from interp.plots.logits import next_token_bars
from interp.plots.steering import sweep_curves, sweep_heatmap
from interp.steering import SteeringVector, compare_generations, sweep, token_set_prob

model = interp.load("steer-2l")
d_vocab = model.cfg.d_vocab
half_a, half_b = tasks.mode_halves(d_vocab)
pairs = tasks.mode_contrast_pairs(32, d_vocab=d_vocab, n_ctx=16, seed=0)
print(model)
print("positive:", " ".join(model.to_str_tokens(pairs.positive[0])))
print("negative:", " ".join(model.to_str_tokens(pairs.negative[0])))
"""),
    md("""
## One vector, one prompt
"""),
    code("""
vec = SteeringVector.from_pairs(model, pairs, layer=0, method="caa")
prompt = tasks.mode_sequences(1, d_vocab=d_vocab, n_ctx=8, mode=0, seed=99).tokens
before = next_token_probs(model, prompt, k=8)
with vec.apply(model, coef=1.0):
    after = next_token_probs(model, prompt, k=8)
print(vec)
next_token_bars({"unsteered": before, "steered (coef 1, layer 0)": after},
                title=" ".join(model.to_str_tokens(prompt)))
"""),
    code("""
compare_generations(model, vec, tasks.mode_sequences(4, d_vocab=d_vocab, n_ctx=6, mode=0, seed=5).tokens,
                    coef=1.0, max_new_tokens=8)
"""),
    md("""
## Layers x coefficients, against a random vector

Behaviour: probability mass on the B half at every position after the mode token, on
held-out mode-A sequences.  Damage: mean KL(unsteered || steered) in nats per position.
"""),
    code("""
eval_tokens = tasks.mode_sequences(64, d_vocab=d_vocab, n_ctx=16, mode=0, seed=1).tokens
behaviour = token_set_prob(half_b, positions=slice(1, None))
frame = sweep(model, pairs, None, [0, 0.25, 0.5, 0.6, 0.75, 1, 2, 4], eval_tokens, behaviour, progress=False)
print(f"unsteered B-half probability: {frame.attrs['baseline_behaviour']:.4f}")
sweep_curves(frame)
"""),
    code("""
sweep_heatmap(frame, "behaviour")
"""),
    code("""
at1 = frame[frame.coef == 1].pivot_table(index="layer", columns="vector", values=["behaviour", "damage"])
print(at1.round(3))
assert (at1["behaviour"]["steer"] > at1["behaviour"]["random"]).all()
"""),
    md("""
## Where along the sequence

The mode token sits at position 0.  Does the vector need to change the mode token's own
residual stream, or is adding it at the later positions enough?  Compare adding it from
position 0 with adding it from position 1 on, near the coefficients where steering sets in.
"""),
    code("""
rows = []
for start in (0, 1):
    part = sweep(model, {0: vec}, None, [0.5, 0.6, 0.75, 1], eval_tokens, behaviour, start_pos=start,
                 random_control=False, progress=False)
    rows.append(part.assign(start_pos=start))
by_start = pd.concat(rows).pivot_table(index="coef", columns="start_pos", values="behaviour")
by_start.round(3)
"""),
    md("""
## CAA, PCA and ActAdd

The three ways to build the vector from the same pairs (ActAdd from the first pair only).
"""),
    code("""
vectors = {"caa": vec, "pca": SteeringVector.from_pairs(model, pairs, layer=0, method="pca"),
           "actadd": SteeringVector.from_pairs(model, pairs.positive[:1], pairs.negative[:1], layer=0,
                                               method="actadd")}
compare = sweep(model, vectors, None, [0.5, 0.6, 0.75, 1], eval_tokens, behaviour, random_control=False, progress=False)
compare.pivot_table(index="layer", columns="coef", values="behaviour").round(3).rename_axis("method")
"""),
]


RECALL = [
    md("""
# Associative recall: patching and a circuit

`recall-2l` reads `BOS k1 v1 k2 v2 k3 v3 k4 v4 q` and answers the value bound to the
query key `q`.  This notebook finds the heads that retrieve the value (Wu et al. 2024
retrieval score, ablation), then asks causally how the answer is computed: activation
patching of the residual stream and of each head, its attribution-patching estimate, and an
edge-level circuit (EAP-IG) with its faithfulness.  Two corruptions ask two questions:
swapping the query for another key (which path reads *which key is asked*?) and replacing
the bound value in the context (which path carries *the value*?).
"""),
    code("""
import tempfile
from pathlib import Path

import pandas as pd
import torch

import interp
from circuits import corrupt as C
from circuits import metrics as M
from circuits.attribution import attribute, edge_attribution
from circuits.graph import Circuit, faithfulness_curve
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
"""),
    md("""
## Retrieval heads

A head's retrieval score is the fraction of answer tokens it copies from the context while
attending to them (> 0.1: a retrieval head).  Ablating the retrieval heads should break
recall, ablating as many other heads much less.
"""),
    code("""
scores = retrieval_scores(model, task, progress=False)
retrieval = [(int(r.layer), int(r["head"])) for _, r in scores[scores.retrieval].iterrows()]
print("retrieval heads:", retrieval)
head_heatmap(scores, title="retrieval score (Wu et al. 2024)")
"""),
    code("""
effect = ablation_effect(model, task, retrieval, metric="accuracy", n_random=3)
ablation_bar(effect, title="recall accuracy with heads zero-ablated")
"""),
    md("""
## Two corruptions

Prompts where the query asks for the third pair (so that positions line up across the
batch).  *Query swap*: the query becomes another key of the context, whose value is the
corrupt answer.  *Value swap*: the value bound to the queried key is replaced in the
context by another value token, which becomes the corrupt answer.  The metric is the logit
difference between the clean and the corrupt answer at the last position.
"""),
    code("""
slot = 2                                                     # the third pair: key at 5, value at 6
rows = task.info["value_pos"][:, -1] == 1 + 2 * slot + 1
clean = task.tokens[rows][:32]
n = len(clean)
answer = clean[:, 2 * slot + 2]
other_key, other_value = clean[:, 2 * ((slot + 1) % N_PAIRS) + 1], clean[:, 2 * ((slot + 1) % N_PAIRS) + 2]
query_swap = C.replace_tokens(clean, [-1], d_vocab=D_VOCAB, replacement=other_key[:, None])
new_value = D_VOCAB // 2 + (answer - D_VOCAB // 2 + 17) % (D_VOCAB // 2)   # another value token
value_swap = C.replace_tokens(clean, [2 * slot + 2], d_vocab=D_VOCAB, replacement=new_value[:, None])
corruptions = {
    "query swap": (query_swap, M.logit_diff(answer[:, None], other_value[:, None])),
    "value swap": (value_swap, M.logit_diff(answer[:, None], new_value[:, None])),
}
str_tokens = model.to_str_tokens(clean[0])
for name, (corrupt, _) in corruptions.items():
    print(f"{name:>10}:", " ".join(model.to_str_tokens(corrupt[0])))
"""),
    md("""
## Activation patching of the residual stream

Denoising: the clean residual stream at one (layer, position) patched into the corrupt run.
1 = the clean answer restored.
"""),
    code("""
resid = {name: patch(model, clean, corrupt, site="resid_pre", by="pos", metric=metric, progress=False)
         for name, (corrupt, metric) in corruptions.items()}
patching_heatmap(resid["query swap"], tokens=str_tokens, title="query swap: resid_pre, denoising")
"""),
    code("""
patching_heatmap(resid["value swap"], tokens=str_tokens, title="value swap: resid_pre, denoising")
"""),
    md("""
## Per head: exact patching and its attribution estimate

Each head's output (`z`, all positions) patched alone, exactly (one run per head) and by
attribution patching (two forwards and one backward for all heads at once).
"""),
    code("""
heads_exact, heads_attr = {}, {}
for name, (corrupt, metric) in corruptions.items():
    heads_exact[name] = patch(model, clean, corrupt, site="z", by="head", metric=metric, progress=False)
    heads_attr[name] = attribute(model, clean, corrupt, site="z", by="head", metric=metric)
pd.concat({name: f.pivot(index="layer", columns="head", values="normalised")
           for name, f in heads_exact.items()}).round(3)
"""),
    code("""
agreement_scatter(heads_exact["value swap"], heads_attr["value swap"], value="effect",
                  title="value swap: attribution estimate vs exact effect, one point per head")
"""),
    md("""
## Circuits (EAP-IG)

Every edge of the graph (input, heads through their q / k / v inputs, MLPs, logits) is scored
by EAP-IG; the circuit keeps the edges of largest |score|.  Faithfulness runs the model with
every other edge patched to the corrupt run.
"""),
    code("""
circuits = {name: edge_attribution(model, clean, corrupt, metric=metric, method="eap-ig", progress=False)
            for name, (corrupt, metric) in corruptions.items()}
curves = pd.concat([faithfulness_curve(c, model, clean, corruptions[name][0], corruptions[name][1],
                                       sizes=[5, 10, 20, 50, 100]).assign(corruption=name)
                    for name, c in circuits.items()])
curves
"""),
    code("""
faithfulness_plot(curves[curves.corruption == "value swap"], title="value swap: faithfulness of top-k circuits")
"""),
    code("""
small = {name: c.prune(top_k=12) for name, c in circuits.items()}
circuit_graph(small["query swap"], title="query swap: the 12 strongest edges")
"""),
    code("""
circuit_graph(small["value swap"], title="value swap: the 12 strongest edges")
"""),
    code("""
for name, c in small.items():
    kept = c.edges_frame().query("kept").sort_values("abs_score", ascending=False)
    print(f"{name}: faithfulness {c.faithfulness(model, clean, *corruptions[name]):.3f}")
    print(kept[["src", "dst", "component", "score"]].head(6).to_string(index=False), "\\n")
"""),
    md("""
The circuit is saved as JSON (format `interp.circuit`) and read back unchanged:
"""),
    code("""
path = Path(tempfile.mkdtemp()) / "recall-value-swap.json"
small["value swap"].to_json(path)
again = Circuit.from_json(path)
assert [(e.key, e.kept) for e in again.edges] == [(e.key, e.kept) for e in small["value swap"].edges]
print(path.read_text()[:400])
"""),
]


NOTEBOOKS = {
    "01_induction_heads.ipynb": INDUCTION,
    "02_recall_patching_circuit.ipynb": RECALL,
    "03_steering.ipynb": STEERING,
    "04_rnn_flipflop.ipynb": RNN_FLIPFLOP,
}


def build(name: str) -> nbformat.NotebookNode:
    nb = new_notebook(cells=NOTEBOOKS[name])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    for i, cell in enumerate(nb.cells):  # stable ids, so rebuilding gives identical files
        cell["id"] = f"{Path(name).stem}-{i:02d}"
    return nb


def write_all(folder: Path = HERE) -> list[Path]:
    paths = []
    for name in NOTEBOOKS:
        path = folder / name
        nbformat.write(build(name), path)
        paths.append(path)
    return paths


if __name__ == "__main__":
    for p in write_all(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE):
        print("wrote", p)
