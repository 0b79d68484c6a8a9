"""Attention patterns of one prompt, read from ``blocks.{l}.attn.hook_pattern``.

The app's attention page and the notebooks use these instead of touching the cache: one
forward, every layer's pattern, as a tensor or as a tidy DataFrame.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import torch

from interp import sites as S
from interp.errors import InputError
from interp.model import Model
from interp.runs import analysis, record


def pattern_site(layer: int) -> str:
    """Hook site of layer ``layer``'s attention pattern, ``[batch, head, dest, src]``."""
    return S.kind("pattern").template.format(l=layer)


@analysis(
    "attention",
    figure="interp.plots.attention.layer_grid",
    to_frame=lambda patterns, meta: patterns_frame(patterns, meta["layers"]),
)
@torch.no_grad()
def attention_patterns(model: Model, tokens: torch.Tensor, layers: Sequence[int] | None = None) -> torch.Tensor:
    """Attention probabilities of one sequence: ``[len(layers), n_heads, dest, src]``.

    tokens: ``[pos]`` or ``[1, pos]``.  layers: which layers (default all, in order).
    Row ``dest`` of a head's pattern sums to 1 over ``src <= dest`` (causal).  Active
    hooks (ablations, steering) apply, so the patterns are those of the edited model.
    A Result (``interp.runs.run``) holds the tidy :func:`patterns_frame` and, in its meta, the
    ``layers`` and the prompt's ``str_tokens``.
    """
    model.require_attention("attention patterns")
    tokens = model.validate_tokens(tokens)
    if tokens.shape[0] != 1:
        raise InputError(f"attention_patterns takes one sequence, got a batch of {tokens.shape[0]}")
    layers = list(range(model.cfg.n_layers)) if layers is None else [model.check_layer(int(l)) for l in layers]
    _, cache = model.run_with_cache(tokens, names=[pattern_site(l) for l in layers])
    record(layers=layers, str_tokens=model.to_str_tokens(tokens[0]))
    return torch.stack([cache[pattern_site(l)][0] for l in layers]).float().cpu()


def patterns_frame(patterns: torch.Tensor, layers: Sequence[int] | None = None) -> pd.DataFrame:
    """Tidy form of :func:`attention_patterns`: columns ``layer, head, dest, src, attention``.

    Only the causal entries (``src <= dest``) are listed.  layers: the layer number of
    each leading slice (default ``0..``).
    """
    if patterns.ndim != 4:
        raise InputError(f"patterns must be [layer, head, dest, src], got shape {tuple(patterns.shape)}")
    n_layers, n_heads, n_dest, n_src = patterns.shape
    layers = list(range(n_layers)) if layers is None else list(layers)
    if len(layers) != n_layers:
        raise InputError(f"{len(layers)} layer numbers for {n_layers} pattern slices")
    l, h, d, s = torch.meshgrid(
        torch.tensor(layers), torch.arange(n_heads), torch.arange(n_dest), torch.arange(n_src), indexing="ij"
    )
    keep = s <= d
    return pd.DataFrame(
        {
            "layer": l[keep].numpy(),
            "head": h[keep].numpy(),
            "dest": d[keep].numpy(),
            "src": s[keep].numpy(),
            "attention": patterns[keep].numpy(),
        }
    )
