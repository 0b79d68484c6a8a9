"""Per-head weights and norms of a TransformerBridge, for analyses that rebuild a head's inputs.

Path patching and edge attribution give each receiving head its own copy of the residual
stream, so they recompute that head's query / key / value from a residual with the
bridge's own LayerNorm and the head's slice of ``W_Q`` / ``W_K`` / ``W_V`` (TransformerLens
conventions: ``W_Q [n_layers, n_heads, d_model, d_head]``, ``W_O [n_layers, n_heads, d_head,
d_model]``).  :func:`heads_of` checks on a probe that this reproduces the model's own
``hook_q/k/v`` (so a bridge that folds weights or rotates queries is refused, not mis-read).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


def raw(module: nn.Module) -> nn.Module:
    """The plain torch module inside a bridge component."""
    while hasattr(module, "_original_component"):
        module = module._original_component
    return module


@dataclass
class Heads:
    """Attention weights of every layer, detached (no parameter gradients)."""

    W: dict[str, torch.Tensor]     # "Q"/"K"/"V": [L, H, d, dh]; "O": [L, H, dh, d]
    b: dict[str, torch.Tensor]     # "Q"/"K"/"V": [L, H, dh]; "O": [L, d]
    ln1: list[nn.Module]
    ln2: list[nn.Module | None]
    ln_final: nn.Module
    n_layers: int
    n_heads: int

    def project(self, layer: int, component: str, x: torch.Tensor) -> torch.Tensor:
        """Per-head ``component`` (q / k / v) from per-head residual copies ``x [batch, pos, heads, d_model]``:
        ``[batch, pos, heads, d_head]``."""
        if x.shape[2] != self.n_heads:
            raise ValueError(f"x must hold one residual copy per head ({self.n_heads}), got {x.shape[2]}")
        c = component.upper()
        h = self.ln1[layer](x)
        return torch.einsum("bphd,hde->bphe", h, self.W[c][layer]) + self.b[c][layer]

    def outputs(self, layer: int, z: torch.Tensor) -> torch.Tensor:
        """Each head's write to the residual stream, ``z @ W_O`` (no bias): ``[batch, pos, heads, d_model]``."""
        if z.shape[2] != self.n_heads:   # einsum would broadcast a single head against every W_O
            raise ValueError(f"z must hold all {self.n_heads} heads, got {z.shape[2]}")
        return torch.einsum("bphe,hed->bphd", z, self.W["O"][layer])


def heads_of(model, check: bool = True) -> Heads:
    """The :class:`Heads` of a transformer ``model`` (raises for RNNs / SSMs and unsupported bridges)."""
    model.require_attention("this analysis")
    bridge = model.module
    try:
        W = {c: getattr(bridge, f"W_{c}").detach() for c in "QKVO"}
        b = {c: getattr(bridge, f"b_{c}").detach() for c in "QKVO"}
    except AttributeError as e:
        raise ValueError(f"{model.cfg.name or 'this model'} does not expose per-head weights W_Q/W_K/W_V/W_O ({e})") from None
    if W["K"].shape[1] != W["Q"].shape[1]:
        raise ValueError("grouped-query attention (n_key_value_heads < n_heads) is not supported by per-head "
                         "receivers; patch by site instead")
    blocks = list(bridge.blocks)
    heads = Heads(W, b, [raw(bl.ln1) for bl in blocks],
                  [raw(bl.ln2) if hasattr(bl, "ln2") else None for bl in blocks], raw(bridge.ln_final),
                  model.cfg.n_layers, model.cfg.n_heads)
    if check:
        _check(model, heads)
    return heads


def _check(model, heads: Heads) -> None:
    probe = torch.arange(min(5, model.cfg.n_ctx), device=model.device)[None] % model.cfg.d_vocab
    names = [f"blocks.{l}.hook_resid_pre" for l in range(heads.n_layers)] + \
            [f"blocks.{l}.attn.hook_{c}" for l in range(heads.n_layers) for c in "qkvz"] + \
            [f"blocks.{l}.hook_attn_out" for l in range(heads.n_layers)]
    with torch.no_grad():
        _, cache = model.run_with_cache(probe, names=names)
        for l in range(heads.n_layers):
            x = cache[f"blocks.{l}.hook_resid_pre"][:, :, None].expand(-1, -1, heads.n_heads, -1)
            for c in "qkv":
                got = heads.project(l, c, x)
                want = cache[f"blocks.{l}.attn.hook_{c}"]
                if got.shape != want.shape or (got - want).abs().max() > 1e-3 * (1 + want.abs().max()):
                    raise ValueError(f"cannot rebuild hook_{c} of layer {l} from LayerNorm and W_{c.upper()} on this "
                                     "bridge (folded weights or rotary queries?): per-head receivers are unsupported")
            out = heads.outputs(l, cache[f"blocks.{l}.attn.hook_z"]).sum(2) + heads.b["O"][l]
            attn = cache[f"blocks.{l}.hook_attn_out"]
            if (out - attn).abs().max() > 1e-3 * (1 + attn.abs().max()):
                raise ValueError(f"the heads' outputs z @ W_O do not add up to hook_attn_out in layer {l} on this "
                                 "bridge: per-head outputs are unsupported")
