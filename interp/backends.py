"""Execution backends behind :class:`interp.Model`: one interface, two implementations.

A backend runs tokens through a module with a list of forward hooks ``(site name, fn)``
and returns the logits; ``fn(activation, hook)`` follows the TransformerLens convention
(``hook.name`` is the site name; returning a tensor replaces the activation, returning
None keeps it).

- :class:`HookPointBackend`: modules built from TransformerLens hook points (the
  ``TransformerBridge`` for transformers, :class:`interp.recurrent.HookedRecurrent`).
- :class:`NNsightBackend`: any ``torch.nn.Module`` with a mapping of site names to its
  submodules, read and written through nnsight.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping, Sequence
from types import SimpleNamespace
from typing import Any, Protocol, cast

import torch
from torch import nn

from interp.errors import InputError

HookFn = Callable[[torch.Tensor, object], "torch.Tensor | None"]
Hooks = Sequence[tuple[str, HookFn]]


class Backend(Protocol):
    module: nn.Module
    #: whether :meth:`step` continues from a key-value cache (else decoding recomputes)
    supports_cache: bool

    def run(self, tokens: torch.Tensor, hooks: Hooks) -> torch.Tensor: ...

    def step(self, tokens: torch.Tensor, hooks: Hooks, cache) -> tuple[torch.Tensor, object]: ...

    def site_names(self) -> list[str]: ...


def logits_of(output) -> torch.Tensor:
    """The logits tensor from whatever a module returns (tensor, HF output, tuple)."""
    if isinstance(output, torch.Tensor):
        return output
    if hasattr(output, "logits"):
        return output.logits
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    raise InputError(f"cannot find logits in a model output of type {type(output).__name__}")


class _HookedModule(Protocol):
    """The methods of a TransformerLens ``HookedRootModule`` / ``TransformerBridge`` the backend calls."""

    def run_with_cache(self, *args: Any, **kwargs: Any) -> Any: ...

    def run_with_hooks(self, *args: Any, **kwargs: Any) -> Any: ...


class HookPointBackend:
    """Runs a TransformerLens ``HookedRootModule``-style module (bridge or recurrent)."""

    def __init__(self, module: nn.Module, probe_tokens: torch.Tensor, *, supports_cache: bool = False):
        self.module = module
        self.supports_cache = supports_cache
        self._names = self._discover(probe_tokens)

    @property
    def _hooked(self) -> _HookedModule:
        # the module is built from hook points (bridge or HookedRecurrent: see the class
        # docstring); torch's nn.Module type does not know their run_with_* methods
        return cast(_HookedModule, self.module)

    def _discover(self, probe_tokens: torch.Tensor) -> list[str]:
        # A filter-function hook reports only canonical names (blocks.0.hook_in); the
        # module's own run_with_cache also reports the legacy aliases (hook_resid_pre).
        with torch.no_grad():
            _, cache = self._hooked.run_with_cache(probe_tokens)
            # a hook point whose value is not one tensor (a mixture-of-experts router's tuple) is not a
            # site: what reaches a hook is checked directly (the cache may keep a tuple's first tensor)
            seen: dict[str, bool] = {}

            def note(name: str):
                def fn(x, hook):
                    seen[name] = isinstance(x, torch.Tensor)

                return fn

            self._hooked.run_with_hooks(probe_tokens, fwd_hooks=[(n, note(n)) for n in cache.keys()])
        return [name for name in cache.keys() if seen.get(name, True)]

    def site_names(self) -> list[str]:
        return list(self._names)

    def run(self, tokens: torch.Tensor, hooks: Hooks) -> torch.Tensor:
        if not hooks:
            return logits_of(self.module(tokens))
        return logits_of(self._hooked.run_with_hooks(tokens, fwd_hooks=list(hooks)))

    def step(self, tokens: torch.Tensor, hooks: Hooks, cache) -> tuple[torch.Tensor, object]:
        """Logits of ``tokens`` (the next positions after those in ``cache``; None = a fresh
        prompt) and the extended cache (a transformers ``Cache``)."""
        if not self.supports_cache:
            raise NotImplementedError("this model has no key-value cache; decoding recomputes the prompt")
        kwargs = {"return_type": "logits_and_cache", "use_cache": True}
        if cache is not None:
            kwargs["past_key_values"] = cache
        logits, cache = self._hooked.run_with_hooks(tokens, fwd_hooks=list(hooks), **kwargs)
        return logits, cache


class NNsightBackend:
    """Wraps any module through nnsight; ``sites`` maps site names to submodule paths.

    nnsight requires interventions in execution order, so the order of the sites is read
    once from a plain forward with torch hooks.
    """

    def __init__(self, module: nn.Module, sites: Mapping[str, str], probe_tokens: torch.Tensor):
        from nnsight import NNsight

        if not sites:
            raise InputError("a custom module needs a non-empty mapping of site names to submodule paths")
        modules = dict(module.named_modules())
        for site, path in sites.items():
            if path not in modules or path == "":
                near = difflib.get_close_matches(path, [m for m in modules if m], n=5)
                raise InputError(
                    f"site {site!r} names submodule {path!r}, which the module does not have; "
                    f"close matches: {near or sorted(m for m in modules if m)[:20]}"
                )
        self.module = module
        self.supports_cache = False
        self.sites = dict(sites)
        self._nn = NNsight(module)
        self._order = self._execution_order(probe_tokens)

    def _execution_order(self, probe_tokens: torch.Tensor) -> list[str]:
        order: list[str] = []
        handles = []
        for site, path in self.sites.items():
            sub = self.module.get_submodule(path)
            handles.append(sub.register_forward_hook(lambda m, i, o, s=site: order.append(s)))
        try:
            with torch.no_grad():
                self.module(probe_tokens)
        finally:
            for h in handles:
                h.remove()
        missing = [s for s in self.sites if s not in order]
        if missing:
            raise InputError(f"sites {missing} never run in a forward pass, so they cannot be read or patched")
        return list(dict.fromkeys(order))

    def site_names(self) -> list[str]:
        return list(self._order)

    def step(self, tokens: torch.Tensor, hooks: Hooks, cache) -> tuple[torch.Tensor, object]:
        raise NotImplementedError("custom modules have no key-value cache; decoding recomputes the prompt")

    def _envoy(self, site: str):
        envoy = self._nn
        for part in self.sites[site].split("."):
            envoy = getattr(envoy, part)
        return envoy

    def run(self, tokens: torch.Tensor, hooks: Hooks) -> torch.Tensor:
        if not hooks:
            return logits_of(self.module(tokens))
        by_site: dict[str, list[HookFn]] = {}
        for name, fn in hooks:
            by_site.setdefault(name, []).append(fn)
        with self._nn.trace(tokens):
            for site in self._order:
                if site not in by_site:
                    continue
                envoy = self._envoy(site)
                out = envoy.output
                is_tuple = isinstance(out, tuple)
                value = out[0] if is_tuple else out
                hook = SimpleNamespace(name=site, ctx={})
                for fn in by_site[site]:
                    new = fn(value, hook)
                    if new is not None:
                        value = new
                envoy.output = (value, *out[1:]) if is_tuple else value
            result = self._nn.output.save()
        return logits_of(result)


# --------------------------------------------------------------------------------------
# Hugging Face models: bridge hook points, module sites and per-step recurrent state
# --------------------------------------------------------------------------------------
class HFLM(nn.Module):
    """A Hugging Face causal LM that TransformerLens cannot wrap, as the library reads models:
    ``forward(tokens) -> logits``, the final norm ``ln_final`` and the unembedding ``W_U [d_model,
    d_vocab]`` / ``b_U`` (what :func:`interp.weights.readout` reads of a bridge), and the HF model
    itself as ``original_model``."""

    def __init__(self, hf: nn.Module, final_norm: str | None, unembed: str):
        super().__init__()
        self.original_model = hf
        self._final_norm = final_norm
        self._unembed = unembed

    @property
    def ln_final(self) -> nn.Module:
        if self._final_norm is None:
            raise AttributeError("no final norm found")
        return self.original_model.get_submodule(self._final_norm)

    @property
    def W_U(self) -> torch.Tensor:
        weight = self.original_model.get_submodule(self._unembed).weight
        assert isinstance(weight, torch.Tensor)  # a linear head's [d_vocab, d_model] weight
        return weight.T

    @property
    def b_U(self) -> torch.Tensor:
        bias = getattr(self.original_model.get_submodule(self._unembed), "bias", None)
        return bias if bias is not None else torch.zeros(self.W_U.shape[1], device=self.W_U.device)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return logits_of(self.original_model(tokens))


def _first_input(args: tuple, kwargs: dict) -> tuple[torch.Tensor | None, str | int | None]:
    """A module call's first tensor argument and where it is (position 0 or a keyword)."""
    if args and isinstance(args[0], torch.Tensor):
        return args[0], 0
    for key, value in kwargs.items():
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            return value, key
    return None, None


