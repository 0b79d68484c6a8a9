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

from dataclasses import dataclass, field, replace
from typing import cast

import torch
from torch import nn

from interp.errors import InputError


def raw(module: nn.Module) -> nn.Module:
    """The plain torch module inside a bridge component."""
    while hasattr(module, "_original_component"):
        # nn.Module.__getattr__ is typed Tensor | Module; a bridge's original component is a module
        module = cast(nn.Module, module._original_component)
    return module


@dataclass(frozen=True)
class NormGain:
    """A normalisation's parameters: ``gain`` / ``bias`` ``[d_model]`` (None if absent; a
    Gemma-style ``1 + w`` gain is already offset) and whether it centres (LayerNorm)."""

    gain: torch.Tensor | None
    bias: torch.Tensor | None
    centers: bool


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
    ln1: list[nn.Module] = field(repr=False)
    ln2: list[nn.Module | None] = field(repr=False)
    ln_final: nn.Module | None = field(repr=False)
    gains: dict = field(repr=False, default_factory=dict)  # "ln1" / "ln2": [NormGain] per layer, "ln_final"
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
        h = self.ln1[layer](x)
        return torch.einsum("bphd,hde->bphe", h.to(W.dtype), W) + b

    def head_outputs(self, layer: int, z: torch.Tensor) -> torch.Tensor:
        """Each head's write to the residual stream ``z @ W_O`` (no bias): z ``[..., H, d_head]``
        -> ``[..., H, d_model]``."""
        if z.shape[-2] != self.n_heads:  # einsum would broadcast one head against every W_O
            raise InputError(f"z must hold all {self.n_heads} heads, got {z.shape[-2]}")
        return torch.einsum("...he,hed->...hd", z.to(self.W_O.dtype), self.W_O[layer])


def _tensor(getter, shape, device) -> torch.Tensor:
    """A bridge property as float32, or zeros of ``shape`` where the model has no such parameter."""
    try:
        value = getter()
    except (AttributeError, ValueError, RuntimeError):
        value = None
    if value is None:
        return torch.zeros(shape, device=device)
    return value.detach().float()


def _gain(norm) -> NormGain:
    if norm is None or getattr(norm, "w", None) is None:
        return NormGain(None, None, False)
    w = norm.w.detach().float()
    if getattr(norm, "uses_weight_offset", False):  # Gemma-style: the scale is 1 + w
        w = w + 1.0
    b = getattr(norm, "b", None)
    return NormGain(w, None if b is None else b.detach().float(), not bool(getattr(norm, "uses_rms_norm", False)))


def _fold_in(w: torch.Tensor, b: torch.Tensor, g: NormGain) -> tuple[torch.Tensor, torch.Tensor]:
    """Weights ``[..., d_model, x]`` and bias ``[..., x]`` reading ``norm(x)``, with its gain folded in."""
    if g.gain is None:
        return w, b
    if g.bias is not None:
        b = b + torch.einsum("d,...dx->...x", g.bias, w)
    w = w * g.gain[:, None]
    if g.centers:
        w = w - w.mean(-2, keepdim=True)
    return w, b


