"""Token-to-token saliency: what each position's output reads from each earlier input token, for
any model family, by gradients.  For an attention-free model (an RNN, LSTM, GRU or state-space
model) this stands in for an attention pattern: its state has no per-token weights to read, so the
standard per-position read is the gradient of the output at position t with respect to the input
embedding at each position s <= t (Simonyan et al. 2014's saliency, applied token by token).

``saliency[t, s] = || d logit_t(y_t) / d e_s ||_2``, where ``y_t`` is the model's top prediction at
``t`` and ``e_s`` the embedding of token ``s`` (the ``embed`` site, before any layer), normalised
over ``s`` so each row sums to 1: a ``[dest, src]`` matrix like an attention pattern, drawn by the
same views (:func:`interp.plots.attention.token_view_html`).  Causal models give exactly 0 for
``s > t``.
"""

from __future__ import annotations

import torch

from interp.errors import InputError
from interp.gradients import delta_hook, grad
from interp.model import Model


def token_saliency(model: Model, tokens: torch.Tensor, *, normalise: bool = True) -> torch.Tensor:
    """``[dest, src]`` saliency of one sequence (tokens ``[1, pos]`` or ``[pos]``): row ``t`` is
    the L2 norm over ``d_model`` of the gradient of logit(top prediction at t) at position t with
    respect to the embedding of each input position (divided by the row's sum if ``normalise``, so
    rows are distributions over sources; raw norms are in logit per unit of embedding otherwise).
    One forward pass and one backward pass per position; float32 on the CPU."""
    tokens = model.validate_tokens(tokens)
    if tokens.ndim == 2 and tokens.shape[0] != 1:
        raise InputError(f"token_saliency reads one sequence; got a batch of {tokens.shape[0]}")
    tokens = tokens.reshape(1, -1)
    name = model.site("embed")
    deltas: dict[str, torch.Tensor] = {}
    n = tokens.shape[1]
    rows = []
    with torch.enable_grad():
        logits = model.run_with_hooks(tokens, fwd_hooks=[(name, delta_hook(deltas, name))])[0]  # [pos, vocab]
        if name not in deltas:
            raise InputError(f"the embedding site {name!r} was not reached in the forward pass")
        top = logits.detach().argmax(-1)
        for t in range(n):
            (g,) = grad(logits[t, top[t]], [deltas[name]], retain_graph=t < n - 1)
            rows.append(g[0].float().norm(dim=-1).cpu())  # [src]
    sal = torch.stack(rows)  # [dest, src]
    if normalise:
        sal = sal / sal.sum(-1, keepdim=True).clamp_min(torch.finfo(sal.dtype).tiny)
    return sal
