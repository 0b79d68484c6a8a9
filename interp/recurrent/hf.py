"""Recurrent and state-space families of ``transformers`` as first-class models: where each
family keeps its recurrent state, and its semantic sites.

A *family adapter* (:class:`Family`, found by :func:`adapt` from the model's modules, not its
name) tells :class:`interp.backends.HFBackend` two things:

- **module sites**: semantic activations read and written with torch hooks at the model's own
  submodules (``blocks.{l}.hook_conv``, ``hook_B``, ``hook_gate_pre``, ...; the table is in
  :mod:`interp.sites`);
- **state sites**: the recurrent state each recurrent layer carries from one token to the next,
  kept in the family's own decoding cache (a transformers ``Cache``, RWKV's state list,
  RecurrentGemma's module buffers, ``xLSTMCache``), wrapped in a :class:`Carry`.

State semantics (one for every family): the site ``blocks.{l}.hook_<kind>`` at position t holds
the state of layer l **after token t**, the state the model carries into step t + 1.  Step t's
own output does not read it (it was computed on the way to it), so a patch at step t changes the
logits at positions t + 1 and later only, exactly as if decoding had been resumed from the
patched state.  This is what HF's cache holds, the same for Mamba, RWKV (whose output at t reads
the state *before* token t), RG-LRU and xLSTM, and what free-running decoding continues from.
(The toy models' ``hook_state`` differs: their y_t reads the patched h_t, so a patch there also
changes step t; that is why these kinds have their own names.)  Patching every state kind of
every layer at step t from another run makes every later logit equal that run's (given the
same later tokens): the state kinds are the whole carry.

The states live only in the cache, so reading or writing them runs the model one token per
forward, from the cache (see :class:`interp.backends.HFBackend` for the cost).

Families (rule: what the modules are, so every model built from them is covered):

- Mamba-1 mixers (MambaMixer, FalconMamba, Jamba's Mamba layers: ``A_log`` and ``x_proj``):
  ``ssm_state`` ``[E, N]``, ``conv_state`` ``[E, K]``; sites ``conv_in``, ``gate_pre``, ``conv``,
  ``dt``, ``B``, ``C``, ``out_proj_in``, ``mixer_in``, ``mixer_out``.
- Mamba-2 mixers (Mamba-2, Zamba2's Mamba layers: ``A_log``, ``dt_bias`` and ``n_groups``):
  ``ssm_state`` ``[H, P, N]``, ``conv_state`` ``[conv_dim, K]``; sites ``gate_pre``,
  ``conv_in``, ``dt`` (per head), ``hidden`` (the scan output y), ``out_proj_in``, ``mixer_in``,
  ``mixer_out``.
- RWKV (v4): ``wkv_state`` ``[3, D]`` (the numerator, denominator and running max exponent of
  the WKV sums: HF's numerically stable form), ``shift_state`` ``[2, d]`` (the previous token's
  normed input of the time mix and of the channel mix); sites ``gate_pre`` (receptance before
  its sigmoid), ``out_proj_in``, ``mixer_in``, ``mixer_out``.
- RecurrentGemma (Griffin) recurrent layers: ``lru_state`` ``[W]`` (the RG-LRU's h),
  ``conv_state`` ``[W, K-1]``; sites ``conv_in``, ``conv``, ``gate_pre`` (the y branch before
  its GeLU), ``lru_out`` (the RG-LRU's output: h_t as step t reads it; patching it changes
  step t's output only, not the recurrence), ``out_proj_in``, ``mixer_in``, ``mixer_out``.
- xLSTM (mLSTM blocks): ``mlstm_cell`` ``[H, dk, dv]`` (C), ``mlstm_norm`` ``[H, dk]`` (n),
  ``mlstm_max`` ``[H, 1]`` (the stabiliser m); sites ``input_gate_pre``, ``forget_gate_pre``,
  ``gate_pre`` (output gate), ``out_proj_in``, ``mixer_in``, ``mixer_out``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from interp import sites as S
from interp.weights import raw


# --------------------------------------------------------------------------------------
# Finding the modules a Hugging Face model calls (also inside a TransformerBridge)
# --------------------------------------------------------------------------------------
def called(root: nn.Module, path: str) -> nn.Module:
    """The module a Hugging Face model calls at ``path`` (dotted attribute names): each owner's
    forward calls ``self.<name>``, which after a bridge rewrote the tree may be a bridge component
    (hooks on it fire all the same)."""
    module = root
    for part in path.split("."):
        owner = raw(module)
        module = owner[int(part)] if part.isdigit() else getattr(owner, part)  # type: ignore[index]
    return module


@dataclass(frozen=True)
class ModuleSite:
    """A site read and written at a module: its output (``where="out"``; element ``index`` of a
    tuple output) or its first input (``where="in"``), optionally the slice ``part`` of the last
    axis.  Every module site is ``[batch, pos, ...]``."""

    name: str
    path: str
    where: str = "out"
    part: tuple[int, int] | None = None
    index: int = 0


# --------------------------------------------------------------------------------------
# Carries: the recurrent state of every layer, in the family's own cache
# --------------------------------------------------------------------------------------
class Carry:
    """The state a model carries between forwards (the decoding cache): the family's own cache
    object, with read / write access per (state kind, layer).  ``length``: tokens consumed."""

    def __init__(self) -> None:
        self.length = 0

    def get_seq_length(self) -> int:
        return self.length

    def kwargs(self, n: int) -> dict[str, Any]:
        """Keyword arguments of the model's forward over ``n`` new tokens."""
        raise NotImplementedError

    def before(self, hf: nn.Module) -> None:
        """Installs state the model keeps outside its cache (module buffers)."""

    def after(self, hf: nn.Module, n: int) -> None:
        """Collects state after a forward of ``n`` tokens."""
        self.length += n

    def read(self, kind: str, layer: int) -> torch.Tensor:
        raise NotImplementedError

    def write(self, kind: str, layer: int, value: torch.Tensor) -> None:
        raise NotImplementedError

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        """Keeps rows ``indices`` of the batch (repeats allowed: one copy per patched cell)."""
        raise NotImplementedError


