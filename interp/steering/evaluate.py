"""Steering evaluated as the field does (AxBench, Wu et al. 2025): behaviour and damage
per layer x coefficient, against a random vector of equal norm and a prompting baseline.

:func:`sweep` returns one tidy frame.  Per row (``vector``: "steer", "random" = a Gaussian
vector of the same norm, "prompt" = no vector but the instruction prefixed to every prompt,
"none" = the unsteered model):

- ``behaviour``: a :class:`interp.metrics.Metric` on the eval prompts, read at each row's
  last token (e.g. :func:`interp.metrics.set_logodds` of a concept's words against their
  opposites; log-odds, not raw probability, since small models move the log-odds long
  before the probability);
- ``damage``: mean KL(unsteered || steered) in nats per position of neutral text (the eval
  prompts when none is given), over positions from ``start_pos`` on;
- ``neutral_loss``: the steered model's next-token loss on the neutral text (nats);
- with ``generate=n``: ``concept_share``, the share of greedy continuations (n tokens) that
  contain at least one concept token (``concept_tokens``, default the behaviour metric's
  targets), and ``continuation_loss``, the continuation's loss under the *unsteered* model
  (nats per token: how unnatural the steered text is).

The prompting baseline prefixes ``instruction`` at the token level (``[BOS] instruction
prompt``), so the prompt's own tokens keep their ids and the damage compares the same tokens.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd
import torch
from tqdm.auto import tqdm

from interp import metrics as M
from interp.decoding import greedy
from interp.errors import InputError
from interp.model import Model, Tokens
from interp.runs import analysis, record
from interp.steering.vector import SteeringVector, check_finite, positions
from interp.tasks import loss_by_position
from interp.tasks.contrast import AnswerPos, ContrastPairs
from interp.tokens import TokenBatch

VECTOR_KINDS = ("steer", "random", "prompt", "none")


def _vectors_by_layer(
    model: Model,
    vectors_or_pairs,
    layers: Sequence[int] | None,
    site: str | None,
    method: str,
    answer_pos: AnswerPos | None,
) -> dict:
    if isinstance(vectors_or_pairs, SteeringVector):
        vectors_or_pairs = [vectors_or_pairs]
    if isinstance(vectors_or_pairs, Mapping):
        vectors = dict(vectors_or_pairs)
    elif (
        isinstance(vectors_or_pairs, Sequence)
        and vectors_or_pairs
        and all(isinstance(v, SteeringVector) for v in vectors_or_pairs)
    ):
        vectors = {v.layer: v for v in vectors_or_pairs}
        if len(vectors) != len(vectors_or_pairs):
            raise InputError("several vectors share a layer: pass a dict {label: vector} instead")
    else:
        if isinstance(vectors_or_pairs, ContrastPairs):
            pairs = vectors_or_pairs
        elif isinstance(vectors_or_pairs, (tuple, list)) and len(vectors_or_pairs) == 2:
            pairs = ContrastPairs(*vectors_or_pairs)
        else:
            raise InputError(
                "vectors_or_pairs must be ContrastPairs, a (positive, negative) pair of prompt sets, "
                "a SteeringVector, a list of them or a dict {layer: vector}"
            )
        layers = list(range(model.cfg.n_layers)) if layers is None else [model.check_layer(l) for l in layers]
        return {
            l: SteeringVector.from_pairs(model, pairs, layer=l, site=site, method=method, answer_pos=answer_pos)
            for l in layers
        }
    if layers is not None:
        missing = [l for l in layers if l not in vectors]
        if missing:
            raise InputError(f"no vector for layers {missing}; the vectors given are for {sorted(vectors, key=str)}")
        vectors = {l: vectors[l] for l in layers}
    for v in vectors.values():
        v.check_model(model)
    return vectors


def prefixed(model: Model, batch: TokenBatch, instruction: str) -> TokenBatch:
    """``batch`` with ``instruction``'s tokens inserted after each row's BOS (or in front)."""
    ids = model.encode(instruction, prepend_bos=False)
    bos = getattr(model.tokenizer, "bos_token_id", None)
    rows = []
    for row in batch.rows():
        r = row.tolist()
        head = [r[0]] if bos is not None and r and r[0] == bos else []
        rows.append(head + ids + r[len(head) :])
    return model.tokenize(rows)


def _damage(model: Model, base_logits: torch.Tensor, neutral: TokenBatch, start_pos: int) -> tuple[float, float]:
    """(KL(unsteered || current run) per position from ``start_pos`` on, LM loss) on ``neutral``."""
    logits = model(neutral)
    ref = M.kl(base_logits, pos=None, lengths=neutral.lengths)
    assert ref.mask is not None  # kl(pos=None) with lengths masks each row's real positions
    mask = ref.mask & (torch.arange(neutral.tokens.shape[1])[None] >= start_pos)
    damage = float(M.Metric("kl", ref.pos, mask=mask, reference=ref.reference)(logits)) if mask.any() else 0.0
    return damage, _lm_loss(logits, neutral)


def _lm_loss(logits: torch.Tensor, batch: TokenBatch) -> float:
    """Mean next-token loss (nats) over each row's real positions."""
    per = loss_by_position(logits, batch.tokens)  # [b, pos-1]
    real = torch.arange(per.shape[1])[None] < (batch.lengths[:, None] - 1)
    return float(per[real.to(per.device)].mean())


