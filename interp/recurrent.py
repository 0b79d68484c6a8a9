"""Recurrent (LSTM, GRU) and selective state-space (Mamba-style) models, unrolled for hooks.

Pure torch (CPU, no custom kernels).  Every model is a TransformerLens
``HookedRootModule``, so ``run_with_hooks``, ``run_with_cache``, ``hooks()`` and
``add_hook`` work as they do on a transformer, with the same hook-function convention
``fn(activation, hook) -> replacement or None``.

Architecture of :class:`HookedRecurrent` (``cfg.family`` "rnn" for lstm/gru, "ssm" for ssm)::

    tokens [batch, pos] -> embed -> hook_embed
      -> blocks.0 ... blocks.{n_layers-1}   (each: hook_resid_pre ... hook_resid_post)
      -> ln_final (LayerNorm for rnn, RMSNorm for ssm) -> unembed -> logits [batch, pos, d_vocab]

An rnn block runs the cell over the block input; its output (``hook_resid_post``) is the
hidden sequence, plus the block input when ``cfg.residual`` is true.  An ssm block is
pre-norm residual: ``resid_post = resid_pre + out_proj(y * silu(z))`` with ``y`` read from a
selective diagonal state ``h_t = exp(delta_t * A) * h_{t-1} + delta_t * B_t * u_t``,
``y_t = C_t . h_t + D * u_t``.

Two kinds of hook sites
-----------------------
*Whole-sequence sites* (embeddings, residual stream, the ssm's input-dependent ``delta``,
``B``, ``C``, ``u``, ``gate``, ``hidden`` = y, ``mixer_out``) are called once per forward
with the whole ``[batch, pos, ...]`` tensor, exactly as in a transformer.

*Per-step sites* (:attr:`HookedRecurrent.recurrent_sites`: every LSTM/GRU gate, cell and
hidden state, and the ssm state ``hook_state``) feed the recurrence, so an edit at step t
must reach every later step and no earlier one.  Such a HookPoint is called **once per time
step** t = 0 .. pos-1, always with a full-length ``[batch, pos, ...]`` tensor in which

- positions ``< t`` hold the already-final (post-hook) values of earlier steps,
- position ``t`` holds the freshly computed value of this step,
- positions ``> t`` are zeros;

and the recurrence continues from position ``t`` of what the hooks return (edits at other
positions are ignored).  Several hooks on one site are called in order, and each one is
handed a tensor that keeps this contract, whatever the hooks before it returned or wrote
(its position t is the previous hook's position t).  Consequences, all of which the usual
hook idioms rely on:

- ``x[:, t0] = other[:, t0]`` (in place, or on a copy that is returned) patches step t0 only;
  logits before t0 are bit-identical and everything from t0 on sees the patched state;
- ``x + v`` (steering) adds ``v[:, t]`` at every step t, and a cache hook after it sees the
  steered sequence;
- a hook that stores the tensor it is given (``run_with_cache``) ends, after the last step,
  holding the whole sequence ``[batch, pos, ...]``;
- a no-op hook leaves every output bit-identical.

While a per-step site runs its hooks, ``hook.step`` is the current step t (it is None at
whole-sequence sites and between steps).  The idioms above do not need it, but a hook that
acts at one step only (``if hook.step == t0: x[:, t0] = v``) is cheaper than one that
writes at every step (see Cost).  A hook that keeps the tensor of an earlier step must
clone it: with gradients off the same buffer is handed over at every step.

Cost.  A per-step HookPoint with no hooks attached is never called (no buffer is built),
and a block with no hooks on any of its per-step sites runs its recurrence as one autograd
Function with a hand-written backward, so training costs what a plain loop costs.  With
hooks and gradients off, one preallocated buffer is written in place and handed to the
hooks at every step (O(pos) copying overall); after a hook writes into it in place,
positions other than t are restored before the next hook sees it, O(pos) per such step
(a patch hook writing ``x[:, t0]`` at every step of the ssm state, 64 x 64 x 64 x 16,
costs ~10x a plain forward; the same hook guarded by ``hook.step == t0`` costs little).  With gradients on, a fresh
full-length tensor is assembled for every hook call (O(pos^2) copying, correct for
autograd).  Sites with backward hooks, pre-hooks or an nnsight controller are called as
modules (``hp(x)``), so their forward hooks run as one torch hook chain without the
per-hook contract.

Gradients.  Backward hooks on a per-step site fire once per step, each with a gradient
that is non-zero only at that step's position, so ``run_with_cache(incl_bwd=True)`` keeps
only one step's gradient for those sites.  Use :func:`site_gradients`, which adds a zero
tensor at each requested site and returns d(metric)/d(site) for every position at once
(for per-step sites: the total derivative through all later steps).

Units and shapes (B = batch, T = pos, d = d_model, E = d_inner = expand * d_model, N = d_state):
LSTM/GRU gates, cell and hidden: ``[B, T, d]`` (gates are post-nonlinearity, in (0, 1) for
sigmoid gates and (-1, 1) for tanh candidates).  SSM: ``hook_state [B, T, E, N]``;
``hook_u, hook_delta, hook_hidden, hook_gate [B, T, E]``; ``hook_B, hook_C [B, T, N]``;
``delta`` is a step size (> 0, softplus).  Residual sites ``[B, T, d]``.  The state is zero
before step 0.  ``pos_slice`` in ``run_with_cache`` slices dimension -2, which for the
4-d ``hook_state`` is d_inner, not pos: slice ``hook_state`` yourself.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules import module as _torch_module
from transformer_lens.hook_points import HookPoint
from transformer_lens.HookedRootModule import HookedRootModule

CELLS = ("lstm", "gru", "ssm")

#: Kinds reported by :meth:`HookedRecurrent.site_names`.
SITE_KINDS = {
    "embed": "token embedding",
    "resid": "residual stream / block input or output",
    "hidden": "hidden output of the cell (LSTM/GRU h_t, carried across steps; SSM y_t, read from the state)",
    "state": "carried recurrent memory that is not the output (LSTM cell c_t, SSM state h_t)",
    "gate": "gate values (LSTM/GRU gates and candidates, SSM step size delta and output gate silu(z))",
    "input": "input-dependent projections of the SSM (u, B, C)",
    "out": "block mixer output before the residual add",
}


# --------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------
@dataclass
class RecurrentConfig:
    """Geometry of a :class:`HookedRecurrent`.

    cell: "lstm" | "gru" | "ssm".  d_model: embedding width, which is also the hidden width
    of every rnn layer and the residual width of an ssm.  n_ctx: the longest sequence the
    model is meant for (informational: the recurrence itself runs on any length).
    d_state, expand, d_conv, dt_rank: ssm only (state size N per channel, d_inner =
    expand * d_model, causal depthwise conv width, 1 = no conv, rank of the delta
    projection, 0 = ceil(d_model / 16)).  residual: rnn only, adds the block input to the
    hidden sequence (ssm blocks are always residual).  seed: parameter initialisation.
    """

    cell: str
    d_vocab: int
    d_model: int
    n_layers: int = 1
    n_ctx: int = 64
    d_state: int = 16
    expand: int = 2
    d_conv: int = 4
    dt_rank: int = 0
    residual: bool = False
    seed: int = 0

    def __post_init__(self):
        if self.cell not in CELLS:
            raise ValueError(f"cell must be one of {CELLS}, got {self.cell!r}")
        for name in ("d_vocab", "d_model", "n_layers", "n_ctx", "d_state", "expand", "d_conv"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if not isinstance(self.dt_rank, int) or self.dt_rank < 0:
            raise ValueError(f"dt_rank must be an int >= 0, got {self.dt_rank!r}")

    @property
    def family(self) -> str:
        return "ssm" if self.cell == "ssm" else "rnn"

    @property
    def d_inner(self) -> int:
        return self.expand * self.d_model

    @property
    def delta_rank(self) -> int:
        return self.dt_rank or math.ceil(self.d_model / 16)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "RecurrentConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known - {"family"})
        if unknown:
            raise ValueError(f"unknown RecurrentConfig fields {unknown}; known: {sorted(known)}")
        return cls(**{k: v for k, v in d.items() if k in known})


# --------------------------------------------------------------------------------------
# Per-step hook sites
# --------------------------------------------------------------------------------------
def _is_hooked(hp: nn.Module) -> bool:
    """Whether calling ``hp`` could do anything but return its input."""
    return bool(hp._forward_hooks or _needs_module_call(hp))


def _needs_module_call(hp: nn.Module) -> bool:
    """Whether ``hp`` has hooks other than plain forward hooks (backward or pre-hooks, an
    nnsight controller, global module hooks): then it is called as a module."""
    return bool(
        hp._forward_pre_hooks or hp._backward_hooks or hp._backward_pre_hooks
        or "forward" in hp.__dict__  # nnsight installs its controller here
        or _torch_module._global_forward_hooks or _torch_module._global_forward_pre_hooks
        or _torch_module._global_backward_hooks or _torch_module._global_backward_pre_hooks
    )


class _StepSite:
    """Drives one per-step HookPoint through a recurrence of ``n_steps`` steps.

    ``site(t, fresh)`` returns the state the recurrence continues from at step t (``fresh``
    itself when the HookPoint has no hooks).  The forward hooks are called one by one, and
    each receives a tensor that keeps the contract of the module docstring (positions < t
    final, t current, > t zero) whatever the hooks before it returned or wrote.
    """

    __slots__ = ("hp", "T", "on", "grad", "module_call", "finals", "buf", "seq", "clean")

    def __init__(self, hp: HookPoint, n_steps: int):
        self.hp = hp
        self.T = n_steps
        self.on = _is_hooked(hp)
        self.module_call = self.on and _needs_module_call(hp)
        self.grad = torch.is_grad_enabled()
        self.finals: list[torch.Tensor] = []
        self.buf: torch.Tensor | None = None
        self.seq: torch.Tensor | None = None
        self.clean = -1  # buffer version after our last write

    def _check(self, out, x: torch.Tensor) -> torch.Tensor:
        if out is None:
            return x
        if not isinstance(out, torch.Tensor) or out.shape != x.shape:
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(f"hook on per-step site {self.hp.name} must return None or a tensor of shape "
                             f"{tuple(x.shape)}, got {got}")
        return out

    def _present(self, t: int, cur: torch.Tensor) -> torch.Tensor:
        """The full-length tensor handed to a hook at step t, with ``cur`` at position t."""
        B, T = cur.shape[0], self.T
        if self.grad:
            parts = []
            if t > 0:
                parts.append(torch.stack(self.finals, 1))
            parts.append(cur.unsqueeze(1))
            if t < T - 1:
                parts.append(cur.new_zeros((B, T - 1 - t) + tuple(cur.shape[1:])))
            return torch.cat(parts, 1)
        if self.buf is None:
            self.buf = cur.new_zeros((B, T) + tuple(cur.shape[1:]))
            self.seq = torch.empty_like(self.buf)
            self.clean = self.buf._version
        buf = self.buf
        if buf._version != self.clean:  # a hook wrote into the buffer in place: restore
            buf[:, :t] = self.seq[:, :t]
            buf[:, t + 1:] = 0
        buf[:, t] = cur
        self.clean = buf._version
        return buf

    def __call__(self, t: int, fresh: torch.Tensor) -> torch.Tensor:
        if not self.on:
            return fresh
        cur = fresh
        self.hp.step = t
        try:
            if self.module_call:
                x = self._present(t, cur)
                cur = self._check(self.hp(x), x)[:, t]
            else:
                for hook_id, fn in list(self.hp._forward_hooks.items()):
                    x = self._present(t, cur)
                    if self.hp._forward_hooks_with_kwargs.get(hook_id, False):
                        out = fn(self.hp, (x,), {}, x)
                    else:
                        out = fn(self.hp, (x,), x)
                    cur = self._check(out, x)[:, t]
        finally:
            self.hp.step = None
        if self.grad:
            cur = cur.contiguous()
            self.finals.append(cur)
            return cur
        buf, seq = self.buf, self.seq
        seq[:, t] = cur
        dirty = buf._version != self.clean
        if dirty and t == self.T - 1:
            buf.copy_(seq)  # leave what caches hold equal to the final sequence
        elif dirty or cur.data_ptr() != buf[:, t].data_ptr():
            buf[:, t] = seq[:, t]
        self.clean = -1 if dirty else buf._version
        return seq[:, t].contiguous()


# --------------------------------------------------------------------------------------
# Blocks
# --------------------------------------------------------------------------------------
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
    _fn: type

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
        K_c = o * (1 - tc * tc)          # dc += dh * K_c
        K_o = tc * o * (1 - o)           # d(o pre) = dh * K_o
        K_i = g * i * (1 - i)            # d(i pre) = dc * K_i
        K_g = i * (1 - g * g)            # d(g pre) = dc * K_g
        K_f = c_prev * f * (1 - f)       # d(f pre) = dc * K_f
        dG = torch.empty(T, B, 4 * d, dtype=H.dtype, device=H.device)
        dh_rec = torch.zeros(B, d, dtype=H.dtype, device=H.device)
        dc_rec = torch.zeros(B, d, dtype=H.dtype, device=H.device)
        for t in range(T - 1, -1, -1):
            dh = gH[t] + dh_rec
            dc = dc_rec + dh * K_c[t]
            row = dG[t]
            torch.mul(dc, K_i[t], out=row[:, :d])
            torch.mul(dc, K_f[t], out=row[:, d:2 * d])
            torch.mul(dc, K_g[t], out=row[:, 2 * d:3 * d])
            torch.mul(dh, K_o[t], out=row[:, 3 * d:])
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
        K_z = (h_prev - n) * z * (1 - z)   # d(z pre) = dh * K_z
        K_n = (1 - z) * (1 - n * n)        # d(n pre) = dh * K_n
        K_r = hn * r * (1 - r)             # d(r pre) = d(n pre) * K_r
        dX = torch.empty(T, B, 3 * d, dtype=H.dtype, device=H.device)
        dHh = torch.empty(T, B, 3 * d, dtype=H.dtype, device=H.device)  # grad of W_hh h + b_hh
        dh_rec = torch.zeros(B, d, dtype=H.dtype, device=H.device)
        for t in range(T - 1, -1, -1):
            dh = gH[t] + dh_rec
            xr = dX[t]
            dn = torch.mul(dh, K_n[t], out=xr[:, 2 * d:])
            torch.mul(dn, K_r[t], out=xr[:, :d])
            torch.mul(dh, K_z[t], out=xr[:, d:2 * d])
            hr = dHh[t]
            hr[:, :2 * d] = xr[:, :2 * d]
            torch.mul(dn, r[t], out=hr[:, 2 * d:])
            dh_rec = torch.addmm(dh * z[t], hr, W_hh)
        g_W = torch.mm(dHh[1:].reshape(-1, 3 * d).t(), H[:-1].reshape(-1, d))
        return dX, g_W, dHh.reshape(T * B, 3 * d).sum(0)


class LSTMBlock(_RNNBlock):
    """LSTM layer (gate order i, f, g, o as ``nn.LSTM``), unrolled with per-step hook sites
    ``hook_input_gate, hook_forget_gate, hook_cell_candidate, hook_output_gate`` (computed in
    that order at each step), then ``hook_cell`` (c_t), then ``hook_hidden`` (h_t)."""

    n_gates = 4
    step_sites = ("hook_input_gate", "hook_forget_gate", "hook_cell_candidate", "hook_output_gate",
                  "hook_cell", "hook_hidden")
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
        gY = gY.unsqueeze(-1)                      # [T, B, E, 1]
        G = torch.zeros(B, E, N, dtype=H.dtype, device=H.device)   # total dLoss/dH[t]
        dA_next = None
        Q = torch.empty(B, E, N, dtype=H.dtype, device=H.device)
        for t in range(T - 1, -1, -1):
            if dA_next is not None:
                G *= dA_next
            G.baddbmm_(gY[t], Cm[t].unsqueeze(1))                      # + gY[t] outer C[t]
            torch.bmm(gY[t].transpose(1, 2), H[t], out=g_C[t].unsqueeze(1))
            torch.bmm(G, Bm[t].unsqueeze(-1), out=g_du[t].unsqueeze(-1))
            torch.bmm(du[t].unsqueeze(1), G, out=g_B[t].unsqueeze(1))
            if t > 0:
                dA = torch.exp(delta[t].unsqueeze(-1) * A)
                torch.mul(G, H[t - 1], out=Q)
                Q *= dA                                                 # dLoss/d(delta A)
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
        h_new.baddbmm_(du[t].unsqueeze(-1), Bm[t].unsqueeze(1))       # + du[t] outer B[t]
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
        nn.init.uniform_(self.dt_proj.weight, -R ** -0.5, R ** -0.5)
        dt = torch.exp(torch.rand(E) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3)).clamp(min=1e-4)
        with torch.no_grad():
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # softplus^-1(dt)
        self.A_log = nn.Parameter(torch.log(torch.arange(1, N + 1, dtype=torch.float32)).repeat(E, 1))
        self.D = nn.Parameter(torch.ones(E))
        self.out_proj = nn.Linear(E, d)
        for name in ("hook_resid_pre", "hook_u", "hook_delta", "hook_B", "hook_C", "hook_state",
                     "hook_hidden", "hook_gate", "hook_mixer_out", "hook_resid_post"):
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
            u = F.conv1d(u.transpose(1, 2), self.conv_weight, self.conv_bias, padding=self.d_conv - 1,
                         groups=u.shape[-1])[..., :T].transpose(1, 2)
        else:
            u = u * self.conv_weight[:, 0, 0] + self.conv_bias
        u = self.hook_u(F.silu(u))
        dt, Bm, Cm = self.x_proj(u).split([self.dt_rank, self.d_state, self.d_state], -1)
        delta = self.hook_delta(F.softplus(self.dt_proj(dt)))
        Bm = self.hook_B(Bm)
        Cm = self.hook_C(Cm)
        # Time-major [T, B, ...] so each step works on contiguous slices.
        deltaT = delta.transpose(0, 1).contiguous()                     # [T, B, E]
        du = (deltaT * u.transpose(0, 1)).contiguous()                  # [T, B, E]
        BmT = Bm.transpose(0, 1).contiguous()                           # [T, B, N]
        CmT = Cm.transpose(0, 1).contiguous()                           # [T, B, N]
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


_BLOCKS = {"lstm": LSTMBlock, "gru": GRUBlock, "ssm": SSMBlock}
_KIND = {
    "hook_resid_pre": "resid", "hook_resid_post": "resid",
    "hook_hidden": "hidden", "hook_cell": "state", "hook_state": "state",
    "hook_input_gate": "gate", "hook_forget_gate": "gate", "hook_output_gate": "gate",
    "hook_cell_candidate": "gate", "hook_reset_gate": "gate", "hook_update_gate": "gate",
    "hook_candidate": "gate", "hook_delta": "gate", "hook_gate": "gate",
    "hook_u": "input", "hook_B": "input", "hook_C": "input", "hook_mixer_out": "out",
}


# --------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------
class HookedRecurrent(HookedRootModule):
    """An LSTM / GRU / selective-SSM language model with TransformerLens hook points.

    ``forward(tokens [batch, pos] int64) -> logits [batch, pos, d_vocab]`` (float32, causal:
    logits at position t depend on tokens 0..t only).

    Sites (for layer l; shapes in the module docstring): ``hook_embed``;
    ``blocks.{l}.hook_resid_pre``; the cell's sites (LSTM: ``hook_input_gate``,
    ``hook_forget_gate``, ``hook_cell_candidate``, ``hook_output_gate``, ``hook_cell``,
    ``hook_hidden``; GRU: ``hook_reset_gate``, ``hook_update_gate``, ``hook_candidate``,
    ``hook_hidden``; SSM: ``hook_u``, ``hook_delta``, ``hook_B``, ``hook_C``, ``hook_state``,
    ``hook_hidden``, ``hook_gate``, ``hook_mixer_out``); ``blocks.{l}.hook_resid_post``.
    :attr:`recurrent_sites` lists the per-step sites (called once per time step with a
    full-length tensor; see the module docstring); :meth:`site_names` gives every site's kind.
    """

    def __init__(self, cfg: RecurrentConfig):
        super().__init__()
        if isinstance(cfg, dict):
            cfg = RecurrentConfig.from_dict(cfg)
        self.cfg = cfg
        gen_state = torch.random.get_rng_state()
        torch.manual_seed(cfg.seed)
        try:
            self.embed = nn.Embedding(cfg.d_vocab, cfg.d_model)
            self.hook_embed = HookPoint()
            block = _BLOCKS[cfg.cell]
            self.blocks = nn.ModuleList([block(cfg) for _ in range(cfg.n_layers)])
            self.ln_final = nn.RMSNorm(cfg.d_model, eps=1e-5) if cfg.family == "ssm" else nn.LayerNorm(cfg.d_model)
            self.unembed = nn.Linear(cfg.d_model, cfg.d_vocab)
        finally:
            torch.random.set_rng_state(gen_state)
        self.recurrent_sites: tuple[str, ...] = tuple(
            f"blocks.{l}.{n}" for l, b in enumerate(self.blocks) for n in b.step_sites)
        self.setup()
        for hp in self.hook_dict.values():
            hp.step = None  # the current step while a per-step site runs its hooks

    @property
    def family(self) -> str:
        return self.cfg.family

    def site_names(self) -> dict[str, str]:
        """Every hook site in call order -> its kind (see ``SITE_KINDS``)."""
        out = {"hook_embed": "embed"}
        for name in self.hook_dict:
            if name.startswith("blocks."):
                out[name] = _KIND[name.rsplit(".", 1)[1]]
        return out

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        if tokens.ndim == 1:
            tokens = tokens[None]
        x = self.hook_embed(self.embed(tokens))
        for block in self.blocks:
            x = block(x)
        return self.unembed(self.ln_final(x))


def delta_hook(deltas: dict[str, torch.Tensor], name: str,
               seen: dict[str, torch.Tensor] | None = None) -> Callable:
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
    return add_delta


def site_gradients(model: HookedRootModule, tokens: torch.Tensor,
                   metric: Callable[[torch.Tensor], torch.Tensor],
                   names: Iterable[str]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
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
            raise ValueError(f"metric must return a scalar, got shape {tuple(value.shape)}")
        missing = [n for n in names if n not in deltas]
        if missing:
            raise ValueError(f"sites {missing} were not reached in the forward pass")
        grads = torch.autograd.grad(value, [deltas[n] for n in names], allow_unused=True)
    return value.detach(), {n: (g if g is not None else torch.zeros_like(deltas[n]))
                            for n, g in zip(names, grads)}