class CacheCarry(Carry):
    """A transformers ``Cache`` whose recurrent layers keep ``recurrent_states[0]`` (the SSM
    state) and ``conv_states[0]`` (the convolution window): Mamba-1 / Mamba-2 mixers, also in
    hybrids (Jamba, Zamba2)."""

    SLOTS = {"ssm_state": "recurrent_states", "conv_state": "conv_states"}

    def __init__(self, hf: nn.Module) -> None:
        from transformers.cache_utils import DynamicCache

        super().__init__()
        self.cache = DynamicCache(config=hf.config)

    def kwargs(self, n: int) -> dict[str, Any]:
        return {"cache": self.cache, "use_cache": True}

    def _slot(self, kind: str, layer: int) -> torch.Tensor:
        states = getattr(self.cache.layers[layer], self.SLOTS[kind])
        value = states[0]
        if value is None:
            raise RuntimeError(f"layer {layer} has no {kind} before its first token")
        return value

    def read(self, kind: str, layer: int) -> torch.Tensor:
        return self._slot(kind, layer).clone()

    def write(self, kind: str, layer: int, value: torch.Tensor) -> None:
        self._slot(kind, layer).copy_(value)  # in place: HF keeps the cache's tensors at fixed addresses

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self.cache.reorder_cache(indices)


class KVCarry(Carry):
    """A transformers key-value cache: the generic path's decoding cache for attention models."""

    def __init__(self, hf: nn.Module) -> None:
        from transformers.cache_utils import DynamicCache

        super().__init__()
        self.cache = DynamicCache(config=hf.config)

    def kwargs(self, n: int) -> dict[str, Any]:
        return {"cache": self.cache, "use_cache": True}

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self.cache.batch_select_indices(indices)


