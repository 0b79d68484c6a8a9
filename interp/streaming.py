"""Streaming attention with attention sinks (Xiao et al. 2023, StreamingLLM): the loss of a
model whose key-value cache keeps only the first ``sinks`` tokens and the ``window`` most
recent ones, with positions re-indexed inside the cache, against full attention.

The cache the paper evaluates (their ``StartRecentKVCache`` with ``enable_pos_shift``):
after each token is processed, the cache is cut to its first ``sinks`` entries and its last
``window`` entries; a new token's query sits at the cache's length (``min(t, sinks + window)``
for token ``t``) and each cached key at its index in the cache.  So token ``t`` attends to the
keys ``i < sinks`` and ``t - window <= j <= t`` (everything while ``t <= sinks + window``);
rotary embeddings depend only on the query-key distance, which is the true one, ``t - j``,
for the recent keys and ``min(t, sinks + window) - i`` for a sink.

Two exact ways to compute it (:func:`streaming_losses`), equal to float precision (tested):

- ``method="cache"``: the paper's loop, one token at a time through the model's key-value
  cache (a Hugging Face ``Cache``), evicting after each step and re-rotating the kept keys
  to their new index (rotary keys are stored rotated; moving one back by ``d`` positions is a
  rotation by ``-d``).  One forward per token: slow, the reference.
- ``method="mask"``: one forward over the whole text, with each layer's attention scores
  edited in a hook: keys outside the cache are masked, and a sink's score is recomputed
  with the query rotated back to position ``sinks + window``.  A cached key's value is the
  one the token computed when it was processed, which is what its row computes here (its
  own attention saw the same cache), so the two agree.

Needs rotary position embeddings in the ``rotate_half`` convention of Hugging Face
transformers (Llama, Mistral, Qwen, ...) and scores ``q . k / sqrt(d_head)``; both are
checked on the run itself, and a model that differs is refused (:class:`Unsupported`).
"""

from __future__ import annotations

import math

import pandas as pd
import torch
from tqdm.auto import tqdm

from interp.errors import InputError, Unsupported
from interp.model import Model, Tokens
from interp.tasks import loss_by_position

METHODS = ("mask", "cache")


def visible_keys(n: int, window: int, sinks: int) -> torch.Tensor:
    """``[n, n]`` bool: which keys token ``t`` (row) attends to under a cache of ``sinks`` first
    tokens and ``window`` recent ones (see the module docstring)."""
    t = torch.arange(n)[:, None]
    j = torch.arange(n)[None, :]
    return (j <= t) & ((j < sinks) | (j >= t - window))


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """Hugging Face's rotary helper: ``[-x2, x1]`` for the halves ``x1, x2`` of the last axis."""
    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], dim=-1)


def _check(model: Model, sinks: int, window: int) -> None:
    model.require_attention("streaming attention")
    need = ("rot_q", "rot_k", "rot_cos", "rot_sin", "q", "scores")
    missing = [k for k in need if k not in model.site_kinds()]
    if missing:
        raise Unsupported(
            f"streaming attention re-indexes rotary positions inside the cache, and {model.cfg.name or 'this model'} "
            f"has no {missing} sites (no rotary embedding: learned absolute positions, or none)"
        )
    for name, v, low in (("sinks", sinks, 0), ("window", window, 1)):
        if isinstance(v, bool) or not isinstance(v, int) or v < low:
            raise InputError(f"{name} must be an int >= {low}, got {v!r}")


