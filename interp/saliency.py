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


def _ssm_block(model: Model, layer: int):
    from interp.errors import Unsupported
    from interp.recurrent.ssm import SSMBlock

    layer = model.check_layer(layer)
    blocks = getattr(model.module, "blocks", None)
    block = blocks[layer] if blocks is not None and layer < len(blocks) else None
    if not isinstance(block, SSMBlock):
        raise Unsupported(
            f"the hidden attention reads a selective SSM's scan (interp.recurrent.ssm.SSMBlock); layer {layer} of "
            f"{model.cfg.name or 'this model'} is {type(block).__name__ if block is not None else 'not such a block'}"
            " (token_saliency applies to every model)"
        )
    return block


def ssm_hidden_attention(model: Model, tokens: torch.Tensor, layer: int) -> torch.Tensor:
    """The selective scan of an SSM layer written as attention (Ali et al. 2024, "The Hidden Attention
    of Mamba Models"): ``alpha [channel, dest, src]`` with ``y_t = sum_{s<=t} alpha[:, t, s] * u_s +
    D * u_t`` exactly, where ``u`` is the scan's input, ``y`` its output (the ``hidden`` site) and
    ``alpha[e, t, s] = sum_n C[t, n] exp(A[e, n] (cum[t, e] - cum[s, e])) delta[s, e] B[s, n]``
    (``cum``: the running sum of the step sizes ``delta``).  One sequence; zero above the diagonal.
    Declines (Unsupported) for layers that are not the zoo's selective SSM blocks."""
    block = _ssm_block(model, layer)
    tokens = model.validate_tokens(tokens).reshape(1, -1)
    names = [model.site("delta", layer), model.site("B", layer), model.site("C", layer)]
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names, logits=False)
        delta, Bm, Cm = (cache[n][0].float() for n in names)  # [T, E], [T, N], [T, N]
        A = block.A.detach().float()  # [E, N]
        cum = delta.cumsum(0)  # [T, E]
        gap = (cum[:, None, :] - cum[None, :, :]).clamp_min(0)  # [t, s, E]: sum of delta over s < k <= t
        decay = torch.exp(gap.permute(2, 0, 1)[..., None] * A[:, None, None, :])  # [E, t, s, N]
        alpha = torch.einsum("tn,etsn,se,sn->ets", Cm, decay, delta, Bm)
        mask = torch.ones(tokens.shape[1], tokens.shape[1], dtype=torch.bool).tril()
    return alpha * mask


def ssm_read(model: Model, tokens: torch.Tensor, layer: int) -> torch.Tensor:
    """``[dest, src]``: what each position of an SSM layer reads from each earlier one, the mean over
    channels of ``|alpha|`` of :func:`ssm_hidden_attention`, each row divided by its sum (a
    distribution over sources, drawn like an attention pattern)."""
    read = ssm_hidden_attention(model, tokens, layer).abs().mean(0)
    return read / read.sum(-1, keepdim=True).clamp_min(torch.finfo(read.dtype).tiny)


def ssm_layers(model: Model) -> list[int]:
    """The layers whose block is a selective SSM (:func:`ssm_hidden_attention` applies to them)."""
    from interp.recurrent.ssm import SSMBlock

    blocks = getattr(model.module, "blocks", None) or []
    return [i for i, b in enumerate(blocks) if isinstance(b, SSMBlock)]