class _Rows:
    """One of RWKV's token-shift states ``[B, d, L]`` as HF's single-token branch should see it.

    transformers 5.25's ``RwkvSelfAttention.extract_key_value`` and ``RwkvFeedForward.forward``
    read ``state[k][:, :, layer]`` as ``[B, d]`` and mix it with ``hidden [B, 1, d]``, which
    broadcasts to ``[B, B, d]`` for more than one row (measured: logits ``[2, 2, V]`` for 2 rows
    and 1 token).  Handing them this view, whose reads are ``[B, 1, d]`` and whose writes land in
    the state, makes the single-token step exact for any batch (checked in the tests against the
    full forward)."""

    def __init__(self, tensor: torch.Tensor) -> None:
        self.tensor = tensor

    def __getitem__(self, index):
        return self.tensor[index].unsqueeze(1)

    def __setitem__(self, index, value) -> None:
        self.tensor[index] = value


class RwkvCarry(Carry):
    """RWKV's state list: five ``[B, d, L]`` tensors (channel-mix shift, time-mix shift, WKV
    numerator, denominator, max exponent)."""

    def __init__(self, hf: nn.Module, batch: int, device, dtype) -> None:
        super().__init__()
        c: Any = hf.config
        shape = (batch, int(c.hidden_size), int(c.num_hidden_layers))
        self.state = [torch.zeros(shape, dtype=dtype if i <= 1 else torch.float32, device=device) for i in range(5)]
        self.state[4] -= 1e30  # HF's empty state: no key seen yet

    def kwargs(self, n: int) -> dict[str, Any]:
        s = self.state
        state = [_Rows(s[0]), _Rows(s[1]), s[2], s[3], s[4]] if n == 1 else list(s)
        return {"state": state, "use_cache": True}

    def read(self, kind: str, layer: int) -> torch.Tensor:
        s = self.state
        if kind == "wkv_state":
            return torch.stack([s[2][..., layer], s[3][..., layer], s[4][..., layer]], 1)
        return torch.stack([s[1][..., layer], s[0][..., layer]], 1)  # shift_state: time mix, channel mix

    def write(self, kind: str, layer: int, value: torch.Tensor) -> None:
        targets = (2, 3, 4) if kind == "wkv_state" else (1, 0)
        for i, k in enumerate(targets):
            self.state[k][..., layer] = value[:, i]

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self.state = [s.index_select(0, indices.to(s.device)) for s in self.state]


class GriffinCarry(Carry):
    """RecurrentGemma: a transformers ``Cache`` for the attention layers, and per recurrent
    layer the convolution window ``conv1d_state [B, W, K-1]`` and the RG-LRU state
    ``recurrent_states [B, W]``, which HF keeps on the modules (installed before each forward,
    collected after it)."""

    def __init__(self, hf: nn.Module, layers: dict[int, Any], batch: int, device, dtype) -> None:
        from transformers.cache_utils import DynamicCache

        super().__init__()
        self.cache = DynamicCache(config=hf.config)
        self.blocks = layers
        self.conv: dict[int, torch.Tensor] = {}
        self.h: dict[int, torch.Tensor] = {}
        for l, block in layers.items():
            self.conv[l] = torch.zeros(batch, block.lru_width, block.conv1d_width - 1, device=device, dtype=dtype)
            self.h[l] = torch.zeros(batch, block.lru_width, device=device, dtype=torch.float32)

    def __deepcopy__(self, memo):
        out = copy.copy(self)
        out.cache = copy.deepcopy(self.cache, memo)
        out.conv = {l: v.clone() for l, v in self.conv.items()}
        out.h = {l: v.clone() for l, v in self.h.items()}
        return out

    def kwargs(self, n: int) -> dict[str, Any]:
        dev = next(iter(self.h.values())).device if self.h else None
        batch = next(iter(self.h.values())).shape[0] if self.h else 1
        # positions from the carry's own count: the cache's length is 0 for recurrent layers, and
        # position 0 resets the RG-LRU
        pos = torch.arange(self.length, self.length + n, device=dev)[None].expand(batch, -1)
        return {"cache": self.cache, "use_cache": True, "position_ids": pos}

    def before(self, hf: nn.Module) -> None:
        for l, block in self.blocks.items():
            block.conv1d_state = self.conv[l]
            block.rg_lru.recurrent_states = self.h[l]

    def after(self, hf: nn.Module, n: int) -> None:
        super().after(hf, n)
        for l, block in self.blocks.items():
            self.conv[l] = block.conv1d_state
            self.h[l] = block.rg_lru.recurrent_states
            block.conv1d_state, block.rg_lru.recurrent_states = None, None  # no state left behind on the model

    def read(self, kind: str, layer: int) -> torch.Tensor:
        return (self.h if kind == "lru_state" else self.conv)[layer].clone()

    def write(self, kind: str, layer: int, value: torch.Tensor) -> None:
        store = self.h if kind == "lru_state" else self.conv
        store[layer] = value.to(store[layer].dtype).clone()

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self.cache.reorder_cache(indices)
        for store in (self.conv, self.h):
            for l in store:
                store[l] = store[l].index_select(0, indices.to(store[l].device))


