"""Causal tracing (Meng et al. 2022, "Locating and Editing Factual Associations in GPT"; for
state-space models Sharma et al. 2024, "Locating and Editing Factual Associations in Mamba").

For each fact (a prompt whose last token is answered by the object): corrupt the subject's token
embeddings with Gaussian noise of ``noise`` x the embedding std (:func:`circuits.corrupt.gaussian_noise`),
then restore one clean state at a time, per (layer, position), and measure the object's probability.
The **indirect effect** of a state is the restored probability minus the corrupted one, averaged
over ``samples`` noise draws.  Components (restored with :func:`circuits.patch`; a window restores
that many consecutive layers at once, single layers are always shown beside it):

- transformers: ``resid`` (the residual stream leaving layer l: ROME's hidden state, single
  layers), ``mlp`` (the MLP output) and ``attn`` (the attention output);
- state-space models (Mamba and the other recurrent families of ``transformers``): ``resid``,
  ``mixer`` (the mixer's output), ``state`` (the recurrent state after token t, which only later
  positions read: :data:`interp.sites.STATE_KINDS`), ``gates`` (the output gate before its
  activation, Mamba's z branch);
- the zoo's own recurrent cells (:mod:`interp.recurrent`): ``resid``, ``mixer`` (the selective
  SSM's output), ``state`` (the LSTM's cell c_t, the GRU's h_t, the SSM's h_t), ``gates`` (the
  LSTM's output gate o_t, the GRU's update gate z_t, the SSM's output gate silu(z)) and, for the
  LSTM, ``hidden`` (its h_t = o_t tanh(c_t), the other half of its state), each per step, so a
  restored state is what later steps read.

``causal_tracing(model, facts)`` returns one tidy frame over facts, components, windows, layers
and positions; :func:`summary` averages it over facts by the position's role (first / middle /
last subject token, first subsequent token, further tokens, last token), as Meng et al.'s
Figure 2 does; :func:`restore` restores a whole set of states at once (the oracle: every state
recovers the clean probability, none gives the corrupted one).  Plots:
:mod:`circuits.plots_tracing`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from circuits import corrupt as C
from circuits import metrics as M
from circuits import sites as CS
from circuits.patching import frame as patch_frame
from circuits.patching import run_cells
from circuits.runs import finish
from interp import interventions as I
from interp import sites as S
from interp.errors import InputError, Unsupported
from interp.recurrent.model import HookedRecurrent
from interp.runs import analysis, record
from interp.tasks.text.facts import FactSet

#: component -> the site kind it restores, per model kind
TRANSFORMER_COMPONENTS = {"resid": "resid_post", "mlp": "mlp_out", "attn": "attn_out"}
RECURRENT_COMPONENTS = {"resid": "resid_post", "mixer": "mixer_out", "state": "ssm_state", "gates": "gate_pre"}
#: the zoo's recurrent cells (interp.recurrent): their state and gate site kinds, the first one a model has
TOY_STATES = ("cell", "state", "hidden")  # LSTM c_t, SSM h_t, GRU h_t
TOY_GATES = ("output_gate", "update_gate", "gate")  # LSTM o_t, GRU z_t, SSM silu(z)
#: components restored in single layers only (a residual state already carries every earlier layer)
SINGLE = ("resid",)
ROLES = (
    "before subject",
    "first subject token",
    "middle subject tokens",
    "last subject token",
    "first subsequent token",
    "further tokens",
    "last token",
)


def components(model) -> dict[str, str]:
    """The components causal tracing restores in ``model``: name -> site kind (the first state
    kind a recurrent family carries stands for ``state``; the zoo's cells: :data:`TOY_STATES`,
    :data:`TOY_GATES`)."""
    kinds = set(model.site_kinds())
    if model.has_attention and model.cfg.family == "transformer":
        table = dict(TRANSFORMER_COMPONENTS)
        if "mlp_out" not in kinds:
            table.pop("mlp")  # attention-only
        return table
    table = dict(RECURRENT_COMPONENTS)
    if isinstance(model.module, HookedRecurrent):  # the zoo's own cells
        patchable = set(CS.available(model))
        table["state"] = next((k for k in TOY_STATES if k in patchable), "")
        table["gates"] = next((k for k in TOY_GATES if k in patchable), "")
        if table["state"] == "cell":  # an LSTM: (h_t, c_t)
            table["hidden"] = "hidden"
    else:
        table["state"] = next((k for k in S.STATE_KINDS if k in kinds), "")
    return {c: k for c, k in table.items() if k in kinds}


def _check_components(model, asked: Sequence[str] | None) -> dict[str, str]:
    have = components(model)
    if asked is None:
        return have
    if isinstance(asked, str):
        asked = [asked]
    out = {}
    for c in asked:
        if c in have:
            out[c] = have[c]
        elif c in TRANSFORMER_COMPONENTS and not model.has_attention:
            raise Unsupported(
                f"component {c!r} needs attention layers, and {model.cfg.name or 'this model'} is a "
                f"{model.cfg.family} model without attention; its components are {sorted(have)}"
            )
        else:
            raise InputError(f"unknown component {c!r} for {model.cfg.name or 'this model'}; valid: {sorted(have)}")
    if not out:
        raise InputError("no component to trace")
    return out


def world_facts(model, n: int | None = None, *, world=None, seed: int = 0) -> FactSet:
    """The facts of a synthetic :class:`~interp.tasks.synthetic.FactWorld` (default: the zoo's,
    which ``facts-2l`` / ``facts-mamba`` store) that ``model`` answers correctly (its arg-max at
    the last position is the object): all of them, or ``n`` drawn with ``seed`` (fewer if it
    knows fewer).  ``counts``: facts offered and known."""
    from interp.tasks.synthetic import FactWorld, sro_facts

    world = world or FactWorld()
    if model.cfg.d_vocab < world.d_vocab:
        raise InputError(f"the fact world has {world.d_vocab} tokens; this model reads {model.cfg.d_vocab}")
    batch = sro_facts(None, world=world)
    with torch.no_grad():
        top = model(batch.tokens.to(model.device))[:, -1].argmax(-1).cpu()
    known = (top == batch.info["answer"]).nonzero().flatten().tolist()
    if not known:
        raise InputError(f"the model answers none of the {len(batch.tokens)} facts of the fact world correctly")
    total = len(known)
    if n is not None and n < len(known):
        if not isinstance(n, int) or n < 1:
            raise InputError(f"n must be a positive int, got {n!r}")
        known = sorted(np.random.default_rng(seed).choice(known, size=n, replace=False).tolist())
    facts = FactSet.from_task(batch, model).take(known)
    facts.counts.update(offered=len(batch.tokens), single_token_object=len(batch.tokens), known=total)
    return facts


def as_facts(model, facts) -> FactSet:
    """A :class:`~interp.tasks.text.FactSet` from what :func:`causal_tracing` accepts (default: the
    shipped text facts the model knows, or for a zoo model trained on the synthetic facts, those)."""
    from interp.tasks.text.facts import fact_set

    if isinstance(facts, FactSet):
        return facts
    if facts is None and model.card.get("task") == "sro_facts":
        return world_facts(model)
    if hasattr(facts, "info") and hasattr(facts, "tokens"):
        return FactSet.from_task(facts, model)
    if facts is None or isinstance(facts, (list, tuple)):
        return fact_set(model, facts)
    raise InputError(
        f"facts must be a FactSet (interp.tasks.text.fact_set), a task batch with subject spans, or a list of "
        f"(template, subject, object); got {type(facts).__name__}"
    )


def roles(n_tokens: int, subject: tuple[int, int]) -> list[str]:
    """The role of each position (Meng et al.'s categories; :data:`ROLES`)."""
    a, b = subject
    if not 0 <= a < b <= n_tokens:
        raise InputError(f"subject span {subject} is outside the {n_tokens} tokens")
    out = []
    for p in range(n_tokens):
        if p == n_tokens - 1:
            out.append("last token")
        elif p < a:
            out.append("before subject")
        elif p == b - 1:
            out.append("last subject token")
        elif p == a:
            out.append("first subject token")
        elif p < b:
            out.append("middle subject tokens")
        elif p == b:
            out.append("first subsequent token")
        else:
            out.append("further tokens")
    return out


def noise_corruption(model, tokens: torch.Tensor, subject: tuple[int, int], *, noise: float, samples: int, seed: int):
    """The corruption of one fact: Gaussian noise at the subject's token embeddings."""
    return C.gaussian_noise(
        model, tokens[None], list(range(subject[0], subject[1])), scale=noise, n_samples=samples, seed=seed
    )


@analysis("causal_tracing", figure="circuits.plots_tracing.tracing_heatmap")
def causal_tracing(
    model,
    facts=None,
    *,
    components: Sequence[str] | str | None = None,
    window: int = 10,
    noise: float = 3.0,
    samples: int = 10,
    seed: int = 0,
    singles: bool = True,
    only: Sequence[str] | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Causal tracing of ``facts`` in ``model``; one row per (fact, component, window, layer, position).

    facts: a :class:`~interp.tasks.text.FactSet` (:func:`interp.tasks.text.fact_set`: the shipped
    facts the model knows, or your own), a synthetic task batch with subject spans
    (:func:`interp.tasks.synthetic.sro_facts`), or a list of ``(template, subject, object)``.
    components: default every one the model has (:func:`components`).  window: layers restored
    together for every component but ``resid`` (clipped to the model's depth; single layers are
    included unless ``singles=False``, which halves the work).  noise: the noise std in units of
    the embedding std (ROME: 3).  samples: noise draws per fact (the effect is their mean).
    Positions before the subject are not traced (the noise does not reach them: their effect is 0);
    ``only`` restricts the trace to positions of these roles (e.g. ``("last subject token", "last
    token")``: Meng et al.'s two sites, a fraction of the work).

    Columns: ``fact``, ``component``, ``site`` (the site kind), ``window``, ``layer`` (first
    layer of the window), ``layers``, ``pos``, ``token``, ``role`` (:func:`roles`), ``prob`` (the
    object's probability with the state restored), ``effect`` (the indirect effect: ``prob``
    minus the corrupted probability), ``normalised`` (effect / (clean - corrupted)), ``clean``,
    ``corrupted`` and ``n`` (noise samples).
    """
    fs = as_facts(model, facts)
    table = _check_components(model, components)
    if not isinstance(samples, int) or samples < 1:
        raise InputError(f"samples must be a positive int, got {samples!r}")
    w = min(int(window), model.cfg.n_layers) if isinstance(window, int) and window >= 1 else None
    if w is None:
        raise InputError(f"window must be a positive int, got {window!r}")
    if only is not None:
        only = [only] if isinstance(only, str) else list(only)
        bad = [r for r in only if r not in ROLES]
        if bad:
            raise InputError(f"unknown roles {bad}; roles: {list(ROLES)}")
    frames = []
    bar = tqdm(total=len(fs) * len(table), desc="causal tracing", disable=not progress)
    for i in range(len(fs)):
        tokens = fs.tokens[i].to(model.device)
        subject = fs.subject[i]
        corruption = noise_corruption(model, tokens, subject, noise=noise, samples=samples, seed=seed + i)
        runs = _runs(model, corruption, fs.answer[i])
        names = model.to_str_tokens(tokens)
        role = roles(len(tokens), subject)
        for comp, kind in table.items():
            where = [p for p in range(subject[0], len(tokens)) if only is None or role[p] in only]
            if not where:
                raise InputError(f"fact {i} has no position of the roles {only}")
            df = _sweep(model, runs, kind, 1 if comp in SINGLE else w, where, singles)
            clean, corrupted = runs.clean_value, runs.corrupt_value
            frames.append(
                pd.DataFrame(
                    {
                        "fact": i,
                        "component": comp,
                        "site": kind,
                        "window": df["window"].to_numpy(),
                        "layer": df["layer"].to_numpy(),
                        "layers": df["layers"].to_numpy(),
                        "pos": df["pos"].to_numpy(),
                        "token": [names[p] for p in df["pos"]],
                        "role": [role[p] for p in df["pos"]],
                        "prob": df["value"].to_numpy(),
                        "effect": df["effect"].to_numpy(),
                        "normalised": df["normalised"].to_numpy(),
                        "clean": clean,
                        "corrupted": corrupted,
                        "n": samples,
                    }
                )
            )
            bar.update()
    bar.close()
    out = pd.concat(frames, ignore_index=True)
    record(  # the run's meta (interp.runs.run)
        facts=len(fs),
        prompts=list(fs.prompts),
        subjects=list(fs.subjects),
        objects=list(fs.objects),
        noise=noise,
        samples=samples,
        window=w,
        components=dict(table),
        counts=dict(fs.counts),
        model=model.cfg.name,
    )
    return out


def _runs(model, corruption, answer: int):
    """The clean and corrupted runs of one fact with the object's probability as the metric."""
    with torch.no_grad():
        clean_logits = model(corruption.clean)
        corrupt_logits = model.run_with_hooks(corruption.tokens, corruption.hooks)
    return finish(model, corruption, M.prob(answer), clean_logits, corrupt_logits)


def _sweep(model, runs, kind: str, window: int, positions, singles: bool) -> pd.DataFrame:
    """One component's restorations (:func:`circuits.patching.run_cells`, the patching engine),
    windows of ``window`` layers and, with ``singles``, single layers, at ``positions``."""
    site = CS.resolve(model, kind)
    cells = CS.cells(model, site, ("pos",), runs.clean.shape[1], window=window, positions=positions)
    if window > 1 and not singles:
        cells = [c for c in cells if len(c.layers) == window]
    values, _, _ = run_cells(model, runs, site, cells, progress=False)
    return patch_frame(cells, ("pos",), values, runs, "denoise", True)


def summary(frame: pd.DataFrame) -> pd.DataFrame:
    """The trace averaged over facts by position role: one row per (component, window, layer,
    role) with the mean indirect ``effect``, its standard error ``sem``, the mean ``prob`` and
    ``n`` (facts).  Positions before the subject are dropped (noise does not reach them)."""
    if frame.empty:
        raise InputError("an empty trace has nothing to summarise")
    per_fact = (
        frame[frame["role"] != "before subject"]
        .groupby(["component", "window", "layer", "layers", "role", "fact"], as_index=False)[["effect", "prob"]]
        .mean()  # several "further" / "middle" tokens of one fact count once
    )
    g = per_fact.groupby(["component", "window", "layer", "layers", "role"], as_index=False)
    out = g.agg(effect=("effect", "mean"), sd=("effect", "std"), prob=("prob", "mean"), n=("fact", "nunique"))
    out["sem"] = out["sd"].fillna(0.0) / np.sqrt(out["n"])
    out["role"] = pd.Categorical(out["role"], categories=[r for r in ROLES if r != "before subject"], ordered=True)
    return out.sort_values(["component", "window", "role", "layer"]).drop(columns="sd").reset_index(drop=True)


def restore(
    model,
    facts,
    component: str | Sequence[str],
    *,
    layers: Sequence[int] | None = None,
    positions: Sequence[int] | None = None,
    noise: float = 3.0,
    samples: int = 10,
    seed: int = 0,
) -> pd.DataFrame:
    """The object's probability with the clean ``component`` (one, or several at once) restored at
    every ``layers`` x ``positions`` at once (default: all of them), per fact: ``DataFrame[fact,
    clean, corrupted, restored]`` (means over the noise samples).  With every residual state
    restored (or, at the last position, every component writing to the residual: ``("mlp",
    "attn")``, ``"mixer"``) the run is the clean one again; with none it is the corrupted one:
    the oracle of :func:`causal_tracing`, run with plain hooks (:mod:`interp.interventions`)
    rather than the patching engine."""
    fs = as_facts(model, facts)
    kinds = list(_check_components(model, [component] if isinstance(component, str) else component).values())
    L = list(range(model.cfg.n_layers)) if layers is None else [model.check_layer(l) for l in layers]
    rows = []
    for i in range(len(fs)):
        tokens = fs.tokens[i].to(model.device)
        T = len(tokens)
        pos = list(range(T)) if positions is None else [p + T if p < 0 else p for p in positions]
        if any(not 0 <= p < T for p in pos):
            raise InputError(f"positions {positions} are outside fact {i}'s {T} tokens")
        c = noise_corruption(model, tokens, fs.subject[i], noise=noise, samples=samples, seed=seed + i)
        names = [model.site(kind, l) for kind in kinds for l in L]
        with torch.no_grad():
            clean_logits, cache = model.run_with_cache(tokens[None], names=names)
            corrupted = model.run_with_hooks(c.tokens, c.hooks)
            mask = torch.zeros(T, dtype=torch.bool)
            mask[pos] = True
            edits = [I.patch(n, cache[n], positions=mask) for n in names] if pos and L else []
            with I.apply(model, edits):
                restored = model.run_with_hooks(c.tokens, c.hooks)
        a = fs.answer[i]
        rows.append(
            {
                "fact": i,
                "clean": _prob(clean_logits, a),
                "corrupted": _prob(corrupted, a),
                "restored": _prob(restored, a),
            }
        )
    return pd.DataFrame(rows)


def _prob(logits: torch.Tensor, answer: int) -> float:
    """The mean probability of ``answer`` at the last position over the rows (noise samples)."""
    return float(logits[:, -1].float().softmax(-1)[:, answer].mean())
