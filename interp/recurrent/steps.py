"""Per-step hook sites: the protocol that lets a hook edit a recurrence at step t (see
:mod:`interp.recurrent` for the contract every per-step site keeps)."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.modules import module as _torch_module
from transformer_lens.hook_points import HookPoint

from interp.errors import InputError


def _is_hooked(hp: nn.Module) -> bool:
    """Whether calling ``hp`` could do anything but return its input."""
    return bool(hp._forward_hooks or _needs_module_call(hp))


def _needs_module_call(hp: nn.Module) -> bool:
    """Whether ``hp`` has hooks other than plain forward hooks (backward or pre-hooks, an
    nnsight controller, global module hooks): then it is called as a module."""
    return bool(
        hp._forward_pre_hooks
        or hp._backward_hooks
        or hp._backward_pre_hooks
        or "forward" in hp.__dict__  # nnsight installs its controller here
        or _torch_module._global_forward_hooks
        or _torch_module._global_forward_pre_hooks
        or _torch_module._global_backward_hooks
        or _torch_module._global_backward_pre_hooks
    )


def _set_step(hp: nn.Module, t: int | None) -> None:
    """Sets ``hp.step``: the current step while a per-step site runs its hooks, else None."""
    # torch types Module.__setattr__ as taking only a Tensor or a Module; any other value is
    # stored as a plain attribute
    hp.step = t  # type: ignore[assignment]


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
            raise InputError(
                f"hook on per-step site {self.hp.name} must return None or a tensor of shape "
                f"{tuple(x.shape)}, got {got}"
            )
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
        buf, seq = self.buf, self.seq
        assert seq is not None  # allocated with buf
        if buf._version != self.clean:  # a hook wrote into the buffer in place: restore
            buf[:, :t] = seq[:, :t]
            buf[:, t + 1 :] = 0
        buf[:, t] = cur
        self.clean = buf._version
        return buf

    def __call__(self, t: int, fresh: torch.Tensor) -> torch.Tensor:
        if not self.on:
            return fresh
        cur = fresh
        _set_step(self.hp, t)
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
            _set_step(self.hp, None)
        if self.grad:
            cur = cur.contiguous()
            self.finals.append(cur)
            return cur
        buf, seq = self.buf, self.seq
        assert buf is not None and seq is not None  # allocated by _present without gradients
        seq[:, t] = cur
        dirty = buf._version != self.clean
        if dirty and t == self.T - 1:
            buf.copy_(seq)  # leave what caches hold equal to the final sequence
        elif dirty or cur.data_ptr() != buf[:, t].data_ptr():
            buf[:, t] = seq[:, t]
        self.clean = -1 if dirty else buf._version
        return seq[:, t].contiguous()
