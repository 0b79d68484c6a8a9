"""How each block of a model is put together, read from the model itself (its hook sites, its
norm modules, and one probe), never from a family's name: whether the layer has attention
heads and an MLP, whether the MLP reads the block's input beside attention (a parallel block:
GPT-J, GPT-NeoX, Falcon, Phi, Cohere) or the residual after attention, which norms sit before
and after each sublayer, and where the MLP's input can be replaced for one reader only
(:attr:`Block.mlp_input`).  Analyses that build on the residual stream's decomposition (edge
attribution, path patching, direct logit attribution) ask this, not the family.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from interp import sites as S
from interp.weights import raw


@dataclass(frozen=True)
class Block:
    """One layer's structure.  ``parallel``: the MLP reads the block's input (beside attention),
    not the residual after attention.  ``pre_norm``: a norm before attention (``ln1``);
    ``post_attn_norm`` / ``post_mlp_norm``: a norm on the sublayer's output before the residual
    add (sandwich or post-norm blocks).  ``mlp_input``: how one reader can feed the MLP its own
    input — ``"mlp_in"`` (the hook of the residual the MLP's norm reads, which only the MLP
    reads) or ``"mlp_input"`` (the hook of the MLP's input after its norm: ``mlp_norm``, the
    model's own norm module or None, must then be applied to the residual); None without an MLP
    or when neither hook exists."""

    layer: int
    attention: bool
    mlp: bool
    parallel: bool
    pre_norm: bool
    post_attn_norm: bool
    post_mlp_norm: bool
    mlp_input: str | None
    mlp_norm: nn.Module | None = None


def blocks(model) -> tuple[Block, ...]:
    """The :class:`Block` of every layer (read once per model)."""
    cached = getattr(model, "_blocks", None)
    if cached is not None:
        return cached
    attn = set(model.cfg.attn_layers or ())
    bridge_blocks = list(getattr(model.module, "blocks", []) or [])
    out = []
    for l in range(model.cfg.n_layers):
        bl = bridge_blocks[l] if l < len(bridge_blocks) else None
        has = lambda name, bl=bl: bl is not None and getattr(bl, name, None) is not None
        mlp = model.has_site(S.kind("mlp_out").hook(l))
        parallel = mlp and l in attn and _reads_block_input(model, l)
        mlp_input, mlp_norm = None, None
        if mlp and model.has_site(S.kind("mlp_in").hook(l)):
            mlp_input = "mlp_in"
        elif mlp and model.has_site(S.kind("mlp_input").hook(l)):
            mlp_input = "mlp_input"
            # the norm between the residual and the MLP: its own (ln2), the shared one of a parallel
            # block (ln1), or none (post-norm blocks read the residual itself)
            norm = getattr(bl, "ln2", None) if has("ln2") else (getattr(bl, "ln1", None) if parallel else None)
            mlp_norm = raw(norm) if norm is not None else None
        out.append(
            Block(
                layer=l,
                attention=l in attn,
                mlp=mlp,
                parallel=parallel,
                pre_norm=has("ln1"),
                post_attn_norm=has("ln1_post"),
                post_mlp_norm=has("ln2_post"),
                mlp_input=mlp_input,
                mlp_norm=mlp_norm,
            )
        )
    model._blocks = tuple(out)
    return model._blocks


def _reads_block_input(model, layer: int) -> bool:
    """Whether the MLP of ``layer`` reads the block's input rather than the residual after
    attention: a change of the attention output must not reach the MLP's input."""
    probe = (torch.arange(min(5, model.cfg.n_ctx), device=model.device)[None] * 3 + 1) % model.cfg.d_vocab
    attn_out = S.kind("attn_out").hook(layer)
    mlp_in = S.kind("mlp_input").hook(layer)
    if not (model.has_site(attn_out) and model.has_site(mlp_in)):
        return False
    with torch.no_grad():
        _, base = model.run_with_cache(probe, names=[mlp_in])
        _, moved = model.run_with_cache(probe, names=[mlp_in], fwd_hooks=[(attn_out, lambda x, hook: x + 1.0)])
    return bool(torch.equal(base[mlp_in], moved[mlp_in]))