class XlstmCarry(Carry):
    """xLSTM's ``xLSTMCache``: per layer ``(C [B, H, dk, dv], n [B, H, dk], m [B, H, 1])``."""

    KINDS = {"mlstm_cell": 0, "mlstm_norm": 1, "mlstm_max": 2}

    def __init__(self, hf: nn.Module, batch: int, device, dtype) -> None:
        from transformers.models.xlstm.modeling_xlstm import xLSTMCache

        super().__init__()
        self.cache = xLSTMCache(hf.config, batch, dtype=dtype, device=device)

    def kwargs(self, n: int) -> dict[str, Any]:
        return {"cache": self.cache, "use_cache": True}

    def read(self, kind: str, layer: int) -> torch.Tensor:
        return self.cache.rnn_state[layer][self.KINDS[kind]].clone()

    def write(self, kind: str, layer: int, value: torch.Tensor) -> None:
        self.cache.rnn_state[layer][self.KINDS[kind]].copy_(value)

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        for l, parts in self.cache.rnn_state.items():
            self.cache.rnn_state[l] = tuple(p.index_select(0, indices.to(p.device)) for p in parts)


# --------------------------------------------------------------------------------------
# Family adapters
# --------------------------------------------------------------------------------------
@dataclass
class Family:
    """What :class:`interp.backends.HFBackend` needs of a recurrent family.

    ``states``: state kind -> the layers that carry it.  ``sites``: the module sites.
    ``new_carry(batch, device, dtype)``: an empty :class:`Carry`.  ``continues_chunks``: whether a
    forward of several tokens may continue from a non-empty carry (else they are fed one by one).
    ``missing``: semantic sites the family computes inside a function (no module to hook).
    """

    name: str
    states: dict[str, tuple[int, ...]]
    sites: list[ModuleSite]
    new_carry: Callable[[int, Any, Any], Carry]
    continues_chunks: bool = True
    missing: tuple[str, ...] = ()

    def state_sites(self) -> dict[str, tuple[str, int]]:
        """Hook name -> (state kind, layer)."""
        from interp import sites as S

        return {S.kind(k).hook(l): (k, l) for k, layers in self.states.items() for l in layers}


def _mamba_mixers(hf: nn.Module) -> list[tuple[str, Any]]:
    """(path, HF module) of every Mamba-1 / Mamba-2 mixer: modules with ``A_log`` and a ``layer_idx``."""
    out: list[tuple[str, Any]] = []
    for path, module in hf.named_modules():
        m = raw(module)
        if hasattr(m, "A_log") and isinstance(getattr(m, "layer_idx", None), int) and hasattr(m, "in_proj"):
            if not any(path.startswith(p + ".") for p, _ in out) and all(m is not x for _, x in out):
                out.append((path, m))
    return out


def _clean(path: str) -> str:
    """A module path without the bridge's ``_original_component`` hops."""
    return ".".join(p for p in path.split(".") if p != "_original_component")


