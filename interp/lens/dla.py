"""Direct logit attribution: the final logit of a target (or the difference of two) split into
the embedding, every head and every MLP (recurrent models: every layer's change of the
stream), with the final norm's scale frozen at the run's own value, so the pieces add up to
the logit exactly."""

from __future__ import annotations

from typing import cast

import pandas as pd
import torch

from interp import sites as S
from interp.errors import InputError
from interp.lens.logit import _one_prompt
from interp.model import Model, Tokens
from interp.runs import analysis, record
from interp.weights import readout


@torch.no_grad()
@analysis("dla", figure="interp.plots.lens.dla_plot")
def dla(model: Model, tokens: Tokens, target, contrast=None, *, pos: int = -1) -> pd.DataFrame:
    """Direct logit attribution at ``pos`` of one prompt: the logit of ``target`` (minus that of
    ``contrast``, if given) split into pieces that add up to it, with the final norm's scale
    frozen at this run's value (the standard linearisation).

    Transformers: ``embed`` (token and position embeddings), each head ``a{l}.h{h}`` (``z @
    W_O``; grouped-query and bias-free models too), each attention layer's output bias
    ``a{l}.bias``, each MLP ``m{l}`` and ``bias`` (the final norm's bias and the unembedding's).
    Through a post-attention norm (Gemma-2/3 sandwich norms, OLMo-2) each head's piece is its
    output through that norm at the norm's scale of this run, so the heads still add up to the
    attention output.  Layers without attention (state-space layers of a hybrid; recurrent and
    state-space models) give ``l{l}``: the layer's change of the stream (telescoping, exact).
    With a final logit soft-cap (Gemma-2) the pieces add up to the logit before the cap
    (``attrs["pre_cap"]``); the cap is applied after them.

    Returns ``DataFrame[component, kind, layer, head, value]`` and, in its Result's meta (``interp.runs.run(dla, ...).meta``), ``logit``
    (the model's own value), ``total`` (the sum of the pieces: equal to ``logit``, or to
    ``pre_cap`` under a soft-cap), ``scale`` and ``linearisation`` (what is frozen).
    """
    batch = _one_prompt(model, tokens)
    t, c = model.token_id(target), (None if contrast is None else model.token_id(contrast))
    n = int(batch.lengths[0])
    if not -n <= pos < n:
        raise InputError(f"position {pos} is outside the prompt of {n} tokens")
    p = pos % n
    ro = readout(model)
    norm = ro._affine()  # declines, naming the reason, for a final norm of an unknown kind
    direction = ro.W_U[:, t] - (ro.W_U[:, c] if c is not None else 0)
    const = float(ro.b_U[t] - (ro.b_U[c] if c is not None else 0))
    pieces: list[tuple[str, str, int | None, int | None, torch.Tensor]] = []
    frozen = ["the final norm's scale at this position"]
    attn = set(model.cfg.attn_layers or ())
    if attn:
        w = model.weights()
        mlp = [model.has_site(S.kind("mlp_out").hook(l)) for l in range(model.cfg.n_layers)]
        names = [model.site("resid_pre", 0)] + model.sites("resid_post")
        names += [S.kind("z").hook(l) for l in sorted(attn)]
        names += [S.kind("mlp_out").hook(l) for l in range(model.cfg.n_layers) if mlp[l]]
        logits, cache = model.run_with_cache(batch, names=names)
        pieces.append(("embed", "embed", -1, None, cache[model.site("resid_pre", 0)][0, p].float()))
        if any(g is not None for g in w.gains.get("post_attn", [])):
            frozen.append("each post-attention norm's scale at this position")
        prev = cache[model.site("resid_pre", 0)][0, p].float()
        for l in range(model.cfg.n_layers):
            now = cache[model.site("resid_post", l)][0, p].float()
            mlp_out = cache[S.kind("mlp_out").hook(l)][0, p].float() if mlp[l] else None
            if l in attn:
                z = cache[S.kind("z").hook(l)][0, p].float()
                heads = w.head_outputs(l, z)  # [H, d]
                for h in range(heads.shape[0]):
                    pieces.append((f"a{l}.h{h}", "head", l, h, heads[h]))
                pieces.append((f"a{l}.bias", "attn_bias", l, None, w.attn_bias(l, z)))
            else:  # a state-space or recurrent mixer: its write is the layer's change less the MLP's
                mixer = now - prev - (mlp_out if mlp_out is not None else 0)
                pieces.append((f"l{l}", "layer", l, None, mixer))
            if mlp_out is not None:
                pieces.append((f"m{l}", "mlp", l, None, mlp_out))
            prev = now
    else:
        names = [model.site("embed")] + model.sites("resid_post")
        logits, cache = model.run_with_cache(batch, names=names)
        prev = cache[model.site("embed")][0, p].float()
        pieces.append(("embed", "embed", -1, None, prev))
        for l, name in enumerate(model.sites("resid_post")):
            now = cache[name][0, p].float()
            pieces.append((f"l{l}", "layer", l, None, now - prev))
            prev = now
    resid = cast(torch.Tensor, sum(x for *_, x in pieces))  # pieces is never empty: a tensor, not sum's 0
    scale = norm.scale(resid)
    rows = []
    for name, kind, layer, head, x in pieces:
        rows.append(
            {
                "component": name,
                "kind": kind,
                "layer": layer,
                "head": head,
                "value": float(norm.linear(x, scale) @ direction),
            }
        )
    bias = float(norm.bias @ direction) if norm.bias is not None else 0.0
    rows.append({"component": "bias", "kind": "bias", "layer": model.cfg.n_layers, "head": None, "value": bias + const})
    df = pd.DataFrame(rows)
    assert logits is not None  # run_with_cache returns logits unless asked not to (logits=False)
    own = float(logits[0, p, t] - (logits[0, p, c] if c is not None else 0))
    total = float(df["value"].sum())
    meta: dict = dict(
        logit=own,
        total=total,
        scale=float(scale),
        target=model.to_str_tokens([t])[0],
        contrast=None if c is None else model.to_str_tokens([c])[0],
        pos=p,
        linearisation="frozen: " + "; ".join(frozen),
    )
    if ro.softcap:
        # the pieces add up to the logits before Gemma-2's final soft-cap, which is applied after them
        meta["pre_cap"] = total
        meta["linearisation"] += f"; the final soft-cap ({ro.softcap:g} tanh(x / {ro.softcap:g})) applied after"
    record(**meta)
    return df
