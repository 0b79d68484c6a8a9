"""LSTM and GRU blocks, unrolled with per-step hook sites, and their scans with hand-written
backward passes (used when no per-step site is hooked)."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from transformer_lens.hook_points import HookPoint

from interp.recurrent.config import RecurrentConfig
from interp.recurrent.steps import _StepSite


class _RNNBlock(nn.Module):
    """Shared frame of the LSTM and GRU blocks: PyTorch parameter layout
    (``W_ih [G*d, d]``, ``W_hh [G*d, d]``, ``b_ih``, ``b_hh``; gate order as in ``nn.LSTM`` /
    ``nn.GRU``), so weights can be copied from or to those modules.

    Without hooks on any per-step site of the block the recurrence runs as one autograd
    Function with a hand-written backward (the same float operations forward, so logits
    are bit-identical to a hooked run); with hooks it runs as a plain autograd loop.
    """

    n_gates: int
    step_sites: tuple[str, ...]
    _fn: type[torch.autograd.Function]
    #: the recurrence, one step at a time (a staticmethod of each cell)
    _loop: Callable[..., list[torch.Tensor]]

    def __init__(self, cfg: RecurrentConfig):
        super().__init__()
        d, g = cfg.d_model, self.n_gates
        self.residual = cfg.residual
        k = 1.0 / math.sqrt(d)
        self.W_ih = nn.Parameter(torch.empty(g * d, d).uniform_(-k, k))
        self.W_hh = nn.Parameter(torch.empty(g * d, d).uniform_(-k, k))
        self.b_ih = nn.Parameter(torch.empty(g * d).uniform_(-k, k))
        self.b_hh = nn.Parameter(torch.empty(g * d).uniform_(-k, k))
        self.hook_resid_pre = HookPoint()
        for name in self.step_sites:
            setattr(self, name, HookPoint())
        self.hook_resid_post = HookPoint()

    def forward(self, resid: torch.Tensor) -> torch.Tensor:
        resid = self.hook_resid_pre(resid)
        # Input projection of every step at once, time-major so each step reads a
        # contiguous [batch, G*d] slice.
        X = F.linear(resid.transpose(0, 1), self.W_ih, self.b_ih).contiguous()
        T = X.shape[0]
        sites = [_StepSite(getattr(self, n), T) for n in self.step_sites]
        if any(s.on for s in sites):
            hidden = torch.stack(self._loop(X, self.W_hh, self.b_hh, sites), 1)
        else:
            hidden = self._fn.apply(X, self.W_hh, self.b_hh).transpose(0, 1).contiguous()
        out = resid + hidden if self.residual else hidden
        return self.hook_resid_post(out)


def _no_sites(n: int) -> list:
    return [lambda t, x: x] * n


class _LSTMScan(torch.autograd.Function):
    """The LSTM recurrence over time-major input projections ``X [T, B, 4d]`` -> hidden
    ``[T, B, d]``, forward by :meth:`LSTMBlock._loop`, backward by hand."""

    @staticmethod
    def forward(ctx, X, W_hh, b_hh):
        rec = {}
        hs = LSTMBlock._loop(X, W_hh, b_hh, _no_sites(6), rec)
        H = torch.stack(hs, 0)
        ctx.save_for_backward(W_hh, H, *(torch.stack(rec[k], 0) for k in "ifgocs"))
        return H

    @staticmethod
    def backward(ctx, gH):
        W_hh, H, i, f, g, o, c, tc = ctx.saved_tensors
        T, B, d = H.shape
        c_prev = torch.cat([torch.zeros_like(c[:1]), c[:-1]], 0)
        K_c = o * (1 - tc * tc)  # dc += dh * K_c
        K_o = tc * o * (1 - o)  # d(o pre) = dh * K_o
        K_i = g * i * (1 - i)  # d(i pre) = dc * K_i
        K_g = i * (1 - g * g)  # d(g pre) = dc * K_g
        K_f = c_prev * f * (1 - f)  # d(f pre) = dc * K_f
        dG = torch.empty(T, B, 4 * d, dtype=H.dtype, device=H.device)
        dh_rec = torch.zeros(B, d, dtype=H.dtype, device=H.device)
        dc_rec = torch.zeros(B, d, dtype=H.dtype, device=H.device)
        for t in range(T - 1, -1, -1):
            dh = gH[t] + dh_rec
            dc = dc_rec + dh * K_c[t]
            row = dG[t]
            torch.mul(dc, K_i[t], out=row[:, :d])
            torch.mul(dc, K_f[t], out=row[:, d : 2 * d])
            torch.mul(dc, K_g[t], out=row[:, 2 * d : 3 * d])
            torch.mul(dh, K_o[t], out=row[:, 3 * d :])
            dc_rec = dc * f[t]
            dh_rec = torch.mm(row, W_hh)
        flat = dG.reshape(T * B, 4 * d)
        g_W = torch.mm(dG[1:].reshape(-1, 4 * d).t(), H[:-1].reshape(-1, d))
        return dG, g_W, flat.sum(0)


class _GRUScan(torch.autograd.Function):
    """The GRU recurrence over time-major input projections ``X [T, B, 3d]`` -> hidden
    ``[T, B, d]``, forward by :meth:`GRUBlock._loop`, backward by hand."""

    @staticmethod
    def forward(ctx, X, W_hh, b_hh):
        rec = {}
        hs = GRUBlock._loop(X, W_hh, b_hh, _no_sites(4), rec)
        H = torch.stack(hs, 0)
        ctx.save_for_backward(W_hh, H, *(torch.stack(rec[k], 0) for k in "rznm"))
        return H

    @staticmethod
    def backward(ctx, gH):
        W_hh, H, r, z, n, hn = ctx.saved_tensors
        T, B, d = H.shape
        h_prev = torch.cat([torch.zeros_like(H[:1]), H[:-1]], 0)
        K_z = (h_prev - n) * z * (1 - z)  # d(z pre) = dh * K_z
        K_n = (1 - z) * (1 - n * n)  # d(n pre) = dh * K_n
        K_r = hn * r * (1 - r)  # d(r pre) = d(n pre) * K_r
        dX = torch.empty(T, B, 3 * d, dtype=H.dtype, device=H.device)
        dHh = torch.empty(T, B, 3 * d, dtype=H.dtype, device=H.device)  # grad of W_hh h + b_hh
        dh_rec = torch.zeros(B, d, dtype=H.dtype, device=H.device)
        for t in range(T - 1, -1, -1):
            dh = gH[t] + dh_rec
            xr = dX[t]
            dn = torch.mul(dh, K_n[t], out=xr[:, 2 * d :])
            torch.mul(dn, K_r[t], out=xr[:, :d])
            torch.mul(dh, K_z[t], out=xr[:, d : 2 * d])
            hr = dHh[t]
            hr[:, : 2 * d] = xr[:, : 2 * d]
            torch.mul(dn, r[t], out=hr[:, 2 * d :])
            dh_rec = torch.addmm(dh * z[t], hr, W_hh)
        g_W = torch.mm(dHh[1:].reshape(-1, 3 * d).t(), H[:-1].reshape(-1, d))
        return dX, g_W, dHh.reshape(T * B, 3 * d).sum(0)


class LSTMBlock(_RNNBlock):
    """LSTM layer (gate order i, f, g, o as ``nn.LSTM``), unrolled with per-step hook sites
    ``hook_input_gate, hook_forget_gate, hook_cell_candidate, hook_output_gate`` (computed in
    that order at each step), then ``hook_cell`` (c_t), then ``hook_hidden`` (h_t)."""

    n_gates = 4
    step_sites = (
        "hook_input_gate",
        "hook_forget_gate",
        "hook_cell_candidate",
        "hook_output_gate",
        "hook_cell",
        "hook_hidden",
    )
    _fn = _LSTMScan

    @staticmethod
    def _loop(X, W_hh, b_hh, sites, rec: dict | None = None) -> list[torch.Tensor]:
        """The recurrence, one step at a time; ``rec`` (no-grad only) collects
        i, f, g, o, c, tanh(c) per step for the hand-written backward."""
        s_i, s_f, s_g, s_o, s_c, s_h = sites
        T, B = X.shape[0], X.shape[1]
        d = W_hh.shape[1]
        h = X.new_zeros(B, d)
        c = X.new_zeros(B, d)
        W_hh_t = W_hh.t()
        Xs = X.unbind(0)  # one backward node for all steps (X[t] would scatter T full-size grads)
        hs = []
        if rec is not None:
            for k in "ifgocs":
                rec[k] = []
        for t in range(T):
            gates = torch.addmm(b_hh, h, W_hh_t) + Xs[t]
            i, f, g, o = gates.chunk(4, 1)
            i = s_i(t, torch.sigmoid(i))
            f = s_f(t, torch.sigmoid(f))
            g = s_g(t, torch.tanh(g))
            o = s_o(t, torch.sigmoid(o))
            c = s_c(t, f * c + i * g)
            tc = torch.tanh(c)
            h = s_h(t, o * tc)
            hs.append(h)
            if rec is not None:
                for k, v in zip("ifgocs", (i, f, g, o, c, tc)):
                    rec[k].append(v)
        return hs


class GRUBlock(_RNNBlock):
    """GRU layer (gate order r, z, n as ``nn.GRU``: ``n = tanh(W_in x + b_in + r * (W_hn h +
    b_hn))``, ``h = (1 - z) * n + z * h``), unrolled with per-step hook sites
    ``hook_reset_gate, hook_update_gate, hook_candidate, hook_hidden``."""

    n_gates = 3
    step_sites = ("hook_reset_gate", "hook_update_gate", "hook_candidate", "hook_hidden")
    _fn = _GRUScan

    @staticmethod
    def _loop(X, W_hh, b_hh, sites, rec: dict | None = None) -> list[torch.Tensor]:
        """The recurrence, one step at a time; ``rec`` (no-grad only) collects r, z, n and
        ``W_hn h + b_hn`` per step for the hand-written backward."""
        s_r, s_z, s_n, s_h = sites
        T, B = X.shape[0], X.shape[1]
        d = W_hh.shape[1]
        h = X.new_zeros(B, d)
        W_hh_t = W_hh.t()
        Xs = X.unbind(0)
        hs = []
        if rec is not None:
            for k in "rznm":
                rec[k] = []
        for t in range(T):
            Hh = torch.addmm(b_hh, h, W_hh_t)
            x_r, x_z, x_n = Xs[t].chunk(3, 1)
            h_r, h_z, h_n = Hh.chunk(3, 1)
            r = s_r(t, torch.sigmoid(x_r + h_r))
            z = s_z(t, torch.sigmoid(x_z + h_z))
            n = s_n(t, torch.tanh(x_n + r * h_n))
            h = s_h(t, (1 - z) * n + z * h)
            hs.append(h)
            if rec is not None:
                for k, v in zip("rznm", (r, z, n, h_n)):
                    rec[k].append(v)
        return hs
