"""Direct logit attribution: the final logit of a target (or the difference of two) split into
the embedding, every head and every MLP (recurrent models: every layer's change of the
stream), with the final norm's scale frozen at the run's own value, so the pieces add up to
the logit exactly."""

from __future__ import annotations

from typing import cast

import pandas as pd
import torch

from interp.errors import InputError
from interp.lens.logit import _one_prompt
from interp.model import Model, Tokens
from interp.weights import readout


@torch.no_grad()
def dla(model: Model, tokens: Tokens, target, contrast=None, *, pos: int = -1) -> pd.DataFrame:
    """Direct logit attribution at ``pos`` of one prompt: the logit of ``target`` (minus that of
    ``contrast``, if given) split into pieces that add up to it exactly, with the final norm's
    scale frozen at this run's value (the standard linearisation).

    Transformers: ``embed`` (token and position embeddings), each head ``a{l}.h{h}`` (``z @
    W_O``, works for grouped-query and bias-free models), each attention layer's output bias
    ``a{l}.bias``, each MLP ``m{l}`` and ``bias`` (the final norm's bias and the unembedding's).
    Recurrent / state-space models: ``embed`` and each layer's change of the stream ``l{l}``
    (telescoping: exact for every model; for residual blocks it is the layer's write).

    Returns ``DataFrame[component, kind, layer, head, value]`` and ``df.attrs`` with ``logit``
    (the model's own value), ``total`` (the sum of the pieces) and ``scale``.
    """
    batch = _one_prompt(model, tokens)
    t, c = model.token_id(target), (None if contrast is None else model.token_id(contrast))
    n = int(batch.lengths[0])
    if not -n <= pos < n:
        raise InputError(f"position {pos} is outside the prompt of {n} tokens")
    p = pos % n
    ro = readout(model)
    if ro.softcap:
        raise InputError("direct logit attribution is linear only without a final logit soft-cap")
    if not ro.affine:
        raise InputError("this model's final norm is of a kind whose scale cannot be frozen")
    direction = ro.W_U[:, t] - (ro.W_U[:, c] if c is not None else 0)
    const = float(ro.b_U[t] - (ro.b_U[c] if c is not None else 0))
    pieces: list[tuple[str, str, int | None, int | None, torch.Tensor]] = []
    if model.cfg.family == "transformer":
        w = model.weights()
        L = model.cfg.n_layers
        mlp = "mlp_out" in model.site_kinds()
        names = [model.site("resid_pre", 0)] + model.sites("z") + (model.sites("mlp_out") if mlp else [])
        logits, cache = model.run_with_cache(batch, names=names)
        pieces.append(("embed", "embed", -1, None, cache[model.site("resid_pre", 0)][0, p].float()))
        for l in range(L):
            heads = w.head_outputs(l, cache[model.site("z", l)][0, p].float())  # [H, d]
            for h in range(heads.shape[0]):
                pieces.append((f"a{l}.h{h}", "head", l, h, heads[h]))
            pieces.append((f"a{l}.bias", "attn_bias", l, None, w.b_O[l]))
            if mlp:
                pieces.append((f"m{l}", "mlp", l, None, cache[model.site("mlp_out", l)][0, p].float()))
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
    scale = ro.scale(resid)
    gain = ro.gain if ro.gain is not None else torch.ones_like(resid)
    rows = []
    for name, kind, layer, head, x in pieces:
        xc = x - x.mean() if ro.centers else x
        rows.append(
            {
                "component": name,
                "kind": kind,
                "layer": layer,
                "head": head,
                "value": float((xc * scale * gain) @ direction),
            }
        )
    bias = float(ro.bias @ direction) if ro.bias is not None else 0.0
    rows.append({"component": "bias", "kind": "bias", "layer": model.cfg.n_layers, "head": None, "value": bias + const})
    df = pd.DataFrame(rows)
    assert logits is not None  # run_with_cache returns logits unless asked not to (logits=False)
    own = float(logits[0, p, t] - (logits[0, p, c] if c is not None else 0))
    df.attrs.update(
        logit=own,
        total=float(df["value"].sum()),
        scale=float(scale),
        target=model.to_str_tokens([t])[0],
        contrast=None if c is None else model.to_str_tokens([c])[0],
        pos=p,
    )
    return df