class HFBackend:
    """Runs a Hugging Face causal LM, wrapped by a ``TransformerBridge`` or not (the generic path),
    with three kinds of sites under one naming scheme (:mod:`interp.sites`):

    - the bridge's hook points (when it is wrapped);
    - module sites (:class:`interp.recurrent.hf.ModuleSite`): activations at the model's own
      submodules, read and written with torch hooks: the generic path's ``hook_embed``,
      ``blocks.{l}.hook_resid_pre`` / ``hook_resid_post``, ``ln_final.hook_in``,
      ``unembed.hook_in`` (and ``hook_attn_out`` / ``hook_mlp_out`` where the layers name them),
      and a recurrent family's semantic sites (convolution, gates, dt / B / C, mixer in and out);
    - state sites: a recurrent family's state per layer and token (see
      :mod:`interp.recurrent.hf` for the semantics), kept in its own decoding cache.

    Cost: the state lives only in the cache, so a run with a hook on a state site feeds the
    tokens one per forward (T forwards of one token for a prompt of T tokens, each hooked site
    handed its whole ``[batch, T, ...]`` sequence so far at every step, as
    :mod:`interp.recurrent`'s per-step sites are); a run without one is one ordinary forward.
    The stepped run keeps no gradients (HF's cached steps update their state in place, which
    autograd cannot differentiate through): gradient analyses on state sites are refused.

    ``step(tokens, hooks, cache)`` continues from the family's cache (a
    :class:`interp.recurrent.hf.Carry`; a key-value cache on the generic path), so decoding
    costs one token per step.
    """

    def __init__(
        self,
        hf: nn.Module,
        probe_tokens: torch.Tensor,
        *,
        bridge: nn.Module | None = None,
        family=None,
        sites: Sequence = (),
        final_norm: str | None = None,
        unembed: str | None = None,
        kv_cache: bool = False,
    ):
        from interp.recurrent import hf as R

        self.hf = hf
        self.bridge = bridge
        self.family = family
        self.module: nn.Module = bridge if bridge is not None else HFLM(hf, final_norm, unembed or "lm_head")
        self.supports_cache = family is not None or bool(kv_cache)
        self._bridge_names: list[str] = []
        if bridge is not None:
            self._bridge_names = HookPointBackend(bridge, probe_tokens)._names
        bridge_set = set(self._bridge_names)
        wanted = [
            s for s in list(sites) + (list(family.sites) if family is not None else []) if s.name not in bridge_set
        ]
        self._modules: dict[str, R.ModuleSite] = {}
        for s in wanted:
            self._modules.setdefault(s.name, s)
        self._states: dict[str, tuple[str, int]] = family.state_sites() if family is not None else {}
        self._hookpoints = {n: self._hookpoint(n) for n in self._modules}
        order = self._fired(probe_tokens)
        self._modules = {n: self._modules[n] for n in order}
        #: why the state sites are missing, if the family's stepping failed its check (else None)
        self.state_problem = self._check_states(probe_tokens)
        if self.state_problem is not None:
            self.family, self._states = None, {}
            self.supports_cache = bool(kv_cache)
        self._names = self._bridge_names + order + list(self._states)

    def _check_states(self, probe: torch.Tensor) -> str | None:
        """None if feeding the probe one token per forward from the family's cache, its states read
        and written back, reproduces the ordinary forward; else why not (the state sites are then
        left out rather than wrong)."""
        if not self._states:
            return None
        try:
            with torch.no_grad():
                want = self._call(probe, [], {})
                got = self.run(probe, [(n, lambda x, hook: x.clone()) for n in self._states])  # every read and write
        except Exception as e:  # a family rule matched modules whose cache it does not know
            return (
                f"stepping from the cache failed ({type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''})"
            )
        err = float((got.float() - want.float()).abs().max())
        # measured: stepping is within 3e-6 of the forward in float32, 3e-2 in bfloat16
        tol = 1e-4 if next(self.hf.parameters()).dtype == torch.float32 else 5e-2
        if not err <= tol * (1 + float(want.abs().max())):
            return f"stepping from the cache gives logits {err:.2g} away from the forward"
        return None

    # --- sites -----------------------------------------------------------------------
    @staticmethod
    def _hookpoint(name: str):
        from transformer_lens.hook_points import HookPoint

        hp = HookPoint()
        hp.name = name
        return hp

    def site_names(self) -> list[str]:
        return list(self._names)

    def _fired(self, probe: torch.Tensor) -> list[str]:
        """The module sites, in the order a forward reaches them (sites that never run are dropped)."""
        seen: list[str] = []

        def record(name: str):
            return lambda x, hook: seen.append(name)

        with torch.no_grad():
            self._call(probe, [(n, record(n)) for n in self._modules], {})
        return list(dict.fromkeys(seen))

    def _install(self, hooks: dict[str, list[HookFn]]):
        """Torch hooks for the module sites in ``hooks``; returns their handles."""
        from interp.recurrent.hf import called

        handles = []
        for name, fns in hooks.items():
            site, hp = self._modules[name], self._hookpoints[name]
            module = called(self.hf, site.path)
            if site.where == "in":
                handles.append(module.register_forward_pre_hook(self._pre_hook(site, fns, hp), with_kwargs=True))
            else:
                handles.append(module.register_forward_hook(self._out_hook(site, fns, hp)))
        return handles

    @staticmethod
    def _edit(value: torch.Tensor, site, fns: list[HookFn], hp) -> torch.Tensor | None:
        x = value if site.part is None else value[..., site.part[0] : site.part[1]]
        new = x
        for fn in fns:
            out = fn(new, hp)
            if out is not None:
                new = out
        if new is x:
            return None
        if site.part is not None:
            a, b = site.part
            new = torch.cat([value[..., :a], new.to(value.dtype), value[..., b:]], -1)
        return new

    def _out_hook(self, site, fns, hp):
        def hook(module, args, output):
            value = output[site.index] if isinstance(output, tuple) else output
            new = self._edit(value, site, fns, hp)
            if new is None:
                return None
            if isinstance(output, tuple):
                return output[: site.index] + (new,) + output[site.index + 1 :]
            return new

        return hook

    def _pre_hook(self, site, fns, hp):
        def hook(module, args, kwargs):
            value, where = _first_input(args, kwargs)
            if value is None:
                return None
            new = self._edit(value, site, fns, hp)
            if new is None:
                return None
            if where == 0:
                return (new, *args[1:]), kwargs
            return args, {**kwargs, str(where): new}

        return hook

    # --- running ----------------------------------------------------------------------
    def _call(self, tokens: torch.Tensor, hooks: Hooks, kwargs: dict) -> torch.Tensor:
        """One forward of ``tokens`` with ``hooks`` (bridge or module sites)."""
        bridge_hooks = [(n, fn) for n, fn in hooks if n not in self._modules]
        module_hooks: dict[str, list[HookFn]] = {}
        for n, fn in hooks:
            if n in self._modules:
                module_hooks.setdefault(n, []).append(fn)
        handles = self._install(module_hooks)
        try:
            if self.bridge is None:
                return logits_of(self.hf(tokens, **kwargs))
            if bridge_hooks:
                return logits_of(self._bridge.run_with_hooks(tokens, fwd_hooks=bridge_hooks, **kwargs))
            return logits_of(self.bridge(tokens, **kwargs))
        finally:
            for h in handles:
                h.remove()

    @property
    def _bridge(self) -> _HookedModule:
        return cast(_HookedModule, self.bridge)

    def _stepped_needed(self, hooks: Hooks) -> bool:
        return any(n in self._states for n, _ in hooks)

    def _new_carry(self, batch: int, device, dtype):
        from interp.recurrent.hf import KVCarry

        if self.family is not None:
            return self.family.new_carry(batch, device, dtype)
        return KVCarry(self.hf)

    def _place(self, tokens: torch.Tensor) -> tuple[torch.device, torch.dtype]:
        p = next(self.hf.parameters())
        return tokens.device, p.dtype

    def run(self, tokens: torch.Tensor, hooks: Hooks) -> torch.Tensor:
        if not self._stepped_needed(hooks):
            return self._call(tokens, hooks, {})
        device, dtype = self._place(tokens)
        return self._stepped(tokens, hooks, self._new_carry(tokens.shape[0], device, dtype))

    def step(self, tokens: torch.Tensor, hooks: Hooks, cache) -> tuple[torch.Tensor, object]:
        """Logits of ``tokens`` continuing from ``cache`` (None: a fresh prompt) and the cache."""
        if not self.supports_cache:
            raise NotImplementedError("this model has no cache; decoding recomputes the prompt")
        device, dtype = self._place(tokens)
        carry = cache if cache is not None else self._new_carry(tokens.shape[0], device, dtype)
        n = tokens.shape[1]
        chunks_ok = self.family is None or self.family.continues_chunks or carry.length == 0
        if self._stepped_needed(hooks) or (n > 1 and not chunks_ok):
            return self._stepped(tokens, hooks, carry), carry
        kwargs = carry.kwargs(n)
        carry.before(self.hf)
        try:
            logits = self._call(tokens, hooks, kwargs)
        finally:
            carry.after(self.hf, n)
        return logits, carry

    def _stepped(self, tokens: torch.Tensor, hooks: Hooks, carry) -> torch.Tensor:
        """The run fed one token per forward from ``carry``; every hooked site is handed its whole
        sequence so far at each step (the per-step contract of :mod:`interp.recurrent`).  No
        gradients: asking for them (a gradient hook of :mod:`interp.gradients`) is refused."""

        if torch.is_grad_enabled() and any(
            getattr(getattr(f, "__wrapped__", f), "wants_grad", False) for _, f in hooks
        ):
            raise InputError(
                "gradients do not flow through a run that reads or writes per-step state sites (the model's "
                "cached step updates its state in place): use exact patching (circuits.patch) on state "
                "sites, or gradients on the other sites"
            )
        with torch.no_grad():  # see above: a stepped run keeps no gradients
            return self._stepped_run(tokens, hooks, carry)

    def _stepped_run(self, tokens: torch.Tensor, hooks: Hooks, carry) -> torch.Tensor:
        from interp.interventions import layout_of
        from interp.recurrent.steps import _StepSite

        T = tokens.shape[1]
        by_site: dict[str, list[HookFn]] = {}
        reshaping: list[tuple[str, HookFn]] = []
        for name, fn in hooks:
            if getattr(fn, "reshapes", False):
                reshaping.append((name, fn))  # selects positions of the unembedding's input: done on the logits
                continue
            by_site.setdefault(name, []).append(fn)
        steppers: dict[str, tuple[_StepSite, list[int]]] = {}
        patterns = {name for name in by_site if layout_of(name) == "pattern"}
        for name, fns in by_site.items():
            hp = self._hookpoint(name)
            for fn in fns:
                hp.add_hook(_query_major(fn) if name in patterns else fn)
            steppers[name] = (_StepSite(hp, T), [0])

        def per_step(name: str) -> HookFn:
            site, now = steppers[name]
            if name in patterns:
                return _pattern_step(site, now, T)

            def hook(x: torch.Tensor, hook) -> torch.Tensor | None:
                if not isinstance(x, torch.Tensor):
                    return None  # a hook point that carries a tuple at one token (a router's): not a site
                cur = site(now[0], x[:, -1])  # this step's position is the run's last
                if torch.equal(cur, x[:, -1]):
                    return None  # unchanged: the module's own value goes on (a bridge norm rebuilds edited ones)
                if x.shape[1] == 1:
                    return cur.unsqueeze(1).to(x.dtype)
                out = x.clone()
                out[:, -1] = cur
                return out

            return hook

        act_hooks = [(n, per_step(n)) for n in steppers if n not in self._states]
        outs = []
        for t in range(T):
            for _, now in steppers.values():
                now[0] = t
            kwargs = carry.kwargs(1)
            carry.before(self.hf)
            try:
                outs.append(self._call(tokens[:, t : t + 1], act_hooks, kwargs))
            finally:
                carry.after(self.hf, 1)
            for name, (site, _) in steppers.items():
                if name in self._states:
                    kind, layer = self._states[name]
                    carry.write(kind, layer, site(t, carry.read(kind, layer)))
        logits = torch.cat(outs, 1)
        for name, fn in reshaping:
            out = fn(logits, SimpleNamespace(name=name))
            logits = logits if out is None else out
        return logits


def _query_major(fn: HookFn) -> HookFn:
    """``fn`` over an attention pattern ``[batch, head, query, key]`` handed query-major
    ``[batch, query, head, key]`` (the layout the per-step machinery steps along)."""

    def hook(x: torch.Tensor, hook) -> torch.Tensor | None:
        out = fn(x.transpose(1, 2), hook)
        return None if out is None else out.transpose(1, 2)

    return hook


def _pattern_step(site, now: list[int], T: int) -> HookFn:
    """The per-step hook of an attention pattern: a cached step's row ``[batch, head, 1, keys]``
    (the last ``keys`` positions, a sliding window's cache keeping fewer) becomes row t of the whole
    ``[batch, head, T, T]`` pattern so far; the hooks' row t goes back."""

    def hook(x: torch.Tensor, hook) -> torch.Tensor | None:
        t, k = now[0], x.shape[-1]
        row = x.new_zeros(x.shape[0], x.shape[1], T)
        row[..., t + 1 - k : t + 1] = x[:, :, -1]
        cur = site(t, row)[..., t + 1 - k : t + 1]
        if torch.equal(cur, x[:, :, -1]):
            return None
        out = x.clone()
        out[:, :, -1] = cur
        return out

    return hook
