"""Cunningham et al. (2023)'s comparison on a measurable interpretability proxy: a dictionary's
features against the site's neurons (its standard basis: for the residual stream, the
coordinates) and its PCA directions.

The proxy is *single-token predictability*: for each unit, take its ``top`` strongest
activations over held-out text; the unit's score is the largest fraction of them that fall on
one and the same token.  A unit that fires on one token (or a handful) scores high; a
polysemantic unit, firing across unrelated tokens, scores low.  (Cunningham et al. scored
units with automatic interpretation by a language model; this proxy needs no second model and
is exact and cheap, so it is a lower-resolution stand-in: it rewards token-level features and
misses contextual ones.)

Each unit is read in its positive direction (neurons and PCA directions: the sign whose top
activations are larger in magnitude), dead units (never active) are left out.
"""

from __future__ import annotations

import pandas as pd
import torch

from interp.memory import rows_per_chunk
from interp.sae.dictionary import Dictionary
from interp.sae.evaluate import PCA
from interp.sae.store import read_sites


def _running_top(
    values: torch.Tensor, ids: torch.Tensor, best_v: torch.Tensor | None, best_t: torch.Tensor | None, top: int
):
    """Merges ``values [n, units]`` (token ids ``[n]``) into the running top ``[top, units]``."""
    tok = ids[:, None].expand_as(values)
    if best_v is not None and best_t is not None:
        values = torch.cat([best_v, values])
        tok = torch.cat([best_t, tok])
    v, i = values.topk(min(top, len(values)), dim=0)
    return v, tok.gather(0, i)


def single_token_scores(
    model,
    d: Dictionary,
    tokens: torch.Tensor | None = None,
    *,
    fit: torch.Tensor | None = None,
    top: int = 20,
    n_tokens: int = 16384,
) -> pd.DataFrame:
    """One row per unit: ``family`` (``features``, ``neurons``, ``pca``), ``unit``, ``score``
    (the proxy above, in [1/top, 1]), ``token`` (the most common token among its top
    activations).  ``fit``: activations ``[n, d]`` for the PCA (default: the dictionary's
    training store, else the held-out activations themselves)."""
    from interp.sae.evaluate import _training_acts

    d.check(model)
    if tokens is None:
        from interp.sae.text import text_tokens

        tokens = text_tokens(model, n_tokens, seq_len=64, split="test")
    tokens = model.validate_tokens(tokens)
    start = 1 if d.cfg.skip_bos else 0
    rows, length = tokens.shape
    chunk = rows_per_chunk(4 * length * (20 * model.cfg.d_model + 2 * d.width), "proxy scores")
    acts = []
    with torch.no_grad():
        for lo in range(0, rows, chunk):
            acts.append(read_sites(model, tokens[lo : lo + chunk], [d.cfg.site])[d.cfg.site][:, start:].cpu().float())
    X = torch.cat(acts).reshape(-1, acts[0].shape[-1])
    ids = tokens[:, start:].reshape(-1).cpu()
    train = fit if fit is not None else _training_acts(d, None)
    basis = PCA(train if train is not None else X)
    families = {
        "neurons": lambda x: x,
        "pca": lambda x: (x - basis.mean) @ basis.components,
    }
    frames = []
    # features: the dictionary's activations, chunked (width can be large)
    best_v = best_t = None
    fired = torch.zeros(d.width, dtype=torch.bool)
    with torch.no_grad():
        for lo in range(0, len(X), 8192):
            f = d.encode(X[lo : lo + 8192])
            fired |= (f > 0).any(0)
            best_v, best_t = _running_top(f, ids[lo : lo + 8192], best_v, best_t, top)
    assert best_t is not None and best_v is not None
    frames.append(_scores("features", best_t, best_v, alive=fired))
    for name, project in families.items():
        P = project(X)
        pos_v, pos_t = _running_top(P, ids, None, None, top)
        neg_v, neg_t = _running_top(-P, ids, None, None, top)
        use_neg = neg_v.abs().sum(0) > pos_v.abs().sum(0)
        v = torch.where(use_neg, neg_v, pos_v)
        t = torch.where(use_neg, neg_t, pos_t)
        frames.append(_scores(name, t, v, alive=torch.ones(P.shape[1], dtype=torch.bool)))
    frame = pd.concat(frames, ignore_index=True)
    frame["token"] = [model.decode([int(t)]) for t in frame["token_id"]]
    return frame


def _scores(family: str, tok: torch.Tensor, vals: torch.Tensor, alive: torch.Tensor) -> pd.DataFrame:
    top = tok.shape[0]
    mode, _ = tok.mode(dim=0)
    share = (tok == mode[None]).sum(0).float() / top
    keep = alive & (vals > 0).all(0)
    units = keep.nonzero()[:, 0]
    return pd.DataFrame(
        {"family": family, "unit": units.numpy(), "score": share[units].numpy(), "token_id": mode[units].numpy()}
    )


def summary(scores: pd.DataFrame) -> pd.DataFrame:
    """Mean, median and share of units scoring >= 0.5 per family."""
    g = scores.groupby("family")["score"]
    return pd.DataFrame(
        {
            "units": g.size(),
            "mean": g.mean(),
            "median": g.median(),
            "share_at_least_half": g.apply(lambda s: (s >= 0.5).mean()),
        }
    ).reset_index()
