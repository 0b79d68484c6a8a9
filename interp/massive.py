"""Massive activations (Sun et al. 2024, "Massive Activations in Large Language Models"): a
handful of residual-stream entries, in a few fixed dimensions and at a few tokens (the first
one, delimiters), whose magnitude is about a thousand times the median; they act as fixed
biases, so setting them to their mean changes nothing while zeroing them wrecks the model.

- :func:`layer_magnitudes`: per layer, the largest magnitudes of the block's output and the
  median magnitude (the paper's layer-wise plot).
- :func:`massive_activations`: every entry at or above ``ratio`` x its layer's median (and
  ``floor``): layer, row, position, dimension, value.
- :func:`reset_massive`: a context manager that sets the massive entries of one layer's output
  (the chosen dimensions, at the positions where they are massive in each run) to zero or to
  given means, as the paper's intervention does at the layer where they first appear.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import pandas as pd
import torch

from interp.errors import InputError
from interp.model import Model, Tokens

RATIO, FLOOR = 1000.0, 100.0  # massive: >= 1000 x the layer's median magnitude and >= 100


def _residual_sites(model: Model) -> list[str]:
    if "resid_post" not in model.site_kinds():
        raise InputError(f"{model.cfg.name or 'this model'} has no residual stream (resid_post) to read")
    return model.sites("resid_post")


@torch.no_grad()
def layer_magnitudes(model: Model, tokens: Tokens, *, k: int = 3) -> pd.DataFrame:
    """``DataFrame[layer, rank, magnitude, value, row, pos, dim, median, ratio]``: the ``k``
    largest magnitudes of each block's output over all rows, positions and dimensions of
    ``tokens`` (rank 1 = largest), with the layer's median magnitude and their ratio to it.
    Reduced inside hooks, so no activation cache is kept."""
    names = _residual_sites(model)
    batch = model.tokenize(tokens)
    real = batch.mask.to(batch.tokens.device)  # [rows, pos] real positions
    rows: list[dict] = []

    def reducer(layer: int):
        def fn(x: torch.Tensor, hook) -> None:
            a = x.detach().abs().float()
            a = a * real[:, :, None]  # padding counts as 0
            med = float(a[real].median())
            top = a.reshape(-1).topk(k)
            P, D = a.shape[1], a.shape[2]
            for r, (v, i) in enumerate(zip(top.values.tolist(), top.indices.tolist())):
                b, p, d = i // (P * D), (i // D) % P, i % D
                rows.append(
                    {
                        "layer": layer,
                        "rank": r + 1,
                        "magnitude": v,
                        "value": float(x[b, p, d]),
                        "row": b,
                        "pos": p,
                        "dim": d,
                        "median": med,
                        "ratio": v / med if med > 0 else float("inf"),
                    }
                )
            return None

        return fn

    model.run_with_hooks(batch, [(n, reducer(l)) for l, n in enumerate(names)])
    return pd.DataFrame(rows)


@torch.no_grad()
def massive_activations(model: Model, tokens: Tokens, *, ratio: float = RATIO, floor: float = FLOOR) -> pd.DataFrame:
    """Every massive entry of every block's output: ``DataFrame[layer, row, pos, token, dim,
    value, median, ratio]`` where ``|value| >= max(floor, ratio * median)`` (the layer's median
    magnitude over all real entries of ``tokens``).  Empty when the model has none."""
    names = _residual_sites(model)
    batch = model.tokenize(tokens)
    real = batch.mask.to(batch.tokens.device)
    rows: list[dict] = []

    def finder(layer: int):
        def fn(x: torch.Tensor, hook) -> None:
            a = x.detach().abs().float() * real[:, :, None]
            med = float(a[real].median())
            b, p, d = (a >= max(floor, ratio * med)).nonzero(as_tuple=True)
            for bi, pi, di in zip(b.tolist(), p.tolist(), d.tolist()):
                rows.append(
                    {
                        "layer": layer,
                        "row": bi,
                        "pos": pi,
                        "token": int(batch.tokens[bi, pi]),
                        "dim": di,
                        "value": float(x[bi, pi, di]),
                        "median": med,
                        "ratio": float(a[bi, pi, di]) / med if med > 0 else float("inf"),
                    }
                )
            return None

        return fn

    model.run_with_hooks(batch, [(n, finder(l)) for l, n in enumerate(names)])
    cols = ["layer", "row", "pos", "token", "dim", "value", "median", "ratio"]
    return pd.DataFrame(rows, columns=cols)


@contextlib.contextmanager
def reset_massive(
    model: Model,
    layer: int,
    dims: Sequence[int],
    how: str = "zero",
    *,
    means: dict[tuple[bool, int], float] | None = None,
    ratio: float = RATIO,
    floor: float = FLOOR,
) -> Iterator[Model]:
    """Inside the block, every run has the massive entries of block ``layer``'s output in
    ``dims`` set to 0 (``how="zero"``) or to ``means[(first_token, dim)]`` (``how="mean"``; the
    paper uses one mean for the starting token and one for the others).  An entry is reset where
    any of ``dims`` is massive at that position in this run (``>= max(floor, ratio * the run's
    median magnitude at that layer)``), so the intervention follows the tokens that carry them."""
    if how not in ("zero", "mean"):
        raise InputError(f"how must be 'zero' or 'mean', got {how!r}")
    if how == "mean" and not means:
        raise InputError("how='mean' needs means={(first_token, dim): value}")
    dims = [int(d) for d in dims]
    if not dims or any(not 0 <= d < model.cfg.d_model for d in dims):
        raise InputError(f"dims must be dimensions of the residual stream [0, {model.cfg.d_model}), got {dims}")
    site = model.site("resid_post", layer)
    idx = torch.tensor(dims)

    def reset(x: torch.Tensor, hook) -> torch.Tensor:
        a = x.detach().abs().float()
        med = float(a.median())
        at = (a[..., idx.to(x.device)] >= max(floor, ratio * med)).any(-1)  # [rows, pos]
        if not at.any():
            return x
        out = x.clone()
        pos0 = model.context.offset == 0
        for d in dims:
            col = out[..., d]
            if how == "zero":
                col[at] = 0.0
            else:
                assert means is not None
                first = torch.zeros_like(at)
                if pos0:
                    first[:, 0] = True
                col[at & first] = means.get((True, d), means.get((False, d), 0.0))
                col[at & ~first] = means.get((False, d), means.get((True, d), 0.0))
        return out

    with model.hooks([(site, reset)]):
        yield model
