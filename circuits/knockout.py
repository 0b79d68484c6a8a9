"""Knockouts of attention heads by mean ablation over a reference distribution, per template
and position (Wang et al. 2022, Section 2.1): a knocked-out head's output ``z`` at each position
is replaced by its mean over the reference prompts of the same template at that position, so
grammatical information constant within a template is kept and what varies (which name) is
removed.  A circuit ``C`` is then run by knocking out every head outside it; Wang et al.'s
faithfulness, completeness and minimality compare such runs (:func:`knockout_values`)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Sequence

import torch

from interp import interventions as I
from interp.errors import InputError

Head = tuple[int, int]


@torch.no_grad()
def template_means(model, reference, groups: Sequence[int]) -> dict[str, torch.Tensor]:
    """Per layer's ``z`` site, ``[rows, pos, heads, d_head]``: for each reference row, the mean ``z``
    over the reference rows of the same group (template) at each position.  Rows of one group
    must have the same length (IOI templates with single-token names do)."""
    batch = model.tokenize(reference)
    groups = [int(g) for g in groups]
    if len(groups) != len(batch):
        raise InputError(f"{len(groups)} groups for {len(batch)} reference prompts")
    for g in set(groups):
        lens = {int(batch.lengths[i]) for i, x in enumerate(groups) if x == g}
        if len(lens) != 1:
            raise InputError(f"the prompts of template {g} differ in length {sorted(lens)}: means need one length")
    names = model.sites("z")
    _, cache = model.run_with_cache(batch, names=names, logits=False)
    index = torch.tensor(groups)
    out = {}
    for name in names:
        z = cache[name].float()
        mean = torch.zeros_like(z)
        for g in set(groups):
            rows = (index == g).nonzero()[:, 0].to(z.device)
            mean[rows] = z[rows].mean(0, keepdim=True)
        out[name] = mean
    return out


@contextlib.contextmanager
def knocked_out(model, heads: Iterable[Head], means: dict[str, torch.Tensor]) -> Iterator:
    """Inside the block, ``heads`` output their template means (:func:`template_means`; row ``b`` of
    a run reads row ``b`` of the means, so run the prompts the means were made for, in order)."""
    by_layer: dict[int, list[int]] = {}
    for layer, head in heads:
        model.check_head(layer, head)
        by_layer.setdefault(int(layer), []).append(int(head))
    edits = [
        I.patch(model.site("z", layer), means[model.site("z", layer)].to(model.dtype), heads=sorted(hs))
        for layer, hs in by_layer.items()
    ]
    with I.apply(model, edits):
        yield model


@torch.no_grad()
def knockout_values(model, tokens, metric, means: dict[str, torch.Tensor], knock: Iterable[Head] = ()) -> torch.Tensor:
    """``[n]`` the per-prompt ``metric`` (a :class:`interp.metrics.Metric`) with ``knock`` knocked out
    (none: the model itself, ``F(M)``; every head outside a circuit: ``F(C)``)."""
    batch = model.tokenize(tokens)
    knock = list(dict.fromkeys((int(l), int(h)) for l, h in knock))
    with contextlib.ExitStack() as stack:
        if knock:
            stack.enter_context(knocked_out(model, knock, means))
        logits = model(batch)
    return metric.resolve(batch.tokens.shape[1], batch.lengths).values(logits).float().cpu()
