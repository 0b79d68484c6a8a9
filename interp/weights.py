"""The one reader of a model's weights: per-head attention matrices, norms, embedding and
unembedding, for every architecture the loader takes (native and Hugging Face bridges:
GPT-2, Llama-family with grouped-query attention and no biases, ...; recurrent models
have only the readout).

Conventions (TransformerLens): ``W_Q [L, H, d_model, d_head]``, ``W_K`` / ``W_V``
``[L, H_kv, d_model, d_head]`` (``H_kv`` = key-value heads; query head ``h`` reads
key-value head ``h // (H / H_kv)``), ``W_O [L, H, d_head, d_model]``, biases ``b_Q [L, H,
d_head]``, ``b_K`` / ``b_V`` ``[L, H_kv, d_head]``, ``b_O [L, d_model]`` (zeros where the model
has none), ``W_E [d_vocab, d_model]``, ``W_U [d_model, d_vocab]``, ``b_U [d_vocab]``.
Everything is detached float32 on the model's device.

``fold_ln=True`` folds each norm's gain into the weights that read its output (and, for
LayerNorm, centres them over d_model, since the norm removes the input's mean; the norm's
bias moves into the reader's bias), as TransformerLens's ``fold_ln`` does: then
``norm(x) @ W == (x / scale) @ W_folded`` up to the bias.  Rotary embeddings are not in
``W_Q`` / ``W_K`` (they act on queries and keys per position).
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field, replace
from typing import cast

import torch
from torch import nn

from interp import norms
from interp.errors import InputError, Unsupported
from interp.norms import Affine
from interp.sharding import onloaded


def raw(module: nn.Module) -> nn.Module:
    """The plain torch module inside a bridge component."""
    while hasattr(module, "_original_component"):
        # nn.Module.__getattr__ is typed Tensor | Module; a bridge's original component is a module
        module = cast(nn.Module, module._original_component)
    return module


@dataclass
class Weights:
    """Attention weights of every layer (see the module docstring for shapes), the norm
    modules that feed them (``ln1`` / ``ln2`` per layer, ``ln_final``; the model's own
    modules, so calling them is the model's arithmetic) and the (un)embedding."""

    W_Q: torch.Tensor
    W_K: torch.Tensor
    W_V: torch.Tensor
    W_O: torch.Tensor
    b_Q: torch.Tensor
    b_K: torch.Tensor
    b_V: torch.Tensor
    b_O: torch.Tensor
    W_E: torch.Tensor
    W_U: torch.Tensor
    b_U: torch.Tensor
    ln1: list[nn.Module | None] = field(repr=False)
    ln2: list[nn.Module | None] = field(repr=False)
    ln_final: nn.Module | None = field(repr=False)
    #: "ln1" / "ln2" / "post_attn": per layer the norm's :class:`interp.norms.Affine` (None if absent); "ln_final"
    gains: dict = field(repr=False, default_factory=dict)
    folded: bool = False

    @property
    def n_layers(self) -> int:
        return self.W_Q.shape[0]

    @property
    def n_heads(self) -> int:
        return self.W_Q.shape[1]

    @property
    def n_kv_heads(self) -> int:
        return self.W_K.shape[1]

    @property
    def group(self) -> int:
        """Query heads per key-value head (1 without grouped-query attention)."""
        return self.n_heads // self.n_kv_heads

    def kv_head(self, head: int) -> int:
        """The key-value head query head ``head`` reads."""
        return int(head) // self.group

    def per_query_head(self, name: str) -> torch.Tensor:
        """``W_K`` / ``W_V`` / ``b_K`` / ``b_V`` repeated to one entry per query head ``[L, H, ...]``."""
        w = getattr(self, name)
        return w if w.shape[1] == self.n_heads else w.repeat_interleave(self.group, dim=1)

    def project(self, layer: int, component: str, x: torch.Tensor) -> torch.Tensor:
        """Per-head ``q`` / ``k`` / ``v`` from per-head residual copies ``x [batch, pos, n, d_model]``
        (n = query heads for q, key-value heads for k and v): ``[batch, pos, n, d_head]``, before
        any rotary embedding, with the layer's own norm."""
        c = component.upper()
        W, b = getattr(self, f"W_{c}")[layer], getattr(self, f"b_{c}")[layer]
        if x.shape[2] != W.shape[0]:
            raise InputError(
                f"{component} needs one residual copy per {'query' if c == 'Q' else 'key-value'} head "
                f"({W.shape[0]}), got {x.shape[2]}"
            )
        if self.folded:
            raise InputError("project() rebuilds inputs with the model's own norms: use unfolded weights")
        norm = self.ln1[layer]
        # (a post-norm block's attention reads the raw residual; a norm runs in its own dtype)
        h = norm(x.to(_dtype(norm))) if norm is not None else x
        return torch.einsum("bphd,hde->bphe", h.to(W.dtype), W) + b

    def head_outputs(self, layer: int, z: torch.Tensor) -> torch.Tensor:
        """Each head's write to the residual stream: z ``[..., H, d_head]`` -> ``[..., H,
        d_model]``, ``z_h @ W_O`` (no bias); through a post-attention norm, ``norm`` of it at the
        norm's scale of this run (the scale of the heads' sum plus the bias), so that the writes
        plus :meth:`attn_bias` add up to the attention output exactly."""
        if z.shape[-2] != self.n_heads:  # einsum would broadcast one head against every W_O
            raise InputError(f"z must hold all {self.n_heads} heads, got {z.shape[-2]}")
        out = torch.einsum("...he,hed->...hd", z.to(self.W_O.dtype), self.W_O[layer])
        post = self.gains.get("post_attn", [None] * self.n_layers)[layer]
        if post is None:
            return out
        scale = post.scale(out.sum(-2) + self.b_O[layer])[..., None, :]
        return post.linear(out, scale)

    def attn_bias(self, layer: int, z: torch.Tensor) -> torch.Tensor:
        """The attention output's part that is no head's: ``b_O`` ``[..., d_model]`` (through a
        post-attention norm: its share at this run's scale, plus the norm's own bias)."""
        post = self.gains.get("post_attn", [None] * self.n_layers)[layer]
        b = self.b_O[layer].expand(*z.shape[:-2], -1)
        if post is None:
            return b
        heads = torch.einsum("...he,hed->...d", z.to(self.W_O.dtype), self.W_O[layer])
        out = post.linear(b, post.scale(heads + b))
        return out + post.bias.to(out.device) if post.bias is not None else out


def _tensor(getter, shape, device) -> torch.Tensor:
    """A bridge property as float32, or zeros of ``shape`` where the model has no such parameter."""
    try:
        value = getter()
    except (AttributeError, ValueError, RuntimeError):
        value = None
    if value is None:
        return torch.zeros(shape, device=device)
    return value.detach().float()


def _fold_in(w: torch.Tensor, b: torch.Tensor, g: Affine | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Weights ``[..., d_model, x]`` and bias ``[..., x]`` reading ``norm(x)``, with its gain folded in."""
    if g is None or g.gain is None:
        return w, b
    if g.bias is not None:
        b = b + torch.einsum("d,...dx->...x", g.bias, w)
    w = w * g.gain[:, None]
    if g.centers:
        w = w - w.mean(-2, keepdim=True)
    return w, b


def _per_layer(stacked: torch.Tensor, attn: list[int], n_layers: int) -> torch.Tensor:
    """A bridge's per-layer stack over the attention layers (a hybrid stacks only those) as one
    entry per layer, zeros in layers without attention."""
    if stacked.shape[0] == n_layers:
        return stacked
    if stacked.shape[0] != len(attn):
        raise RuntimeError(f"a stack of {stacked.shape[0]} layers for {len(attn)} attention layers")
    out = stacked.new_zeros((n_layers, *stacked.shape[1:]))
    out[attn] = stacked
    return out


@contextlib.contextmanager
def _quiet_hybrid_stacking():
    """TransformerLens logs a warning each time it stacks a hybrid's attention layers only, which
    :func:`_per_layer` expects and handles."""
    log = logging.getLogger()
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


def read_weights(model, *, fold_ln: bool = False) -> Weights:
    """The :class:`Weights` of a transformer ``model`` (see :meth:`interp.Model.weights`).  A model
    offloaded by accelerate (:mod:`interp.sharding`) is onloaded for the read (all of it at once)."""
    model.require_attention("per-head weights")
    with onloaded(model.module):
        return _read_weights(model, fold_ln)


def _read_weights(model, fold_ln: bool) -> Weights:
    bridge = model.module
    if not all(hasattr(bridge, a) for a in ("W_Q", "blocks")):
        raise InputError(
            f"{model.cfg.name or 'this model'} exposes no per-head weights (W_Q / W_K / W_V / W_O): "
            "only TransformerLens bridge models do"
        )
    L, H, Hkv = model.cfg.n_layers, model.cfg.n_heads, model.cfg.n_kv_heads
    d, dh = model.cfg.d_model, model.cfg.d_head
    dev = model.device
    attn = list(model.cfg.attn_layers or ())
    with torch.no_grad(), _quiet_hybrid_stacking():
        W = {c: _per_layer(getattr(bridge, f"W_{c}").detach().float(), attn, L) for c in "QKVO"}
        b = {
            "Q": _per_layer(_tensor(lambda: bridge.b_Q, (len(attn), H, dh), dev), attn, L),
            "K": _per_layer(_tensor(lambda: bridge.b_K, (len(attn), Hkv, dh), dev), attn, L),
            "V": _per_layer(_tensor(lambda: bridge.b_V, (len(attn), Hkv, dh), dev), attn, L),
            "O": _per_layer(_tensor(lambda: bridge.b_O, (len(attn), d), dev), attn, L),
        }
        W_E = bridge.W_E.detach().float()
        W_U = bridge.W_U.detach().float()
        b_U = _tensor(lambda: bridge.b_U, (model.cfg.d_vocab,), dev)
    blocks = list(bridge.blocks)

    def norm(owner, name: str) -> nn.Module | None:
        module = getattr(owner, name, None)
        return raw(module) if module is not None else None

    def affine(module: nn.Module | None) -> Affine | None:
        return norms.read(module, d, dev)

    post_attn = [affine(norm(bl, "ln1_post")) for bl in blocks]
    gains = {
        "ln1": [affine(norm(bl, "ln1")) for bl in blocks],
        "ln2": [affine(norm(bl, "ln2")) for bl in blocks],
        "post_attn": post_attn,
        "ln_final": affine(norm(bridge, "ln_final")),
    }
    if any(norm(bl, "ln1_post") is not None and g is None for bl, g in zip(blocks, post_attn)):
        raise Unsupported(
            "its post-attention norm is neither a LayerNorm nor an RMSNorm, so heads' outputs cannot be split"
        )
    out = Weights(
        W["Q"],
        W["K"],
        W["V"],
        W["O"],
        b["Q"],
        b["K"],
        b["V"],
        b["O"],
        W_E,
        W_U,
        b_U,
        [norm(bl, "ln1") for bl in blocks],
        [norm(bl, "ln2") for bl in blocks],
        norm(bridge, "ln_final"),
        gains,
    )
    if W["K"].shape[1] != Hkv:
        raise InputError(f"W_K has {W['K'].shape[1]} key-value heads but the config says {Hkv}")
    return fold(out) if fold_ln else out


def fold(w: Weights) -> Weights:
    """``w`` with every norm's gain folded into the weights that read it (see the module docstring)."""
    if w.folded:
        return w
    new: dict[str, torch.Tensor] = {}
    for c in "QKV":
        Ws, bs = [], []
        for l in range(w.n_layers):
            a, bb = _fold_in(getattr(w, f"W_{c}")[l], getattr(w, f"b_{c}")[l], w.gains["ln1"][l])
            Ws.append(a)
            bs.append(bb)
        new[f"W_{c}"], new[f"b_{c}"] = torch.stack(Ws), torch.stack(bs)
    new["W_U"], new["b_U"] = _fold_in(w.W_U, w.b_U, w.gains["ln_final"])
    return replace(
        w,
        W_Q=new["W_Q"],
        W_K=new["W_K"],
        W_V=new["W_V"],
        b_Q=new["b_Q"],
        b_K=new["b_K"],
        b_V=new["b_V"],
        W_U=new["W_U"],
        b_U=new["b_U"],
        folded=True,
    )


@dataclass
class Readout:
    """What turns the last residual stream into logits, ``logits = cap(norm(x) @ W_U + b_U)``:
    the model's own final norm ``module``, the unembedding ``W_U [d_model, d_vocab]`` / ``b_U
    [d_vocab]`` (with any fixed logit scaling of the family folded in: Cohere's ``logit_scale``,
    Granite's ``logits_scaling``), the final soft-cap (Gemma-2), and the norm as an affine map
    ``norm`` (:class:`interp.norms.Affine`; None for a norm of an unknown kind: only the
    recomputed form then).  :func:`readout` checks it against the model's own logits."""

    module: nn.Module
    W_U: torch.Tensor
    b_U: torch.Tensor
    norm: Affine | None
    softcap: float | None = None

    def cap(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.tanh(logits / self.softcap) * self.softcap if self.softcap else logits

    def logits(self, x: torch.Tensor, cols: list[int] | None = None) -> torch.Tensor:
        """``[..., d_vocab]`` (or ``[..., len(cols)]``: only those vocabulary columns) from
        residuals ``x [..., d_model]``, the norm's statistics recomputed from ``x`` (the model's
        own final norm module)."""
        W_U, b_U = (self.W_U, self.b_U) if cols is None else (self.W_U[:, cols], self.b_U[cols])
        return self.cap(self.module(x.to(_dtype(self.module))).float() @ W_U + b_U)

    def _affine(self) -> Affine:
        if self.norm is None:
            raise Unsupported(
                "its final norm is neither a LayerNorm nor an RMSNorm, so its scale cannot be frozen; "
                "use the recomputed norm"
            )
        return self.norm

    def scale(self, x: torch.Tensor) -> torch.Tensor:
        """The norm's scale ``[..., 1]`` on ``x`` (1 / std or 1 / rms)."""
        return self._affine().scale(x)

    def normed(self, x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """The norm with a given (frozen) ``scale`` ``[..., 1]``: linear in ``x`` up to the bias."""
        return self._affine()(x, scale)

    def logits_frozen(self, x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """Logits with the norm's scale frozen at ``scale`` (e.g. the final layer's)."""
        return self.cap(self.normed(x, scale) @ self.W_U + self.b_U)


def reproduce_tol(dtype: torch.dtype) -> float:
    """Relative tolerance of a check that a recomputation reproduces the model's own logits (the
    readout, the patching engines): float32 rounding, or a half-precision model's (bfloat16 keeps
    8 bits of mantissa: ~4e-3 per operation, which compound over the layers)."""
    return 1e-3 if dtype in (torch.float32, torch.float64) else 3e-2


def _dtype(module: nn.Module) -> torch.dtype:
    p = next(module.parameters(), None)
    return p.dtype if p is not None else torch.float32


def _unembed_module(module: nn.Module) -> nn.Module | None:
    """The Hugging Face unembedding inside a loaded model's module (the generic path's ``HFLM``)."""
    path = getattr(module, "_unembed", None)
    hf = getattr(module, "original_model", None)
    return hf.get_submodule(path) if isinstance(path, str) and hf is not None else None


#: the config attributes families name a final logit soft-cap by
FINAL_SOFTCAPS = ("final_logit_softcapping", "logits_soft_cap", "output_logit_soft_cap")
#: fixed multipliers some families apply to their logits: config attribute -> how it applies
LOGIT_SCALES = {"logit_scale": lambda v: v, "logits_scaling": lambda v: 1.0 / v}


def readout(model) -> Readout:
    """The :class:`Readout` of any family (transformers, recurrent and state-space models),
    checked once on a probe: the model's final residual read through it must give the model's
    own logits (else :class:`~interp.errors.Unsupported`: the lens and DLA decline rather than
    mislead)."""
    cached = getattr(model, "_readout", None)
    if cached is not None:
        return cached
    module = model.module
    if hasattr(module, "ln_final") and hasattr(module, "unembed") and not hasattr(module, "W_U"):  # interp.recurrent
        norm, unembed = module.ln_final, module.unembed
        W_U, b_U = unembed.weight.detach().float().T, unembed.bias.detach().float()
        cap = None
    elif hasattr(module, "ln_final") and hasattr(module, "W_U"):  # a TransformerBridge (any family)
        norm = raw(module.ln_final)
        with onloaded(getattr(module, "unembed", None), _unembed_module(module)):  # offloaded: read it loaded
            W_U = module.W_U.detach().float()
            b_U = _tensor(lambda: module.b_U, (model.cfg.d_vocab,), model.device)
        hf_cfg = getattr(getattr(module, "original_model", None), "config", None)
        # the final soft-cap's names: Gemma-2 / 3, RecurrentGemma, xLSTM
        caps = [getattr(hf_cfg, a, None) for a in FINAL_SOFTCAPS] if hf_cfg else []
        cap = next((c for c in caps if c), None)
        for attr, factor in LOGIT_SCALES.items():
            value = getattr(hf_cfg, attr, None) if hf_cfg is not None else None
            if isinstance(value, (int, float)) and value not in (0, 1):
                W_U, b_U = W_U * factor(float(value)), b_U * factor(float(value))
    else:
        raise Unsupported(
            f"{model.cfg.name or 'this model'} names no final norm and unembedding "
            "(custom modules: the lens needs them named)"
        )
    out = Readout(norm, W_U, b_U, norms.read(norm, model.cfg.d_model, model.device), float(cap) if cap else None)
    if "final_resid" in model.site_kinds():
        probe = (torch.arange(min(6, model.cfg.n_ctx), device=model.device)[None] * 5 + 1) % model.cfg.d_vocab
        with torch.no_grad():
            logits, cache = model.run_with_cache(probe, names=[model.site("final_resid")])
            got = out.logits(cache[model.site("final_resid")])
        assert logits is not None  # run_with_cache returns logits unless asked not to
        if (got - logits.float()).abs().max() > reproduce_tol(model.dtype) * (1 + logits.abs().max()):
            raise Unsupported(
                "its final norm and unembedding do not reproduce its logits (a family-specific step "
                "between them that the workbench does not know)"
            )
    model._readout = out
    return out
