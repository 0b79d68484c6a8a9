"""Function vectors (Todd et al. 2023, "Function Vectors in Large Language Models").

Recipe, as in the paper:

1. Mean head outputs: run clean few-shot prompts (demonstrations ``x_i y_i`` of one
   function, then a query ``x_q``) and average each attention head's output at the last
   position.  A head's output is its contribution to the residual stream,
   ``z[pos, head] @ W_O[layer, head]`` (``[d_model]``): native TransformerLens bridges have
   no ``hook_result``, so it is computed from ``attn.hook_z`` and ``W_O`` (the shared bias
   ``b_O`` belongs to no head and is left out).
2. Causal indirect effect (CIE) per head: on corrupted prompts whose demonstration labels
   are shuffled (the x -> y mapping is broken, the format kept), replace the head's output
   at the last position by its clean mean and measure the rise in the probability of the
   correct answer ``f(x_q)``.  Patching ``z`` with the mean clean ``z`` is exactly patching
   the output with the mean output, because the output is linear in ``z``.
3. The function vector is the sum of the mean outputs of the ``top_k`` heads by CIE, a
   :class:`interp.steering.SteeringVector` (method "function_vector") on the residual
   stream; applied at the last position of zero-shot prompts (``start_pos=-1``) with
   :func:`interp.steering.sweep` or ``fv.apply``.

Zoo demonstrations (:mod:`interp.tasks.functions`).  :func:`~interp.tasks.functions.mode_task_prompts`
(``steer-2l``): the task is "continue from the
vocabulary half the context demonstrates" (the model reads the half from the mode token and
from the tokens seen so far); corrupt prompts scramble the demonstrations.  The top-CIE head
is the head that reads the mode token (highest attention from the last position to
position 0), and the FV of the top heads moves scrambled prompts towards the task at the
last position where a random vector of equal norm does not.
:func:`~interp.tasks.functions.fixed_mapping_prompts`
(``recall-2l`` / ``induction-2l``): one fixed key -> value mapping ``f`` as the function,
Todd's shuffled labels as the corruption.  These models answer by retrieving the value
bound to the query in the context; their weights store no ``f``, so a vector averaged over
prompts can carry at most ``f``'s output space, never which value belongs to which key: the
layer-1 (induction / retrieval) heads have the largest CIE, but the FV does not raise
``P(f(x_q))`` on ``[BOS, x_q]``.
"""

from __future__ import annotations

import dataclasses

import pandas as pd
import torch
from tqdm.auto import tqdm

from interp import interventions as I
from interp import metrics as M
from interp.errors import InputError
from interp.metrics import Metric
from interp.model import Model, Tokens
from interp.runs import analysis, record
from interp.steering import SteeringVector, site_for
from interp.steering.pairs import site_activations
from interp.tasks.functions import FunctionPrompts
from interp.tokens import TokenBatch


def head_output_weights(model: Model) -> torch.Tensor:
    """``W_O`` as ``[n_layers, n_heads, d_head, d_model]`` (float32, detached)."""
    model.require_attention("function vectors")
    return model.weights().W_O


@torch.no_grad()
def mean_head_z(model: Model, tokens: Tokens, pos: int = -1) -> torch.Tensor:
    """Mean over prompts of every head's ``z`` at position ``pos`` (negative: from each
    prompt's end, so -1 is each prompt's last token): ``[n_layers, n_heads, d_head]``."""
    model.require_attention("function vectors")
    names = model.attn_sites("z")
    acts = site_activations(model, tokens, names, pos)  # one forward, every attention layer
    first = acts[names[0]].mean(0)
    out = first.new_zeros((model.cfg.n_layers, *first.shape))  # zeros in layers without attention (hybrids)
    for layer, name in zip(model.cfg.attn_layers or (), names):
        out[layer] = acts[name].mean(0)
    return out


def head_outputs(z: torch.Tensor, W_O: torch.Tensor) -> torch.Tensor:
    """Per-head residual-stream contributions ``z @ W_O``: z ``[..., n_layers, n_heads, d_head]``
    -> ``[..., n_layers, n_heads, d_model]``."""
    return torch.einsum("...lhd,lhdm->...lhm", z, W_O)