def _rotation_check(q: torch.Tensor, rot_q: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> None:
    """Raises unless ``rot_q == q * cos + rotate_half(q) * sin`` (the convention the re-indexing assumes)."""
    want = q * cos[:, :, None] + rotate_half(q) * sin[:, :, None]
    err = float((want - rot_q).abs().max())
    scale = float(rot_q.abs().max()) + 1e-12
    if err > 1e-3 * scale:
        raise Unsupported(
            "this model's rotary embedding is not Hugging Face's rotate_half form applied to the whole head "
            f"(mismatch {err:.3g}): re-indexing positions inside the cache is not implemented for it"
        )


def _mask_hooks(model: Model, window: int, sinks: int, n: int) -> list:
    """The hooks that turn every layer's attention into the sink + window cache's (``method="mask"``)."""
    group = model.cfg.n_heads // model.cfg.n_kv_heads
    visible = visible_keys(n, window, sinks)
    cap = sinks + window
    shifted = torch.arange(n) > cap  # queries whose position is re-indexed to `cap`
    delta = (torch.arange(n) - cap).clamp(min=0)  # how far back each query is rotated
    seen: dict[str, torch.Tensor] = {}
    hooks = []

    def keep(name: str):
        def store(x: torch.Tensor, hook) -> None:
            seen[name] = x
            return None

        return store

    for layer in range(model.cfg.n_layers):
        names = {k: model.site(k, layer) for k in ("q", "rot_q", "rot_k", "rot_cos", "rot_sin", "scores")}
        for k in ("q", "rot_q", "rot_k", "rot_cos", "rot_sin"):
            hooks.append((names[k], keep(f"{layer}.{k}")))

        def edit(scores: torch.Tensor, hook, layer=layer) -> torch.Tensor:
            q, rq, rk = seen[f"{layer}.q"], seen[f"{layer}.rot_q"], seen[f"{layer}.rot_k"]
            cos, sin = seen[f"{layer}.rot_cos"], seen[f"{layer}.rot_sin"]
            cos = cos.expand(rq.shape[0], -1, -1)
            sin = sin.expand(rq.shape[0], -1, -1)
            if layer == 0:
                _rotation_check(q, rq, cos, sin)
            d = rq.shape[-1]
            rk_q = rk.repeat_interleave(group, dim=2)  # [B, pos, H, d]: each query head's key-value head
            if layer == 0:
                # the scores must be q . k / sqrt(d) for the edit below to be exact: checked on this run
                # (every layer computes them the same way)
                direct = torch.einsum("bqhd,bkhd->bhqk", rq, rk_q) / math.sqrt(d)
                causal = torch.ones(n, n, dtype=torch.bool, device=scores.device).tril()
                err = float((direct - scores).abs()[..., causal].max())
                if err > 1e-3 * (float(direct.abs().max()) + 1e-6):
                    raise Unsupported(
                        f"the attention scores are not q.k/sqrt(d_head) of the rotary queries and keys "
                        f"(mismatch {err:.3g}): the cache cannot be re-indexed exactly for this model"
                    )
                del direct
            out = scores.clone()
            if sinks and bool(shifted.any()):
                idx = delta.to(rq.device)
                c, s = cos[:, idx], sin[:, idx]  # rotation by the query's shift, per query position
                back = rq * c[:, :, None] - rotate_half(rq) * s[:, :, None]  # R(-delta) q
                sink_scores = torch.einsum("bqhd,bkhd->bhqk", back, rk_q[:, :sinks]) / math.sqrt(d)
                rows = shifted.to(out.device)
                out[:, :, rows, :sinks] = sink_scores[:, :, rows].to(out.dtype)
            masked = ~visible.to(out.device)
            return out.masked_fill(masked, torch.finfo(out.dtype).min)

        hooks.append((names["scores"], edit))
    return hooks


def _cache_losses(model: Model, ids: torch.Tensor, window: int, sinks: int, progress: bool) -> torch.Tensor:
    """The paper's loop (``method="cache"``): one token per step, the cache cut after each."""
    if not model.supports_cache:
        raise Unsupported(f"{model.cfg.name or 'this model'} has no key-value cache to evict from")
    B, n = ids.shape
    # cos / sin of a rotation by one position, read from the model's own rotary embedding
    _, probe = model.run_with_cache(ids[:1, :2], names=[model.site("rot_cos", 0), model.site("rot_sin", 0)])
    cos1, sin1 = probe[model.site("rot_cos", 0)][0, 1], probe[model.site("rot_sin", 0)][0, 1]
    cap = sinks + window
    out = torch.zeros(B, n - 1)
    cache = None
    for t in tqdm(range(n - 1), desc="streaming (cache)", disable=not progress, leave=False):
        logits, cache = model.step(ids[:, t : t + 1], cache)
        out[:, t] = torch.nn.functional.cross_entropy(logits[:, -1].float(), ids[:, t + 1], reduction="none").cpu()
        if cache.get_seq_length() > cap:  # type: ignore[attr-defined]
            for layer in cache.layers:  # type: ignore[attr-defined]
                k, v = layer.keys, layer.values  # [B, kv_heads, pos, d]
                recent = k[:, :, sinks + 1 :]
                # one position back: R(-1) k = k cos(1) - rotate_half(k) sin(1)
                recent = recent * cos1.to(k.dtype) - rotate_half(recent) * sin1.to(k.dtype)
                layer.keys = torch.cat([k[:, :, :sinks], recent], dim=2)
                layer.values = torch.cat([v[:, :, :sinks], v[:, :, sinks + 1 :]], dim=2)
    return out


@torch.no_grad()
def streaming_losses(
    model: Model,
    tokens: Tokens,
    *,
    window: int,
    sinks: int = 4,
    method: str = "mask",
    batch_size: int = 1,
    progress: bool = False,
) -> torch.Tensor:
    """Next-token losses ``[batch, pos - 1]`` (nats; position ``p`` predicts token ``p + 1``)
    under a key-value cache of the first ``sinks`` tokens and the ``window`` most recent ones,
    positions re-indexed inside the cache (see the module docstring; ``sinks=0`` is window
    attention alone).  ``method``: "mask" (one forward per ``batch_size`` rows) or "cache"
    (one forward per token, the reference)."""
    if method not in METHODS:
        raise InputError(f"method must be one of {METHODS}, got {method!r}")
    _check(model, sinks, window)
    batch = model.tokenize(tokens)
    if batch.padded:
        raise InputError("streaming losses need equally long rows")
    ids = batch.tokens
    n = ids.shape[1]
    if n < 2:
        raise InputError("streaming losses need at least 2 tokens")
    if method == "cache":
        return _cache_losses(model, ids, window, sinks, progress)
    hooks = _mask_hooks(model, window, sinks, n)
    parts = []
    step = max(1, int(batch_size))
    for start in tqdm(range(0, len(ids), step), desc="streaming (mask)", disable=not progress, leave=False):
        rows = ids[start : start + step]
        parts.append(loss_by_position(model.run_with_hooks(rows, hooks), rows).float().cpu())
    return torch.cat(parts)


@torch.no_grad()
def streaming_perplexity(
    model: Model,
    tokens: Tokens,
    *,
    cache_size: int = 256,
    sinks: int = 4,
    method: str = "mask",
    progress: bool = False,
) -> pd.DataFrame:
    """Xiao et al.'s comparison on ``tokens`` (rows of one long text each): next-token losses
    under window attention alone (a cache of the ``cache_size`` most recent tokens), under
    ``sinks`` first tokens plus ``cache_size - sinks`` recent ones, and under full attention.

    Returns ``DataFrame[condition ("window" | "sinks" | "full"), sinks, window, row, pos,
    loss]`` (one row per predicted token; nats).  Only positions ``pos >= cache_size`` differ
    between the conditions (before that the cache holds the whole text); perplexity is
    ``exp`` of the mean loss over the positions you choose.
    """
    batch = model.tokenize(tokens)
    if isinstance(cache_size, bool) or not isinstance(cache_size, int) or not sinks < cache_size:
        raise InputError(f"cache_size must be an int larger than sinks ({sinks}), got {cache_size!r}")
    n = batch.tokens.shape[1]
    if n <= cache_size + 1:
        raise InputError(f"the text ({n} tokens) must be longer than the cache ({cache_size} tokens) to evict anything")
    frames = []
    conditions = (("window", 0, cache_size), ("sinks", sinks, cache_size - sinks))
    for name, s, w in conditions:
        losses = streaming_losses(model, batch, window=w, sinks=s, method=method, progress=progress)
        frames.append(_tidy(losses, name, s, w))
    full = loss_by_position(model(batch), batch.tokens).float().cpu()
    frames.append(_tidy(full, "full", 0, n))
    return pd.concat(frames, ignore_index=True)


def _tidy(losses: torch.Tensor, condition: str, sinks: int, window: int) -> pd.DataFrame:
    B, P = losses.shape
    return pd.DataFrame(
        {
            "condition": condition,
            "sinks": sinks,
            "window": window,
            "row": torch.arange(B).repeat_interleave(P).numpy(),
            "pos": torch.arange(P).repeat(B).numpy(),
            "loss": losses.reshape(-1).numpy(),
        }
    )
