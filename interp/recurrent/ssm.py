"""The selective (Mamba-1 style) diagonal state-space block with a sequential scan and its
hand-written backward."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from transformer_lens.hook_points import HookPoint

from interp.recurrent.config import RecurrentConfig
from interp.recurrent.steps import _StepSite


class _SSMScan(torch.autograd.Function):
    """The selective scan over time-major inputs, returning ``Y [T, B, E]`` with
    ``Y[t] = H[t] . C[t]`` and ``H[t] = exp(delta[t] A) * H[t-1] + du[t] B[t]`` (``H[-1] = 0``).

    Forward by :func:`_ssm_loop` (the hooked path runs the same loop, so results are
    bit-identical); backward by hand, one step at a time on ``[B, E, N]`` slices, so no
    ``[T, B, E, N]`` temporaries beyond the stored states (autograd through the loop is
    many times slower on CPU).
    """

    @staticmethod
    def forward(ctx, delta, A, du, Bm, Cm):
        H = torch.empty(delta.shape + (A.shape[1],), dtype=delta.dtype, device=delta.device)
        Y = torch.stack(_ssm_loop(delta, A, du, Bm, Cm, None, out=H), 0)
        ctx.save_for_backward(delta, A, du, Bm, Cm, H)
        return Y

    @staticmethod
    def backward(ctx, gY):
        delta, A, du, Bm, Cm, H = ctx.saved_tensors
        T, B, E, N = H.shape
        g_delta = torch.empty_like(delta)
        g_du = torch.empty_like(du)
        g_B = torch.empty_like(Bm)
        g_C = torch.empty_like(Cm)
        g_A = torch.zeros(B, E, N, dtype=H.dtype, device=H.device)
        gY = gY.unsqueeze(-1)  # [T, B, E, 1]
        G = torch.zeros(B, E, N, dtype=H.dtype, device=H.device)  # total dLoss/dH[t]
        dA_next = None
        Q = torch.empty(B, E, N, dtype=H.dtype, device=H.device)
        for t in range(T - 1, -1, -1):
            if dA_next is not None:
                G *= dA_next
            G.baddbmm_(gY[t], Cm[t].unsqueeze(1))  # + gY[t] outer C[t]
            torch.bmm(gY[t].transpose(1, 2), H[t], out=g_C[t].unsqueeze(1))
            torch.bmm(G, Bm[t].unsqueeze(-1), out=g_du[t].unsqueeze(-1))
            torch.bmm(du[t].unsqueeze(1), G, out=g_B[t].unsqueeze(1))
            if t > 0:
                dA = torch.exp(delta[t].unsqueeze(-1) * A)
                torch.mul(G, H[t - 1], out=Q)
                Q *= dA  # dLoss/d(delta A)
                torch.linalg.vecdot(Q, A, out=g_delta[t])
                g_A.addcmul_(Q, delta[t].unsqueeze(-1))
                dA_next = dA
            else:
                g_delta[0] = 0
        return g_delta, g_A.sum(0), g_du, g_B, g_C


def _ssm_loop(delta, A, du, Bm, Cm, site, out=None) -> list[torch.Tensor]:
    """The selective scan, one step at a time on ``[B, E, N]`` states; returns ``y_t = h_t .
    C_t`` per step ([B, E]).  Each state passes through ``site(t, h)`` (when given) before
    anything reads it; ``out[t]`` (when given) receives the states."""
    ys = []
    h = None
    for t in range(len(delta)):
        h_new = out[t] if out is not None else None
        if h is None:
            h = torch.zeros(du[t].shape + (A.shape[1],), dtype=du[t].dtype, device=du[t].device)
        h_new = torch.mul(torch.exp(delta[t].unsqueeze(-1) * A), h, out=h_new)
        h_new.baddbmm_(du[t].unsqueeze(-1), Bm[t].unsqueeze(1))  # + du[t] outer B[t]
        h = site(t, h_new) if site is not None else h_new
        ys.append(torch.bmm(h, Cm[t].unsqueeze(-1)).squeeze(-1))
    return ys


class SSMBlock(nn.Module):
    """Selective diagonal SSM block (Mamba-1 style, sequential scan), pre-norm residual.

    Sites, in call order: ``hook_resid_pre`` [B,T,d]; ``hook_u`` [B,T,E] (in_proj, causal
    depthwise conv, silu); ``hook_delta`` [B,T,E] (softplus step size); ``hook_B``,
    ``hook_C`` [B,T,N]; ``hook_state`` [B,T,E,N] (per step: the state h_t after step t);
    ``hook_hidden`` [B,T,E] (y = C.h + D*u); ``hook_gate`` [B,T,E] (silu(z));
    ``hook_mixer_out`` [B,T,d]; ``hook_resid_post`` [B,T,d].
    """

    step_sites = ("hook_state",)
    # the hook points, set in __init__
    hook_resid_pre: HookPoint
    hook_u: HookPoint
    hook_delta: HookPoint
    hook_B: HookPoint
    hook_C: HookPoint
    hook_state: HookPoint
    hook_hidden: HookPoint
    hook_gate: HookPoint
    hook_mixer_out: HookPoint
    hook_resid_post: HookPoint

    def __init__(self, cfg: RecurrentConfig):
        super().__init__()
        d, E, N, R = cfg.d_model, cfg.d_inner, cfg.d_state, cfg.delta_rank
        self.d_state, self.dt_rank, self.d_conv = N, R, cfg.d_conv
        self.norm = nn.RMSNorm(d, eps=1e-5)
        self.in_proj = nn.Linear(d, 2 * E)
        self.conv_weight = nn.Parameter(torch.empty(E, 1, cfg.d_conv).uniform_(-1, 1) / math.sqrt(cfg.d_conv))
        self.conv_bias = nn.Parameter(torch.zeros(E))
        self.x_proj = nn.Linear(E, R + 2 * N, bias=False)
        self.dt_proj = nn.Linear(R, E)
        nn.init.uniform_(self.dt_proj.weight, -(R**-0.5), R**-0.5)
        dt = torch.exp(torch.rand(E) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3)).clamp(min=1e-4)
        with torch.no_grad():
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # softplus^-1(dt)
        self.A_log = nn.Parameter(torch.log(torch.arange(1, N + 1, dtype=torch.float32)).repeat(E, 1))
        self.D = nn.Parameter(torch.ones(E))
        self.out_proj = nn.Linear(E, d)
        for name in (
            "hook_resid_pre",
            "hook_u",
            "hook_delta",
            "hook_B",
            "hook_C",
            "hook_state",
            "hook_hidden",
            "hook_gate",
            "hook_mixer_out",
            "hook_resid_post",
        ):
            setattr(self, name, HookPoint())

    @property
    def A(self) -> torch.Tensor:
        """The (negative) diagonal state matrix, ``[E, N]``."""
        return -torch.exp(self.A_log)

    def forward(self, resid: torch.Tensor) -> torch.Tensor:
        resid = self.hook_resid_pre(resid)
        T = resid.shape[1]
        u, z = self.in_proj(self.norm(resid)).chunk(2, -1)
        if self.d_conv > 1:
            u = F.conv1d(
                u.transpose(1, 2), self.conv_weight, self.conv_bias, padding=self.d_conv - 1, groups=u.shape[-1]
            )[..., :T].transpose(1, 2)
        else:
            u = u * self.conv_weight[:, 0, 0] + self.conv_bias
        u = self.hook_u(F.silu(u))
        dt, Bm, Cm = self.x_proj(u).split([self.dt_rank, self.d_state, self.d_state], -1)
        delta = self.hook_delta(F.softplus(self.dt_proj(dt)))
        Bm = self.hook_B(Bm)
        Cm = self.hook_C(Cm)
        # Time-major [T, B, ...] so each step works on contiguous slices.
        deltaT = delta.transpose(0, 1).contiguous()  # [T, B, E]
        du = (deltaT * u.transpose(0, 1)).contiguous()  # [T, B, E]
        BmT = Bm.transpose(0, 1).contiguous()  # [T, B, N]
        CmT = Cm.transpose(0, 1).contiguous()  # [T, B, N]
        site = _StepSite(self.hook_state, T)
        if site.on:
            ys = _ssm_loop(deltaT.unbind(0), self.A, du.unbind(0), BmT.unbind(0), CmT.unbind(0), site)
            Y = torch.stack(ys, 1)
        else:
            Y = _SSMScan.apply(deltaT, self.A, du, BmT, CmT).transpose(0, 1).contiguous()
        y = Y + u * self.D
        y = self.hook_hidden(y)
        gate = self.hook_gate(F.silu(z))
        out = self.hook_mixer_out(self.out_proj(y * gate))
        return self.hook_resid_post(resid + out)