def mean_head_outputs(model: Model, tokens: Tokens, pos: int = -1) -> torch.Tensor:
    """Mean over prompts of each head's output at ``pos``: ``[n_layers, n_heads, d_model]``
    (units of the residual stream)."""
    return head_outputs(mean_head_z(model, tokens, pos), head_output_weights(model))


def _prompt_metric(answers, metric: Metric | None, n: int, pos: int) -> Metric:
    if (answers is None) == (metric is None):
        raise InputError("pass exactly one of answers (one token per corrupt prompt) or metric (a metrics.Metric)")
    if metric is not None:
        if not isinstance(metric, Metric):
            raise InputError("metric must be an interp.metrics.Metric (e.g. metrics.set_prob(targets))")
        return metric
    answers = torch.as_tensor(answers, dtype=torch.long)
    if answers.shape != (n,):
        raise InputError(f"answers must be [{n}] (one per corrupt prompt), got {tuple(answers.shape)}")
    return M.prob(answers, pos)


@torch.no_grad()
def head_indirect_effects(
    model: Model,
    clean: Tokens,
    corrupt: Tokens,
    answers: torch.Tensor | None = None,
    *,
    metric: Metric | None = None,
    pos: int = -1,
    batch_tokens: int = 16384,
    engine: str = "auto",
    progress: bool = True,
) -> pd.DataFrame:
    """Causal indirect effect of every head (Todd et al.), many heads per forward.

    clean: few-shot prompts (any lengths) whose mean head outputs (at each prompt's ``pos``)
    are patched in.  corrupt: prompts with shuffled demonstration labels (any lengths).  The
    effect is the rise of ``metric`` (a :class:`~interp.metrics.Metric`, e.g. the probability
    of a token set) or of the probability of ``answers`` (``[m]``, the correct token of each
    corrupt prompt) at ``pos``, when the head's output at each corrupt prompt's ``pos`` is
    replaced by its clean mean.  engine "auto": at the last token (``pos=-1``) on a model
    :mod:`interp.recompute` reproduces, only what lies downstream of each head is recomputed;
    otherwise ("hooks") heads are batched along the batch dimension
    (:func:`interp.interventions.run_batched`).  Both give the same numbers.

    Returns one row per head: ``layer, head, p_corrupt`` (metric without patching),
    ``p_patched`` and ``cie = p_patched - p_corrupt``, sorted by ``cie`` descending.
    """
    model.require_attention("head indirect effects")
    clean_b, corrupt_b = model.tokenize(clean), model.tokenize(corrupt)
    if pos >= 0 and (pos >= int(clean_b.lengths.min()) or pos >= int(corrupt_b.lengths.min())):
        raise InputError(f"position {pos} is outside the shortest prompt")
    if pos < 0 and (-pos > int(clean_b.lengths.min()) or -pos > int(corrupt_b.lengths.min())):
        raise InputError(f"position {pos} is outside the shortest prompt")
    score = _prompt_metric(answers, metric, len(corrupt_b), pos)
    z_mean = mean_head_z(model, clean_b, pos)  # [L, H, d_head]
    heads = model.heads()
    B, H = len(corrupt_b), model.cfg.n_heads

    def edits(cells):
        out = []
        for layer in sorted({heads[c][0] for c in cells}):
            mask = torch.zeros(len(cells) * B, H, dtype=torch.bool)
            for i, c in enumerate(cells):
                if heads[c][0] == layer:
                    mask[i * B : (i + 1) * B, heads[c][1]] = True
            # each corrupt prompt's own position (rows are cell-major: the prompts repeat per cell)
            at = (corrupt_b.lengths + pos).repeat(len(cells)) if pos < 0 else torch.full((len(cells) * B,), pos)
            out.append(I.set_to(model.site("z", layer), z_mean[layer], positions=at, heads=mask))
        return out

    from interp import recompute

    if engine not in ("auto", "hooks"):
        raise InputError(f"engine must be 'auto' or 'hooks', got {engine!r}")
    if engine == "auto" and pos == -1 and recompute.engine_for(model, "z") is not None:  # downstream of each head
        values, base = _effects_downstream(model, corrupt_b, z_mean, score, heads, batch_tokens)
    else:
        base = float(
            score.check(len(corrupt_b), corrupt_b.tokens.shape[1], model.cfg.d_vocab).resolve(
                corrupt_b.tokens.shape[1], corrupt_b.lengths
            )(model(corrupt_b))
        )
        values = I.run_batched(
            model,
            corrupt_b,
            len(heads),
            edits,
            score,
            batch_tokens=batch_tokens,
            progress=progress,
            desc="head indirect effects",
            last_token_only=pos == -1,
        )
    frame = pd.DataFrame(
        {
            "layer": [l for l, _ in heads],
            "head": [h for _, h in heads],
            "p_corrupt": base,
            "p_patched": values.double().numpy(),
        }
    )
    frame["cie"] = frame["p_patched"] - base
    return frame.sort_values("cie", ascending=False, ignore_index=True)


