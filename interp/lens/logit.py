"""The logit lens: each layer's residual stream read through the final norm and the unembedding
(see :mod:`interp.lens`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import pandas as pd
import torch

from interp.errors import InputError
from interp.memory import rows_per_chunk
from interp.model import Model, Tokens
from interp.runs import analysis, record
from interp.weights import Readout, readout

if TYPE_CHECKING:
    from interp.lens.tuned import TunedLens

STAGES = ("pre", "mid", "post")
NORMS = ("recomputed", "frozen")


def residual_sites(model: Model, stage: str = "post") -> list[str]:
    """The hook sites a lens reads, the final residual last: ``resid_pre`` / ``resid_mid`` of
    each block then the last ``resid_post``, or every ``resid_post``.  Recurrent and
    state-space models: each layer's output (``post``), with the embedding first (``pre``:
    each layer's input); they have no ``mid``."""
    if stage not in STAGES:
        raise InputError(f"stage must be one of {STAGES}, got {stage!r}")
    if stage == "post":
        return model.sites("resid_post")
    if model.cfg.family in ("rnn", "ssm"):
        if stage == "mid":
            raise InputError(
                f"{model.cfg.name or 'this model'} is recurrent: its layers have no middle; use stage 'pre' or 'post'"
            )
        return [model.site("embed")] + model.sites("resid_post")
    kind = {"pre": "resid_pre", "mid": "resid_mid"}[stage]
    if kind not in model.site_kinds():
        raise InputError(f"{model.cfg.name or 'this model'} has no {kind} site (attention-only models have no mid)")
    return model.sites(kind) + model.sites("resid_post")[-1:]


def _target(model: Model, target) -> int | None:
    return None if target is None else model.token_id(target)


@torch.no_grad()
def residuals(model: Model, tokens: Tokens, stage: str = "post") -> tuple[torch.Tensor, torch.Tensor]:
    """``(stack [readings, batch, pos, d_model], logits)``: the residual read at each layer (the
    final residual last) and the model's logits (one forward)."""
    names = residual_sites(model, stage)
    logits, cache = model.run_with_cache(tokens, names=names)
    assert logits is not None  # run_with_cache returns logits unless asked not to (logits=False)
    return torch.stack([cache[n].float() for n in names]), logits.float()


def _read(
    ro: Readout, x: torch.Tensor, layer: int | None, lens: TunedLens | None, frozen_scale: torch.Tensor | None
) -> torch.Tensor:
    """Logits ``[..., d_vocab]`` of residuals ``x`` of reading ``layer``: through the tuned
    lens's translator if any, then the final norm (recomputed, or at ``frozen_scale``)."""
    if lens is not None:
        assert layer is not None  # callers pass a tuned lens only with the layer it reads
        x = lens.translate(layer, x)
    return ro.logits(x) if frozen_scale is None else ro.logits_frozen(x, frozen_scale)


def _readings(layers, n: int, stage: str) -> list[int]:
    if layers is None:
        return list(range(n))
    out = []
    for layer in layers:
        if isinstance(layer, bool) or not isinstance(layer, int) or not -n <= layer < n:
            raise InputError(f"layer {layer!r} is out of range: the {stage} lens has readings 0..{n - 1} (or -{n}..-1)")
        out.append(layer % n)
    return out


def _one_prompt(model: Model, tokens: Tokens):
    batch = model.tokenize(tokens)
    if len(batch) != 1:
        raise InputError(f"the lens reads one prompt at a time, got {len(batch)}")
    return batch


