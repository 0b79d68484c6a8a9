"""The one reader of normalisation layers: what a norm module computes, as an affine map of its
input once its scale is known, read from the module's behaviour rather than its class name.

Every family writes its own norm class (``LlamaRMSNorm``, ``Gemma3RMSNorm`` with a ``1 + w``
gain, ``CohereLayerNorm`` without bias, ``OlmoLayerNorm`` without parameters, ...).  Each is
one of two maps, with a gain ``g`` and bias ``b`` (either may be absent):

- LayerNorm: ``g * (x - mean(x)) / sqrt(var(x) + eps) + b``  (``centers``);
- RMSNorm:   ``g * x / sqrt(mean(x^2) + eps) + b``.

:func:`read` finds which by calling the module on random inputs (``eps`` from the module's
attribute, else the common values tried), recovers ``g`` and ``b`` from its outputs and
checks the fit on fresh inputs; a module that fits neither is ``None`` (an analysis that
needs the affine form then declines).  With the scale frozen (:meth:`Affine.scale` of one
run), the norm is linear up to its bias: that is how direct logit attribution, the frozen
lens and post-norm head outputs split a norm's output into the pieces of its input.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

EPS_TRIED = (1e-5, 1e-6, 1e-8, 1e-12)


@dataclass(frozen=True)
class Affine:
    """A norm as an affine map at a given scale: ``centers`` (LayerNorm), ``gain`` / ``bias``
    ``[d]`` (None if absent, Gemma's ``1 + w`` already added), ``eps``."""

    centers: bool
    gain: torch.Tensor | None
    bias: torch.Tensor | None
    eps: float

    def centred(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        return x - x.mean(-1, keepdim=True) if self.centers else x

    def scale(self, x: torch.Tensor) -> torch.Tensor:
        """The norm's scale ``[..., 1]`` on ``x`` (1 / std or 1 / rms)."""
        return (self.centred(x).pow(2).mean(-1, keepdim=True) + self.eps).rsqrt()

    def linear(self, x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """The norm's output without its bias at a given (frozen) ``scale``: linear in ``x``, so
        the norm of a sum is the sum of these pieces plus :attr:`bias`."""
        y = self.centred(x) * scale
        return y * self.gain.to(y.device) if self.gain is not None else y

    def __call__(self, x: torch.Tensor, scale: torch.Tensor | None = None) -> torch.Tensor:
        """The norm itself (at its own scale, or at ``scale``)."""
        y = self.linear(x, self.scale(x) if scale is None else scale)
        return y + self.bias.to(y.device) if self.bias is not None else y


def _dtype(module: nn.Module) -> torch.dtype:
    p = next(module.parameters(), None)
    return p.dtype if p is not None else torch.float32


def _float32(module: nn.Module) -> nn.Module:
    """A half-precision norm as a float32 copy (its parameters upcast exactly), so that its affine
    form is fitted exactly; the module itself when it is float32 already, or offloaded (``meta``
    parameters: then it is fitted on its own, rounded, outputs)."""
    if _dtype(module) in (torch.float32, torch.float64) or any(p.device.type == "meta" for p in module.parameters()):
        return module
    return copy.deepcopy(module).float()


def read(module: nn.Module | None, d_model: int, device=None) -> Affine | None:
    """The :class:`Affine` form of a norm module (None for no module, or one that is neither a
    LayerNorm nor an RMSNorm).  Exact up to float32 rounding: the fit is checked on fresh inputs."""
    if module is None:
        return None
    module = _float32(module)
    tol = 1e-4 if _dtype(module) in (torch.float32, torch.float64) else 2e-2
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(8, d_model, generator=g) * 3 + torch.randn(1, d_model, generator=g)).to(device)
    with torch.no_grad():
        try:
            y = module(x.to(_dtype(module))).float()
        except Exception:  # not a module that maps [n, d] -> [n, d]
            return None
    if y.shape != x.shape:
        return None
    own = getattr(module, "variance_epsilon", None)
    if own is None:
        own = getattr(module, "eps", None)
    tries = ([float(own)] if isinstance(own, (int, float)) else []) + list(EPS_TRIED)
    for centers in (False, True):
        for eps in tries:
            base = Affine(centers, None, None, eps)
            xhat = base(x)  # the normalised input, no gain or bias
            # y = g * xhat + b per unit: least squares over the 8 rows
            xm, ym = xhat.mean(0), y.mean(0)
            var = (xhat - xm).pow(2).sum(0)
            gain = ((xhat - xm) * (y - ym)).sum(0) / var.clamp(min=1e-12)
            bias = ym - gain * xm
            fit = Affine(
                centers,
                None if torch.allclose(gain, torch.ones_like(gain)) else gain,
                None if bias.abs().max() < 1e-6 else bias,
                eps,
            )
            fresh = (torch.randn(5, d_model, generator=g) * 2 - 1).to(device)
            with torch.no_grad():
                want = module(fresh.to(_dtype(module))).float()
            if (fit(fresh) - want).abs().max() <= tol * (1 + want.abs().max()):
                return fit
    return None
