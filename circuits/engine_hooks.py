"""Exact patching through forward hooks, many cells per forward: works on every model.

The base tokens are repeated once per cell along the batch (cell-major), and one
intervention per patched site (:func:`interp.cells.intervention`) writes each cell's
source values into its own rows, so a chunk of cells costs one (wider) forward instead of
one forward each (:func:`interp.interventions.run_batched`, which also cuts the sequence
after the last position the metric reads and unembeds only the read positions).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from interp import interventions as I
from interp.cells import Cell, Site, interventions, reaches
from interp.metrics import Metric


def run(
    model,
    site: Site,
    cells: Sequence[Cell],
    *,
    base_tokens: torch.Tensor,
    base_hooks: list,
    source: dict[str, torch.Tensor],
    metric: Metric,
    batch_tokens: int = 16384,
    progress: bool = True,
) -> torch.Tensor:
    """Metric (batch mean) of the base run with each cell patched from ``source``: ``[len(cells)]``.

    source: hook name -> the source run's activation ``[batch, ...]``.  metric: resolved to
    absolute positions.  batch_tokens: tokens per forward (cells are chunked to fit).
    """
    batch = model.tokenize(base_tokens)
    B, P = batch.tokens.shape
    reads = metric.read_positions(P)
    out = torch.empty(len(cells))
    todo = [i for i, c in enumerate(cells) if reaches(c, site, model, reads)]
    if len(todo) < len(cells):  # these patches change nothing the metric reads
        with torch.no_grad():
            out[:] = float(metric(model.run_with_hooks(batch, list(base_hooks))))
    if not todo:
        return out

    def edits(idx: Sequence[int]) -> list[I.Intervention]:
        return interventions(model, site, [cells[todo[i]] for i in idx], source, B)

    out[todo] = I.run_batched(
        model,
        batch,
        len(todo),
        edits,
        metric,
        base_hooks=base_hooks,
        batch_tokens=batch_tokens,
        progress=progress,
        desc=f"patching {site.name}",
    )
    return out
