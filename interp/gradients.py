"""Gradients with respect to hook sites, for every model family (attribution patching, EAP).

A zero tensor is added at each requested site and ``d metric / d delta`` is read off: this
works alike for whole-sequence sites and for the per-step sites of recurrent models (where
a backward hook would see one step at a time).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch

from interp.errors import InputError, Unsupported


def delta_hook(deltas: dict[str, torch.Tensor], name: str, seen: dict[str, torch.Tensor] | None = None) -> Callable:
    """A hook that adds ``deltas[name]``, a zero tensor shaped like the site (made on the
    first call, with ``requires_grad``), so ``d metric / d delta`` is the site's gradient.
    ``seen[name]`` keeps the activation of the last call (per-step sites: the last call
    holds every step).  Keyed by the requested name: on a bridge a hook on an alias
    reports the canonical one."""

    def add_delta(x: torch.Tensor, hook) -> torch.Tensor:
        if seen is not None:
            seen[name] = x.detach()
        d = deltas.get(name)
        if d is None:
            d = deltas[name] = torch.zeros_like(x, requires_grad=True)
        return x + d

    add_delta.wants_grad = True  # type: ignore[attr-defined]  # backends that cannot differentiate refuse it
    return add_delta


def grad(
    value: torch.Tensor, inputs: list[torch.Tensor], *, allow_unused: bool = False, retain_graph: bool = False
) -> tuple:
    """``torch.autograd.grad``, with a model whose own forward overwrites activations in place
    (so no gradient can flow back through them) declined as such rather than crashing.
    retain_graph: keep the graph for another backward pass (one per output read)."""
    try:
        return torch.autograd.grad(value, inputs, allow_unused=allow_unused, retain_graph=retain_graph)
    except RuntimeError as e:
        if "modified by an inplace operation" not in str(e):
            raise
        raise Unsupported(
            "this model's forward overwrites activations in place, so gradients cannot flow back through "
            "them (gradient-based analyses decline; exact patching works)"
        ) from None


def site_gradients(
    model, tokens: torch.Tensor, metric: Callable[[torch.Tensor], torch.Tensor], names: Iterable[str]
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``metric(model(tokens))`` (a scalar) and its gradient with respect to each site.

    Works alike for whole-sequence and per-step sites: a zero tensor ``delta`` is added at
    each site (at every step, for per-step sites) and ``d metric / d delta`` is returned,
    shaped like the site's activation.  For a per-step site, position t of the gradient
    is the total derivative with respect to the state after step t (through all later
    steps).  Model parameters receive no gradient.
    """
    names = list(names)
    deltas: dict[str, torch.Tensor] = {}
    with torch.enable_grad():
        value = metric(model.run_with_hooks(tokens, fwd_hooks=[(n, delta_hook(deltas, n)) for n in names]))
        if value.numel() != 1:
            raise InputError(f"metric must return a scalar, got shape {tuple(value.shape)}")
        missing = [n for n in names if n not in deltas]
        if missing:
            raise InputError(f"sites {missing} were not reached in the forward pass")
        grads = grad(value, [deltas[n] for n in names], allow_unused=True)
    return value.detach(), {n: (g if g is not None else torch.zeros_like(deltas[n])) for n, g in zip(names, grads)}