def read_weights(model, *, fold_ln: bool = False) -> Weights:
    """The :class:`Weights` of a transformer ``model`` (see :meth:`interp.Model.weights`)."""
    model.require_attention("per-head weights")
    bridge = model.module
    if not all(hasattr(bridge, a) for a in ("W_Q", "blocks")):
        raise InputError(
            f"{model.cfg.name or 'this model'} exposes no per-head weights (W_Q / W_K / W_V / W_O): "
            "only TransformerLens bridge models do"
        )
    L, H, Hkv = model.cfg.n_layers, model.cfg.n_heads, model.cfg.n_kv_heads
    d, dh = model.cfg.d_model, model.cfg.d_head
    dev = model.device
    with torch.no_grad():
        W = {c: getattr(bridge, f"W_{c}").detach().float() for c in "QKVO"}
        b = {
            "Q": _tensor(lambda: bridge.b_Q, (L, H, dh), dev),
            "K": _tensor(lambda: bridge.b_K, (L, Hkv, dh), dev),
            "V": _tensor(lambda: bridge.b_V, (L, Hkv, dh), dev),
            "O": _tensor(lambda: bridge.b_O, (L, d), dev),
        }
        W_E = bridge.W_E.detach().float()
        W_U = bridge.W_U.detach().float()
        b_U = _tensor(lambda: bridge.b_U, (model.cfg.d_vocab,), dev)
    blocks = list(bridge.blocks)
    gains = {
        "ln1": [_gain(getattr(bl, "ln1", None)) for bl in blocks],
        "ln2": [_gain(getattr(bl, "ln2", None)) for bl in blocks],
        "ln_final": _gain(getattr(bridge, "ln_final", None)),
    }
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
        [raw(bl.ln1) for bl in blocks],
        [raw(bl.ln2) if hasattr(bl, "ln2") else None for bl in blocks],
        raw(bridge.ln_final) if hasattr(bridge, "ln_final") else None,
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
    """What turns the last residual stream into logits, ``logits = norm(x) @ W_U + b_U`` (then
    the final soft-cap, if the model has one): the model's own final norm ``module``, the
    unembedding ``W_U [d_model, d_vocab]`` / ``b_U [d_vocab]``, and the norm as an affine map
    (``centers`` for LayerNorm, ``gain`` / ``bias`` ``[d_model]``, ``eps``) so its scale can be
    frozen (``affine`` is False for a norm of an unknown kind: only the recomputed form then)."""

    module: nn.Module
    W_U: torch.Tensor
    b_U: torch.Tensor
    centers: bool
    gain: torch.Tensor | None
    bias: torch.Tensor | None
    eps: float
    softcap: float | None = None
    affine: bool = True

    def cap(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.tanh(logits / self.softcap) * self.softcap if self.softcap else logits

    def logits(self, x: torch.Tensor, cols: list[int] | None = None) -> torch.Tensor:
        """``[..., d_vocab]`` (or ``[..., len(cols)]``: only those vocabulary columns) from
        residuals ``x [..., d_model]``, the norm's statistics recomputed from ``x`` (the model's
        own final norm module)."""
        W_U, b_U = (self.W_U, self.b_U) if cols is None else (self.W_U[:, cols], self.b_U[cols])
        return self.cap(self.module(x.to(_dtype(self.module))).float() @ W_U + b_U)

    def scale(self, x: torch.Tensor) -> torch.Tensor:
        """The norm's scale ``[..., 1]`` on ``x`` (1 / std or 1 / rms)."""
        x = x.float()
        if self.centers:
            x = x - x.mean(-1, keepdim=True)
        return (x.pow(2).mean(-1, keepdim=True) + self.eps).rsqrt()

    def normed(self, x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """The norm with a given (frozen) ``scale`` ``[..., 1]``: linear in ``x`` up to the bias."""
        if not self.affine:
            raise InputError(
                "this model's final norm is of a kind whose scale cannot be frozen; use the recomputed norm"
            )
        x = x.float()
        if self.centers:
            x = x - x.mean(-1, keepdim=True)
        y = x * scale
        if self.gain is not None:
            y = y * self.gain
        return y + self.bias if self.bias is not None else y

    def logits_frozen(self, x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """Logits with the norm's scale frozen at ``scale`` (e.g. the final layer's)."""
        return self.cap(self.normed(x, scale) @ self.W_U + self.b_U)


def _dtype(module: nn.Module) -> torch.dtype:
    p = next(module.parameters(), None)
    return p.dtype if p is not None else torch.float32


def _affine(module: nn.Module) -> tuple[bool, torch.Tensor | None, torch.Tensor | None, float, bool]:
    """(centers, gain, bias, eps, known) of a final norm module."""
    name = type(module).__name__
    weight = getattr(module, "weight", None)
    gain = weight.detach().float() if isinstance(weight, torch.Tensor) else None
    if isinstance(module, nn.LayerNorm):
        b = module.bias.detach().float() if module.bias is not None else None
        return True, gain, b, float(module.eps), True
    eps = getattr(module, "variance_epsilon", None)
    if eps is None:
        eps = getattr(module, "eps", None)
    if "RMSNorm" in name or isinstance(module, nn.RMSNorm):
        if eps is None:
            eps = torch.finfo(torch.float32).eps
        if gain is not None and "Gemma" in name:  # Gemma: the scale is 1 + w
            gain = gain + 1.0
        return False, gain, None, float(eps), True
    return False, gain, None, float(eps or 1e-5), False


def readout(model) -> Readout:
    """The :class:`Readout` of any family (transformers, recurrent and state-space models)."""
    module = model.module
    if hasattr(module, "ln_final") and hasattr(module, "unembed") and not hasattr(module, "W_U"):  # interp.recurrent
        norm, unembed = module.ln_final, module.unembed
        W_U, b_U = unembed.weight.detach().float().T, unembed.bias.detach().float()
        cap = None
    elif hasattr(module, "ln_final") and hasattr(module, "W_U"):  # a TransformerBridge (any family)
        norm = raw(module.ln_final)
        W_U = module.W_U.detach().float()
        b_U = _tensor(lambda: module.b_U, (model.cfg.d_vocab,), model.device)
        hf_cfg = getattr(getattr(module, "original_model", None), "config", None)
        cap = getattr(hf_cfg, "final_logit_softcapping", None) if hf_cfg is not None else None
    else:
        raise InputError(
            f"{model.cfg.name or 'this model'} has no known final norm and unembedding "
            "(custom modules: the lens needs them named)"
        )
    centers, gain, bias, eps, known = _affine(norm)
    out = Readout(norm, W_U, b_U, centers, gain, bias, eps, float(cap) if cap else None, known)
    if known:  # check the affine form against the module on a probe
        x = torch.randn(3, model.cfg.d_model, generator=torch.Generator().manual_seed(0)).to(model.device)
        with torch.no_grad():
            want = norm(x.to(_dtype(norm))).float()
            got = out.normed(x, out.scale(x))
        if (got - want).abs().max() > 1e-3 * (1 + want.abs().max()):
            out.affine = False
    return out
