"""Head importance from head-mask gradients, and pruning heads in that order (Michel et al.
2019, "Are Sixteen Heads Really Better than One?").

Each head's output is multiplied by a mask variable ``xi_h`` (1 = kept, 0 = pruned).  The
importance of a head is the expected absolute gradient of the loss with respect to its
mask, ``I_h = E_x |dL(x)/dxi_h|``; since the head's contribution is linear in ``z_h`` (its
output before W_O), ``dL/dxi_h = sum over positions of z_h . dL/dz_h`` at ``xi = 1``, read from
one backward pass.  As in the authors' code (ported to transformers' ``bertology`` example),
importances are normalised per layer by their L2 norm.  Pruning a head sets its mask to 0,
which is zero-ablating ``z`` (:func:`interp.ablation.ablate`).
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence

import pandas as pd
import torch
from tqdm.auto import tqdm

from interp.errors import InputError
from interp.model import Model, Tokens


def head_importance(model: Model, tokens: Tokens, *, batch_size: int = 4, progress: bool = False) -> pd.DataFrame:
    """Michel et al.'s head importance on ``tokens`` (text, ``[rows, pos]``; the loss is each row's
    mean next-token loss, a row being one example ``x``).

    Returns ``DataFrame[layer, head, raw, importance]``: ``raw`` = mean over rows of
    ``|dL(x)/dxi_h|`` (nats per unit of mask), ``importance`` = ``raw`` divided by the L2 norm of its
    layer's raw values (Michel et al.'s per-layer normalisation).  Rows run ``batch_size`` at a
    time; each row's loss depends on its own activations only, so one backward gives every
    row's own gradient.
    """
    from interp.gradients import delta_hook
    from interp.tasks import loss_by_position

    model.require_attention("head importance")
    batch = model.tokenize(tokens)
    if batch.padded:
        raise InputError("head importance needs equally long rows")
    ids = batch.tokens
    if ids.shape[1] < 2:
        raise InputError("head importance needs rows of at least 2 tokens")
    names = model.sites("z")
    L, H = model.cfg.n_layers, model.cfg.n_heads
    total = torch.zeros(L, H, dtype=torch.float64)
    step = max(1, int(batch_size))
    for start in tqdm(range(0, len(ids), step), desc="head importance", disable=not progress, leave=False):
        rows = ids[start : start + step]
        deltas: dict[str, torch.Tensor] = {}
        seen: dict[str, torch.Tensor] = {}
        with torch.enable_grad():
            logits = model.run_with_hooks(rows, [(n, delta_hook(deltas, n, seen)) for n in names])
            loss = loss_by_position(logits, rows).mean(1).sum()  # sum over rows of each row's mean loss
            grads = torch.autograd.grad(loss, [deltas[n] for n in names])
        for layer, (name, g) in enumerate(zip(names, grads)):
            # dL_b/dxi_h = sum over positions and d_head of z * dL_b/dz, per row b: [rows, heads]
            per_row = (seen[name].double() * g.double()).sum((1, 3))
            total[layer] += per_row.abs().sum(0).cpu()
    raw = total / len(ids)
    norm = raw.norm(dim=1, keepdim=True).clamp(min=1e-20)
    imp = raw / norm
    return pd.DataFrame(
        {
            "layer": torch.arange(L).repeat_interleave(H).numpy(),
            "head": torch.arange(H).repeat(L).numpy(),
            "raw": raw.reshape(-1).numpy(),
            "importance": imp.reshape(-1).numpy(),
        }
    )


def pruning_order(importance: pd.DataFrame) -> list[tuple[int, int]]:
    """Heads from least to most important (the order Michel et al. prune in)."""
    ranked = importance.sort_values(["importance", "layer", "head"], kind="stable")
    return [(int(l), int(h)) for l, h in zip(ranked["layer"], ranked["head"])]


def random_order(model: Model, seed: int) -> list[tuple[int, int]]:
    """Every head in a random order (the control for :func:`pruning_order`)."""
    heads = model.heads()
    random.Random(seed).shuffle(heads)
    return heads


@torch.no_grad()
def pruning_curve(
    model: Model,
    tokens: Tokens,
    orders: Mapping[str, Sequence[tuple[int, int]]],
    fractions: Sequence[float],
    *,
    progress: bool = False,
) -> pd.DataFrame:
    """The loss as heads are pruned (zero-ablated) in each order: for every named order and
    fraction ``f``, the first ``round(f * n_heads)`` heads of the order are pruned at once.

    Returns ``DataFrame[order, fraction, n_pruned, row, loss]`` (each row's mean next-token loss,
    nats; fraction 0 is the unpruned model, once per order).
    """
    from interp.ablation import ablate
    from interp.tasks import loss_by_position

    model.require_attention("head pruning")
    batch = model.tokenize(tokens)
    if batch.padded:
        raise InputError("the pruning curve needs equally long rows")
    ids = batch.tokens
    total = model.cfg.n_layers * model.cfg.n_heads
    fracs = sorted({float(f) for f in fractions})
    if not fracs or any(not 0 <= f < 1 for f in fracs):
        raise InputError(f"fractions must be in [0, 1), got {list(fractions)}")
    for name, order in orders.items():
        if len(order) < round(max(fracs) * total):
            raise InputError(f"order {name!r} lists {len(order)} heads, fewer than the largest fraction prunes")
    base = loss_by_position(model(ids), ids).mean(1).float().cpu()
    rows = []
    bar = tqdm(total=len(orders) * len(fracs), desc="pruning", disable=not progress, leave=False)
    for name, order in orders.items():
        for f in fracs:
            k = round(f * total)
            if k == 0:
                losses = base
            else:
                with ablate(model, list(order)[:k], "zero"):
                    losses = loss_by_position(model(ids), ids).mean(1).float().cpu()
            rows += [
                {"order": name, "fraction": f, "n_pruned": k, "row": i, "loss": float(v)} for i, v in enumerate(losses)
            ]
            bar.update()
    bar.close()
    return pd.DataFrame(rows)