def _mamba(hf: nn.Module) -> Family | None:
    mixers = [(_clean(p), m) for p, m in _mamba_mixers(hf)]
    if not mixers:
        return None
    sites: list[ModuleSite] = []
    layers = []
    kinds = set()
    for path, m in mixers:
        l = int(m.layer_idx)
        layers.append(l)
        E = int(m.intermediate_size)
        N = int(m.ssm_state_size)
        sites += [
            ModuleSite(S.kind("mixer_in").hook(l), path, "in"),
            ModuleSite(S.kind("mixer_out").hook(l), path, "out"),
            ModuleSite(S.kind("out_proj_in").hook(l), f"{path}.out_proj", "in"),
        ]
        if hasattr(m, "x_proj"):  # Mamba-1: in_proj -> (x, z); conv; x_proj -> (dt, B, C)
            kinds.add("mamba")
            R = int(m.time_step_rank)
            sites += [
                ModuleSite(S.kind("conv_in").hook(l), f"{path}.in_proj", "out", (0, E)),
                ModuleSite(S.kind("gate_pre").hook(l), f"{path}.in_proj", "out", (E, 2 * E)),
                ModuleSite(S.kind("conv").hook(l), f"{path}.x_proj", "in"),
            ]
            if hasattr(m, "b_layernorm"):  # FalconMamba / Jamba normalise dt, B and C after x_proj
                sites += [
                    ModuleSite(S.kind("dt").hook(l), f"{path}.dt_layernorm"),
                    ModuleSite(S.kind("B").hook(l), f"{path}.b_layernorm"),
                    ModuleSite(S.kind("C").hook(l), f"{path}.c_layernorm"),
                ]
            else:
                sites += [
                    ModuleSite(S.kind("dt").hook(l), f"{path}.x_proj", "out", (0, R)),
                    ModuleSite(S.kind("B").hook(l), f"{path}.x_proj", "out", (R, R + N)),
                    ModuleSite(S.kind("C").hook(l), f"{path}.x_proj", "out", (R + N, R + 2 * N)),
                ]
        else:  # Mamba-2: in_proj -> (z, xBC, dt); the gated norm reads the scan output y
            kinds.add("mamba2")
            conv_dim, H = int(m.conv_dim), int(m.num_heads)
            sites += [
                ModuleSite(S.kind("gate_pre").hook(l), f"{path}.in_proj", "out", (0, E)),
                ModuleSite(S.kind("conv_in").hook(l), f"{path}.in_proj", "out", (E, E + conv_dim)),
                ModuleSite(S.kind("dt").hook(l), f"{path}.in_proj", "out", (E + conv_dim, E + conv_dim + H)),
                ModuleSite(S.kind("hidden").hook(l), f"{path}.norm", "in"),
            ]
    layers_t = tuple(sorted(layers))
    return Family(
        name="mamba2" if kinds == {"mamba2"} else ("mamba" if kinds == {"mamba"} else "mamba-mixed"),
        states={"ssm_state": layers_t, "conv_state": layers_t},
        sites=sites,
        new_carry=lambda batch, device, dtype: CacheCarry(hf),
        missing=() if "mamba" in kinds else ("conv", "B", "C"),  # Mamba-2 splits them inside its scan function
    )


def _rwkv(hf: nn.Module) -> Family | None:
    blocks: Any = getattr(getattr(raw(hf), "rwkv", None), "blocks", None)
    mix = getattr(raw(blocks[0]), "attention", None) if blocks is not None else None
    if (
        blocks is None
        or mix is None
        or not all(hasattr(raw(mix), a) for a in ("time_decay", "time_first", "time_mix_key"))
    ):
        return None  # RWKV-4's time mix: a decay, a bonus for the current token and token-shift mixing
    L = len(blocks)
    sites: list[ModuleSite] = []
    for l in range(L):
        p = f"rwkv.blocks.{l}.attention"
        sites += [
            ModuleSite(S.kind("mixer_in").hook(l), p, "in"),
            ModuleSite(S.kind("mixer_out").hook(l), p, "out"),
            ModuleSite(S.kind("gate_pre").hook(l), f"{p}.receptance"),
            ModuleSite(S.kind("out_proj_in").hook(l), f"{p}.output", "in"),
        ]
    every = tuple(range(L))
    return Family(
        name="rwkv",
        states={"wkv_state": every, "shift_state": every},
        sites=sites,
        new_carry=lambda batch, device, dtype: RwkvCarry(hf, batch, device, dtype),
    )


