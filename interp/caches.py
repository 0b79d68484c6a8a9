"""Operations on a model's own decoding cache (a transformers ``Cache``: keys and values, sliding
windows, recurrent states) that the engines share: copying a prompt's cache once per cell of a
sweep, cell-major, and whether a model's cache allows it."""

from __future__ import annotations

import copy

import torch


def tiled(cache, rows: int, copies: int):
    """A copy of ``cache`` (of ``rows`` rows) repeated ``copies`` times, cell-major: rows ``i *
    rows .. (i + 1) * rows`` are copy ``i``."""
    out = copy.deepcopy(cache)
    out.batch_select_indices(torch.arange(rows).repeat(copies))
    return out


def tileable(model) -> bool:
    """Whether ``model`` decodes from a cache whose rows can be tiled (:func:`tiled`): a hybrid's
    state-space layers may keep states that cannot (checked once per model on a probe)."""
    cached = getattr(model, "_cache_tileable", None)
    if cached is not None:
        return cached
    ok = False
    if model.supports_cache:
        probe = torch.zeros(1, 2, dtype=torch.long, device=model.device)
        try:
            with torch.no_grad():
                cache = model.step(probe, None)[1]
            tiled(cache, 1, 2)
            ok = True
        except Exception:
            ok = False
    model._cache_tileable = ok
    return ok