def _continuations(model: Model, prompts: TokenBatch, n: int, concept: torch.Tensor | None) -> dict:
    """Greedy continuations under the active hooks: concept share and their loss under the
    unsteered model (the caller's hooks are lifted for that)."""
    new = greedy(model, prompts, n)  # [b, n]
    out = {}
    if concept is not None:
        out["concept_share"] = float(torch.isin(new, concept.cpu()).any(-1).float().mean())
    full = TokenBatch.from_rows(
        [torch.cat([r.cpu(), new[i]]) for i, r in enumerate(prompts.rows())], pad_id=prompts.pad_id
    )
    with model.without_hooks():  # the unsteered model judges the text
        logits = model(full)
    per = loss_by_position(logits, model.validate_tokens(full.tokens))  # [b, pos-1]
    idx = torch.arange(per.shape[1])[None]
    start = (prompts.lengths - 1)[:, None]
    cont = (idx >= start) & (idx < start + n)
    out["continuation_loss"] = float(per[cont.to(per.device)].mean())
    return out


@torch.no_grad()
@analysis("steering_sweep", figure="interp.plots.steering.sweep_curves")
def sweep(
    model: Model,
    vectors_or_pairs,
    layers: Sequence[int] | None,
    coefs: Sequence[float],
    eval_prompts: Tokens | Sequence[str],
    behaviour: M.Metric,
    *,
    site: str | None = None,
    method: str = "caa",
    answer_pos: AnswerPos | None = None,
    start_pos: int = 0,
    random_control: bool = True,
    seed: int = 0,
    neutral_prompts: Tokens | Sequence[str] | None = None,
    instruction: str | None = None,
    generate: int = 0,
    concept_tokens: Sequence[int] | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Steers ``model`` at each (layer, coef) and measures behaviour and damage (see the module
    docstring for the columns).

    vectors_or_pairs: contrast pairs (:class:`ContrastPairs` or ``(positive, negative)``; a
    vector is built per layer at ``site``, default the residual stream after the layer, with
    ``method`` and ``answer_pos``), or ready vectors (a list, one per layer, or ``{layer:
    vector}``).  coefs: finite multipliers.  eval_prompts: prompts (any lengths) the behaviour
    is measured on.  behaviour: a Metric; a negative ``pos`` (default -1) is each row's own
    last token.  instruction: the prompting baseline's prefix (e.g. "Talk about X.").

    Returns one row per (layer, coef, vector) plus one "none" and (with ``instruction``) one
    "prompt" row; columns ``layer, site, coef, vector, norm, behaviour, damage, neutral_loss``
    [, ``concept_share, continuation_loss``].  Meta: ``baseline_behaviour``,
    ``damage_on`` ("neutral" | "eval"), ``baseline_neutral_loss``.
    """
    if not isinstance(behaviour, M.Metric):
        raise InputError(
            "behaviour must be an interp.metrics.Metric (e.g. metrics.set_logodds(positive_ids, "
            "negative_ids) or metrics.from_labels(labels, 'prob'))"
        )
    coefs = [check_finite(c, "coef") for c in coefs]
    if not coefs:
        raise InputError("coefs is empty")
    positions(start_pos)
    if not isinstance(generate, int) or generate < 0:
        raise InputError(f"generate must be an int >= 0 (new tokens per prompt), got {generate!r}")
    evals = model.tokenize(eval_prompts)
    neutral = model.tokenize(neutral_prompts) if neutral_prompts is not None else evals
    metric = behaviour.check(len(evals), evals.tokens.shape[1], model.cfg.d_vocab).resolve(
        evals.tokens.shape[1], evals.lengths
    )
    concept = None
    if generate:
        ids = concept_tokens if concept_tokens is not None else metric.targets
        if ids is None:
            raise InputError("concept_share needs concept_tokens= (or a set metric whose targets are the concept)")
        concept = torch.as_tensor(list(ids) if not isinstance(ids, torch.Tensor) else ids).long()
    vectors = _vectors_by_layer(model, vectors_or_pairs, layers, site, method, answer_pos)
    base_neutral = model(neutral)
    base_eval = model(evals)

    def measure() -> dict:
        row = {"behaviour": float(metric(model(evals)))}
        row["damage"], row["neutral_loss"] = _damage(model, base_neutral, neutral, start_pos)
        if generate:
            row.update(_continuations(model, evals, generate, concept))
        return row

    rows = [{"layer": None, "site": None, "coef": 0.0, "vector": "none", "norm": 0.0, **measure()}]
    if instruction is not None:
        ask = prefixed(model, evals, instruction)
        shift = ask.lengths - evals.lengths
        asked = {"behaviour": float(behaviour.resolve(ask.tokens.shape[1], ask.lengths)(model(ask)))}
        ask_neutral = prefixed(model, neutral, instruction)
        logits = model(ask_neutral)
        k = int((ask_neutral.lengths - neutral.lengths)[0])
        kl = M.kl(base_neutral, pos=None, lengths=neutral.lengths)
        assert kl.mask is not None  # kl(pos=None) with lengths masks each row's real positions
        asked["damage"] = float(
            M.Metric("kl", kl.pos, mask=kl.mask & (kl.pos >= start_pos), reference=kl.reference)(
                logits[:, k : k + neutral.tokens.shape[1]]
            )
        )
        asked["neutral_loss"] = _lm_loss(logits[:, k:], neutral)
        if generate:
            asked.update(_continuations(model, ask, generate, concept))
        rows.append(
            {
                "layer": None,
                "site": None,
                "coef": None,
                "vector": "prompt",
                "norm": 0.0,
                **asked,
                "instruction": instruction,
                "prefix_tokens": int(shift[0]),
            }
        )
    kinds = {"steer": None, "random": seed} if random_control else {"steer": None}
    bar = tqdm(
        total=len(vectors) * len(coefs) * len(kinds), desc="steering sweep", disable=not progress, mininterval=1.0
    )
    for label, vec in vectors.items():
        for kind, kind_seed in kinds.items():
            v = vec if kind == "steer" else vec.random_like(kind_seed)
            for coef in coefs:
                with v.apply(model, coef=coef, start_pos=start_pos):
                    rows.append(
                        {"layer": label, "site": vec.site, "coef": coef, "vector": kind, "norm": vec.norm, **measure()}
                    )
                bar.update()
    bar.close()
    df = pd.DataFrame(rows)
    record(
        **{
            "baseline_behaviour": float(metric(base_eval)),
            "damage_on": "eval" if neutral_prompts is None else "neutral",
            "baseline_neutral_loss": _lm_loss(base_neutral, neutral),
            "metric": behaviour.label,
        }
    )
    return df


@torch.no_grad()
@analysis("generations")
def compare_generations(
    model: Model,
    vec: SteeringVector,
    prompts: Tokens | Sequence[str] | str,
    coef: float,
    *,
    start_pos: int = 0,
    max_new_tokens: int = 8,
) -> pd.DataFrame:
    """Greedy continuations of ``prompts`` (any lengths) without and with ``coef * vec``.

    Returns one row per prompt: ``prompt``, ``unsteered``, ``steered`` (the new tokens as
    text) and ``kl_next`` (KL(unsteered || steered) of the next-token distribution at the
    prompt's last token, nats).
    """
    coef = check_finite(coef, "coef")
    batch = model.tokenize(prompts)
    shortest = int(batch.lengths.min())
    if start_pos >= shortest:
        raise InputError(
            f"start_pos {start_pos} is at or past the end of a prompt of {shortest} tokens: the vector "
            "would not touch that prompt (use a start_pos inside every prompt, or -1 for the last token)"
        )
    room = model.cfg.n_ctx - int(batch.lengths.max())
    if room < 1:
        raise InputError(
            f"prompts of {int(batch.lengths.max())} tokens leave no room to generate (n_ctx={model.cfg.n_ctx})"
        )
    n_new = min(int(max_new_tokens), room)
    if n_new < 1:
        raise InputError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    last = M.kl(model(batch), pos=-1, lengths=batch.lengths)
    base_out = greedy(model, batch, n_new)
    with vec.apply(model, coef=coef, start_pos=start_pos):
        kl_rows = last.values(model(batch))
        out = greedy(model, batch, n_new)
    return pd.DataFrame(
        [
            {
                "prompt": model.decode(r),
                "unsteered": model.decode(base_out[i]),
                "steered": model.decode(out[i]),
                "kl_next": float(kl_rows[i]),
            }
            for i, r in enumerate(batch.rows())
        ]
    )