def _griffin(hf: nn.Module) -> Family | None:
    base = getattr(raw(hf), "model", None)
    layers = getattr(base, "layers", None)
    if layers is None:
        return None
    recurrent: dict[int, Any] = {}
    for l in range(len(layers)):
        tb = getattr(raw(layers[l]), "temporal_block", None)
        if tb is not None and hasattr(raw(tb), "rg_lru"):
            recurrent[l] = raw(tb)
    if not recurrent:
        return None
    sites: list[ModuleSite] = []
    for l in range(len(layers)):
        p = f"model.layers.{l}.temporal_block"
        sites += [ModuleSite(S.kind("mixer_in").hook(l), p, "in"), ModuleSite(S.kind("mixer_out").hook(l), p, "out")]
        if l in recurrent:
            sites += [
                ModuleSite(S.kind("conv_in").hook(l), f"{p}.linear_x"),
                ModuleSite(S.kind("gate_pre").hook(l), f"{p}.linear_y"),
                ModuleSite(S.kind("conv").hook(l), f"{p}.rg_lru", "in"),
                ModuleSite(S.kind("lru_out").hook(l), f"{p}.rg_lru"),
                ModuleSite(S.kind("out_proj_in").hook(l), f"{p}.linear_out", "in"),
            ]
    rec = tuple(sorted(recurrent))
    return Family(
        name="recurrent_gemma",
        states={"lru_state": rec, "conv_state": rec},
        sites=sites,
        new_carry=lambda batch, device, dtype: GriffinCarry(hf, recurrent, batch, device, dtype),
        # HF's multi-token path rebuilds the convolution window from the new tokens alone
        continues_chunks=False,
        missing=("input_gate", "recurrent_gate"),  # computed inside the RG-LRU's forward
    )


def _xlstm(hf: nn.Module) -> Family | None:
    backbone = getattr(raw(hf), "backbone", None)
    blocks = getattr(backbone, "blocks", None)
    if blocks is None or not hasattr(raw(blocks[0]), "mlstm_layer"):
        return None
    sites: list[ModuleSite] = []
    single = getattr(hf.config, "weight_mode", "single") == "single"
    for l in range(len(blocks)):
        p = f"backbone.blocks.{l}.mlstm_layer"
        sites += [
            ModuleSite(S.kind("mixer_in").hook(l), p, "in"),
            ModuleSite(S.kind("mixer_out").hook(l), p, "out"),
            ModuleSite(S.kind("out_proj_in").hook(l), f"{p}.out_proj", "in"),
            ModuleSite(f"blocks.{l}.ln2.hook_in", f"backbone.blocks.{l}.norm_ffn", "in"),
            ModuleSite(S.kind("mlp_out").hook(l), f"backbone.blocks.{l}.ffn"),
        ]
        if single:
            sites += [
                ModuleSite(S.kind("gate_pre").hook(l), f"{p}.ogate_preact"),
                ModuleSite(S.kind("input_gate_pre").hook(l), f"{p}.igate_preact"),
                ModuleSite(S.kind("forget_gate_pre").hook(l), f"{p}.fgate_preact"),
            ]
    every = tuple(range(len(blocks)))
    return Family(
        name="xlstm",
        states={"mlstm_cell": every, "mlstm_norm": every, "mlstm_max": every},
        sites=sites,
        new_carry=lambda batch, device, dtype: XlstmCarry(hf, batch, device, dtype),
    )


def adapt(hf: nn.Module) -> Family | None:
    """The recurrent family adapter of a Hugging Face model (None: no recurrent layers known)."""
    for rule in (_rwkv, _griffin, _xlstm, _mamba):
        fam = rule(hf)
        if fam is not None:
            return fam
    return None