def _effects_downstream(
    model: Model,
    corrupt: TokenBatch,
    z_mean: torch.Tensor,
    score: Metric,
    heads: list[tuple[int, int]],
    batch_tokens: int,
) -> tuple[torch.Tensor, float]:
    """The metric with each head's output at each prompt's last token set to its clean mean,
    through the downstream-only engine (:func:`interp.recompute.engine_for`; per length group; batch means
    combined),
    and the metric of the unpatched corrupt run."""
    from interp import recompute
    from interp import sites as S
    from interp.cells import Cell, Site

    engine = recompute.engine_for(model, "z")
    assert engine is not None  # head_indirect_effects chose this path because one applies
    site = Site("z", S.kind("z").template, "head")
    out = torch.zeros(len(heads), dtype=torch.float64)
    base_value = 0.0
    for group in corrupt.by_length():
        rows = corrupt.select(group)
        n = rows.tokens.shape[1]
        with torch.no_grad():
            base_logits, base = model.run_with_cache(rows.tokens, names=engine.base_names() + model.attn_sites("z"))
        assert base_logits is not None  # run_with_cache returns logits unless asked not to (logits=False)
        source = {}
        for layer in sorted({l for l, _ in heads}):
            z = base[model.site("z", layer)].clone()
            z[:, n - 1] = z_mean[layer].to(z.dtype)
            source[model.site("z", layer)] = z
        cells = [Cell((l,), pos=n - 1, head=h) for l, h in heads]
        metric = score.rows(group).resolve(n)
        base_value += float(metric.values(base_logits).double().sum())
        vals = engine.run(
            site,
            cells,
            base_tokens=rows.tokens,
            base_hooks=[],
            base=base,
            base_logits=base_logits,
            source=source,
            metric=metric,
            batch_tokens=batch_tokens,
            progress=False,
        )
        out += vals.double() * len(group)
    return (out / len(corrupt)).float(), base_value / len(corrupt)


def function_vector(
    model: Model,
    clean: Tokens,
    corrupt: Tokens | None = None,
    answers: torch.Tensor | None = None,
    *,
    metric: Metric | None = None,
    top_k: int = 1,
    layer: int | None = None,
    site: str | None = None,
    pos: int = -1,
    effects: pd.DataFrame | None = None,
    progress: bool = True,
) -> SteeringVector:
    """The function vector: sum of the mean clean outputs (at ``pos``) of the ``top_k`` heads
    by causal indirect effect (see :func:`head_indirect_effects`, which it runs on
    ``corrupt`` with ``answers`` / ``metric``; or pass its result as ``effects``).

    It lives at ``site`` or the residual stream after ``layer``; by default after the
    latest layer among the chosen heads, where their outputs enter the stream.  ``meta``
    records the heads (``[[layer, head], ...]``), their CIE and the whole effects table.
    Apply it at the last token of zero-shot prompts: ``fv.apply(model, coef, start_pos=-1)``.
    """
    model.require_attention("function vectors")
    n_heads = model.cfg.n_layers * model.cfg.n_heads
    if not isinstance(top_k, int) or isinstance(top_k, bool) or not 1 <= top_k <= n_heads:
        raise InputError(f"top_k must be an int in [1, {n_heads}], got {top_k!r}")
    if effects is None:
        if corrupt is None:
            raise InputError("pass corrupt prompts (with answers or metric) or precomputed effects")
        effects = head_indirect_effects(model, clean, corrupt, answers, metric=metric, pos=pos, progress=progress)
    missing = {"layer", "head", "cie"} - set(effects.columns)
    if missing:
        raise InputError(f"effects must be a head_indirect_effects frame; missing columns {sorted(missing)}")
    top = effects.nlargest(top_k, "cie")
    heads = [[int(r.layer), int(r.head)] for r in top.itertuples()]
    outputs = mean_head_outputs(model, clean, pos)
    vec = torch.stack([outputs[l, h] for l, h in heads]).sum(0)
    if layer is None and site is None:
        layer = max(l for l, _ in heads)
    name = site_for(model, layer, site)
    clean_b = model.tokenize(clean)
    return SteeringVector(
        vec,
        name,
        model.cfg.name,
        model.cfg.d_model,
        "function_vector",
        pos,
        {"positive": [r.tolist() for r in clean_b.rows()], "negative": None},
        {
            "heads": heads,
            "cie": [float(c) for c in top["cie"]],
            "top_k": top_k,
            "effects": effects.to_dict(orient="list"),
        },
    )


