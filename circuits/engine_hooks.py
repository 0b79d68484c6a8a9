"""Exact patching through forward hooks, many cells per forward: works on every model.

The base tokens are repeated once per cell along the batch (cell-major), and one hook per
patched site writes each cell's source values into its own rows, so a chunk of cells costs
one (wider) forward instead of one forward each.  For causal families the sequence is cut
after the last position the metric reads (later positions cannot change it).
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from tqdm.auto import tqdm

from circuits.metrics import Metric
from circuits.sites import Cell, Site, by_layer, reaches, scatter


def run(model, site: Site, cells: Sequence[Cell], *, base_tokens: torch.Tensor, base_hooks: list,
        source: dict[str, torch.Tensor], metric: Metric, batch_tokens: int = 16384,
        progress: bool = True) -> torch.Tensor:
    """Metric (batch mean) of the base run with each cell patched from ``source``: ``[len(cells)]``.

    source: hook name -> the source run's activation ``[batch, ...]``.  metric: resolved to
    absolute positions.  batch_tokens: tokens per forward (cells are chunked to fit).
    """
    batch, seq_len = base_tokens.shape
    reads = metric.read_positions(seq_len)
    causal = model.cfg.family in ("transformer", "rnn", "ssm")
    n_keep = max(reads) + 1 if causal else seq_len
    tokens = base_tokens[:, :n_keep]
    per_chunk = max(1, batch_tokens // (batch * n_keep))
    out = torch.empty(len(cells))
    todo = [i for i, c in enumerate(cells) if reaches(c, site, model, reads)]
    if len(todo) < len(cells):           # these patches change nothing the metric reads
        with torch.no_grad():
            out[:] = float(metric(model.run_with_hooks(tokens, list(base_hooks))))
    source = {name: _cut(t, n_keep, site.layout) for name, t in source.items()}
    bar = tqdm(total=len(cells), desc=f"patching {site.name}", disable=not progress, leave=False)
    bar.update(len(cells) - len(todo))
    for start in range(0, len(todo), per_chunk):
        idx = todo[start:start + per_chunk]
        chunk = [cells[i] for i in idx]
        n = len(chunk)
        hooks = _hooks(site, chunk, source, n)
        with torch.no_grad():
            logits = model.run_with_hooks(tokens.repeat(n, 1), list(base_hooks) + hooks)
        vals = metric.values(logits.view(n, batch, n_keep, -1))
        out[idx] = vals.mean(-1).float().cpu()
        bar.update(n)
    bar.close()
    return out


def _cut(t: torch.Tensor, n_keep: int, layout: str) -> torch.Tensor:
    """A source activation cut to the first ``n_keep`` positions."""
    if layout == "pattern":
        return t[:, :, :n_keep, :n_keep]
    return t[:, :n_keep]


def _hooks(site: Site, chunk: Sequence[Cell], source: dict[str, torch.Tensor], n: int) -> list:
    hooks = []
    for layer, spec in by_layer(chunk).items():
        name = site.hook(layer)
        if site.via_mlp_in:
            hooks.extend(_resid_mid_hooks(layer, name, source[name], n, spec))
        else:
            hooks.append((name, _patcher(site.layout, n, source[name], spec)))
    return hooks


def _patcher(layout: str, n: int, src: torch.Tensor, spec: dict) -> Callable:
    def hook_fn(act: torch.Tensor, hook) -> torch.Tensor:
        act = act.clone()   # never in place: the tensor may also feed a skip connection
        scatter(act, layout, n, spec["cell_idx"], src, pos=spec["pos"], head=spec["head"], src_pos=spec["src_pos"])
        return act
    return hook_fn


def _resid_mid_hooks(layer: int, name: str, src: torch.Tensor, n: int, spec: dict) -> list:
    """The bridge's resid_mid hook only feeds the MLP: patch it there, then add the same change to the
    block output so that the skip connection carries it too (true residual-stream patching)."""
    change: dict[str, torch.Tensor] = {}

    def at_mlp_in(act: torch.Tensor, hook) -> torch.Tensor:
        new = act.clone()
        scatter(new, "vector", n, spec["cell_idx"], src, pos=spec["pos"])
        change["delta"] = new - act
        return new

    def at_resid_post(act: torch.Tensor, hook) -> torch.Tensor:
        return act + change.pop("delta")

    return [(name, at_mlp_in), (f"blocks.{layer}.hook_resid_post", at_resid_post)]