@torch.no_grad()
@analysis("logit_lens", figure="interp.plots.lens.lens_grid")
def logit_lens(
    model: Model,
    tokens: Tokens,
    *,
    target=None,
    stage: str = "post",
    norm: str = "recomputed",
    k: int = 5,
    lens: TunedLens | None = None,
    layers: Sequence[int] | None = None,
) -> pd.DataFrame:
    """The lens of one prompt: ``DataFrame[layer, pos, input, rank_k, token, token_id, prob,
    logprob]`` with the ``k`` most probable tokens per (layer, pos) (``rank_k`` 1..k), and, with
    ``target`` (a token, as text or id), ``target_prob``, ``target_logprob`` and ``target_rank``
    (1 = the top token) on every row.  ``lens``: a :class:`TunedLens` whose translators are
    applied first (``stage`` is then the lens's own).  ``norm``: "recomputed" or "frozen"
    (see the module docstring).  ``layers``: the readings to keep (default all; negative
    indices count from the final residual)."""
    if norm not in NORMS:
        raise InputError(f"norm must be one of {NORMS}, got {norm!r}")
    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= model.cfg.d_vocab:
        raise InputError(f"k must be an int in [1, {model.cfg.d_vocab}], got {k!r}")
    batch = _one_prompt(model, tokens)
    t = _target(model, target)
    if lens is not None:
        lens.check(model)
        stage = lens.stage
    stack, logits = residuals(model, batch, stage)
    ro = readout(model)
    final_scale = ro.scale(stack[-1, 0]) if norm == "frozen" else None
    keep = _readings(layers, stack.shape[0], stage)
    # readings in chunks: a chunk's [readings x pos, vocab] log-probabilities (x3 for the
    # softmax and the rank comparison) stay in the memory budget; one matmul per chunk
    P = stack.shape[2]
    per = rows_per_chunk(3 * 4 * P * model.cfg.d_vocab, "the logit lens", device=model.device)
    values, indices, target_logp, target_rank = [], [], [], []
    for start in range(0, len(keep), per):
        chunk = keep[start : start + per]
        x = torch.stack(
            [stack[layer, 0] if lens is None else lens.translate(layer, stack[layer, 0]) for layer in chunk]
        )
        logp = _read(ro, x, None, None, final_scale).log_softmax(-1)  # [chunk, pos, vocab]
        top = logp.topk(k, dim=-1)
        values.append(top.values)
        indices.append(top.indices)
        if t is not None:
            target_logp.append(logp[..., t])
            target_rank.append((logp > logp[..., t : t + 1]).sum(-1) + 1)
        del logp
    top_values, top_ids = torch.cat(values), torch.cat(indices)  # [readings, pos, k]
    R, P = top_values.shape[:2]
    ids = top_ids.reshape(-1).cpu()
    vocab = dict(zip(ids.unique().tolist(), model.to_str_tokens(ids.unique())))
    grid = lambda a: a.reshape(R, P, 1).expand(R, P, k).reshape(-1).cpu().numpy()
    columns = {
        "layer": grid(torch.tensor(keep)[:, None].expand(R, P)),
        "pos": grid(torch.arange(P).expand(R, P)),
        "input": [s for s in model.to_str_tokens(batch.tokens[0]) for _ in range(k)] * R,
        "rank_k": torch.arange(1, k + 1).repeat(R * P).numpy(),
        "token": [vocab[i] for i in ids.tolist()],
        "token_id": ids.numpy(),
        "prob": top_values.exp().reshape(-1).cpu().numpy(),
        "logprob": top_values.reshape(-1).cpu().numpy(),
    }
    if t is not None:
        lt = torch.cat(target_logp)  # [readings, pos]
        columns.update(target_prob=grid(lt.exp()), target_logprob=grid(lt), target_rank=grid(torch.cat(target_rank)))
    df = pd.DataFrame(columns)
    record(
        stage=stage,
        norm=norm,
        target=None if t is None else model.to_str_tokens([t])[0],
        tuned=lens is not None,
        readings=int(stack.shape[0]),
    )
    return df


@torch.no_grad()
def lens_kl(
    model: Model, tokens: Tokens, *, stage: str = "post", lens: TunedLens | None = None, norm: str = "recomputed"
) -> pd.DataFrame:
    """Mean KL(final || lens) in nats per layer over every real position of ``tokens``:
    ``DataFrame[layer, kl]`` (how far each layer's reading is from the model's answer)."""
    batch = model.tokenize(tokens)
    if lens is not None:
        lens.check(model)
        stage = lens.stage
    stack, logits = residuals(model, batch, stage)
    ro = readout(model)
    real = batch.mask.to(logits.device)
    final = logits.log_softmax(-1)[real]  # [tokens, vocab]
    scale = ro.scale(stack[-1][real]) if norm == "frozen" else None
    rows = []
    for layer in range(stack.shape[0]):
        lg = _read(ro, stack[layer][real], layer, lens, scale)
        kl = (final.exp() * (final - lg.log_softmax(-1))).sum(-1).mean()
        rows.append({"layer": layer, "kl": float(kl)})
    return pd.DataFrame(rows)


@torch.no_grad()
def token_set_probs(
    model: Model, tokens: Tokens, sets: dict[str, Sequence[Sequence[int]]], *, stage: str = "post"
) -> pd.DataFrame:
    """The logit lens at each prompt's last token, summed over token sets: for every prompt
    ``i``, reading (layer) and named set, the probability the lens puts on the tokens
    ``sets[name][i]`` (e.g. every first token of the word in one language).

    tokens: prompts of any lengths (one forward).  Returns ``DataFrame[prompt, layer, set,
    prob]``; the last reading is the model's own distribution (see :func:`logit_lens` for the
    readings of each ``stage``; the final norm's statistics are recomputed at every layer)."""
    batch = model.tokenize(tokens)
    for name, per_prompt in sets.items():
        if len(per_prompt) != len(batch):
            raise InputError(f"token set {name!r} has {len(per_prompt)} entries for {len(batch)} prompts")
        for ids in per_prompt:
            if not len(ids) or any(not 0 <= int(t) < model.cfg.d_vocab for t in ids):
                raise InputError(f"token set {name!r} has an empty entry or ids outside the vocabulary")
    stack, _ = residuals(model, batch, stage)  # [readings, batch, pos, d]
    last = batch.last.to(stack.device)
    at = stack[:, torch.arange(len(batch), device=stack.device), last]  # [readings, batch, d]
    probs = readout(model).logits(at).softmax(-1)  # [readings, batch, vocab]
    rows = []
    for name, per_prompt in sets.items():
        for i, ids in enumerate(per_prompt):
            idx = torch.tensor(sorted({int(t) for t in ids}), device=probs.device)
            p = probs[:, i, idx].sum(-1).cpu()
            rows += [{"prompt": i, "layer": r, "set": name, "prob": float(p[r])} for r in range(len(p))]
    return pd.DataFrame(rows)