# --- evaluation on held-out queries ------------------------------------------------------------


def _accuracy(model: Model, prompts: Tokens, answers: torch.Tensor) -> float:
    """Share of prompts whose arg-max next token (at each prompt's last token) is the answer."""
    batch = model.tokenize(prompts)
    with torch.no_grad():
        logits = model(batch)
    top = logits[torch.arange(len(batch)), batch.last.to(logits.device)].argmax(-1).cpu()
    return float((top == torch.as_tensor(answers).cpu()).float().mean())


@analysis("function_vectors", figure="interp.plots.steering.function_vector_curve")
def layer_sweep(
    model: Model,
    train: FunctionPrompts,
    test: FunctionPrompts,
    *,
    effects: pd.DataFrame | None = None,
    layers=None,
    top_k: int = 10,
    coefs=(1.0, 2.0),
    seed: int = 0,
    progress: bool = True,
) -> pd.DataFrame:
    """Function vectors evaluated as Todd et al. do: built from ``train`` (the causal indirect
    effects on its corrupt prompts, or ``effects``; the mean head outputs of its clean prompts)
    and added at the last token of ``test``'s held-out zero-shot prompts, at each layer in
    ``layers`` and coefficient in ``coefs``, against a random vector of equal norm; beside them
    the zero-shot and few-shot accuracies of the same held-out queries.

    Returns ``DataFrame[condition ("zero_shot" | "few_shot" | "fv" | "random"), layer, coef,
    accuracy, n]``.  Meta: ``heads`` (the top-k by CIE), ``best`` (the fv row of highest
    accuracy, as a dict) and ``effects``.
    """
    if test.answers is None or train.answers is None and effects is None:
        raise InputError("layer_sweep needs prompts with one answer token each (function_prompts)")
    if effects is None:
        effects = head_indirect_effects(model, train.clean, train.corrupt, train.answers, progress=progress)
    layers = list(range(model.cfg.n_layers)) if layers is None else [model.check_layer(l) for l in layers]
    n = len(model.tokenize(test.zero_shot))
    rows = [
        {
            "condition": "zero_shot",
            "layer": None,
            "coef": 0.0,
            "accuracy": _accuracy(model, test.zero_shot, test.answers),
            "n": n,
        },
        {
            "condition": "few_shot",
            "layer": None,
            "coef": 0.0,
            "accuracy": _accuracy(model, test.clean, test.answers),
            "n": n,
        },
    ]
    built = function_vector(model, train.clean, effects=effects, top_k=top_k, layer=layers[0])
    heads = built.meta["heads"]
    for layer in tqdm(layers, desc="function vector layers", disable=not progress, leave=False):
        fv = dataclasses.replace(built, site=site_for(model, layer))  # the same vector, added after `layer`
        for kind, vec in (("fv", fv), ("random", fv.random_like(seed))):
            for coef in coefs:
                with vec.apply(model, coef=coef, start_pos=-1):
                    rows.append(
                        {
                            "condition": kind,
                            "layer": layer,
                            "coef": float(coef),
                            "accuracy": _accuracy(model, test.zero_shot, test.answers),
                            "n": n,
                        }
                    )
    df = pd.DataFrame(rows)
    fv_rows = df[df.condition == "fv"]
    record(
        heads=heads, effects=effects, best=fv_rows.loc[fv_rows["accuracy"].idxmax()].to_dict() if len(fv_rows) else None
    )
    return df
