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
