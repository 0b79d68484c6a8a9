"""The edge graph of a transformer and a forward pass in which every receiver has its own input.

Nodes (in residual-stream order): ``input`` (token + position embeddings, the residual
entering block 0), each head ``a{l}.h{h}`` (its write ``z @ W_O``), each MLP ``m{l}``, and
``logits``.  Receivers: each head's ``q`` / ``k`` / ``v`` input, each MLP's input and the
logits (the final residual before ``ln_final``).  An edge ``u -> r`` exists when ``u`` writes
to the residual stream before ``r`` reads it (heads of layer l feed the MLP of layer l).

:func:`run` executes the model with forward hooks so that receiver ``r`` reads
``residual - sum over u of missing[u, r] * (out_u - ref_u)`` (+ ``eps_r``): with
``missing = 0`` and ``eps`` zero leaves it gives per-receiver input gradients (EAP); with
``missing = 1 - kept`` and ``ref`` the corrupt run's outputs it runs a circuit with every
edge not kept patched to the corrupt run (faithfulness).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from circuits.components import Heads

QKV = ("q", "k", "v")


@dataclass
class Graph:
    """Node and receiver layout of a model: ``n_layers`` x ``n_heads`` heads, MLPs where present."""

    n_layers: int
    n_heads: int
    has_mlp: tuple[bool, ...]

    @classmethod
    def of(cls, model) -> "Graph":
        model.require_attention("edge attribution")
        names = set(model.site_names)
        mlp = tuple(f"blocks.{l}.hook_mlp_out" in names for l in range(model.cfg.n_layers))
        return cls(model.cfg.n_layers, model.cfg.n_heads, mlp)

    # nodes: input, then per layer its heads and its MLP
    def nodes(self) -> list[dict]:
        out = [{"name": "input", "kind": "input", "layer": -1, "head": None}]
        for l in range(self.n_layers):
            out += [{"name": f"a{l}.h{h}", "kind": "head", "layer": l, "head": h} for h in range(self.n_heads)]
            if self.has_mlp[l]:
                out.append({"name": f"m{l}", "kind": "mlp", "layer": l, "head": None})
        out.append({"name": "logits", "kind": "logits", "layer": self.n_layers, "head": None})
        return out

    def upstream_count(self, layer: int, kind: str) -> int:
        """How many nodes (a prefix of :meth:`nodes`) write before a receiver of ``kind`` in ``layer``."""
        n = 1
        for l in range(layer):
            n += self.n_heads + int(self.has_mlp[l])
        if kind == "mlp":
            n += self.n_heads
        return n

    def receivers(self) -> list[dict]:
        """Receivers in forward order: per layer the q, k, v inputs of each head, then the MLP; then logits."""
        out = []
        for l in range(self.n_layers):
            out += [{"node": f"a{l}.h{h}", "layer": l, "head": h, "component": c} for c in QKV
                    for h in range(self.n_heads)]
            if self.has_mlp[l]:
                out.append({"node": f"m{l}", "layer": l, "head": None, "component": ""})
        out.append({"node": "logits", "layer": self.n_layers, "head": None, "component": ""})
        return out

    def n_upstream(self) -> int:
        return len(self.nodes()) - 1

    def receiver_index(self) -> dict[tuple[str, str], int]:
        return {(r["node"], r["component"]): i for i, r in enumerate(self.receivers())}

    def valid(self) -> torch.Tensor:
        """``[n_upstream, n_receivers]`` bool: which (sender, receiver) pairs are edges."""
        recv = self.receivers()
        out = torch.zeros(self.n_upstream(), len(recv), dtype=torch.bool)
        for j, r in enumerate(recv):
            kind = "logits" if r["node"] == "logits" else ("mlp" if r["head"] is None else "head")
            n = self.n_upstream() if kind == "logits" else self.upstream_count(r["layer"], kind)
            out[:n, j] = True
        return out


@dataclass
class NodeOutputs:
    """What each node writes to the residual stream in one run (``[batch, pos, d_model]`` each)."""

    input: torch.Tensor
    heads: list[torch.Tensor]          # per layer [batch, pos, n_heads, d_model]
    mlps: list[torch.Tensor | None]    # per layer

    def stacked(self, graph: Graph) -> torch.Tensor:
        """``[n_upstream, batch, pos, d_model]`` in node order."""
        parts = [self.input[None]]
        for l in range(graph.n_layers):
            parts.append(self.heads[l].permute(2, 0, 1, 3))
            if graph.has_mlp[l]:
                parts.append(self.mlps[l][None])
        return torch.cat(parts)


def cache_names(graph: Graph) -> list[str]:
    names = ["blocks.0.hook_resid_pre"] + [f"blocks.{l}.attn.hook_z" for l in range(graph.n_layers)]
    return names + [f"blocks.{l}.hook_mlp_out" for l in range(graph.n_layers) if graph.has_mlp[l]]


def outputs_from_cache(cache: dict, graph: Graph, heads: Heads) -> NodeOutputs:
    return NodeOutputs(cache["blocks.0.hook_resid_pre"],
                       [heads.outputs(l, cache[f"blocks.{l}.attn.hook_z"]) for l in range(graph.n_layers)],
                       [cache.get(f"blocks.{l}.hook_mlp_out") for l in range(graph.n_layers)])


def run(model, heads: Heads, graph: Graph, tokens: torch.Tensor, *, hooks: list = (),
        input_value: torch.Tensor | None = None, missing: torch.Tensor | None = None,
        ref: NodeOutputs | None = None, eps: dict | None = None) -> torch.Tensor:
    """Logits of a run where every receiver reads its own input (see the module docstring).

    input_value: replaces the residual entering block 0 (EAP-IG interpolation).  missing:
    ``[n_upstream, n_receivers]`` float/bool, edges to patch to ``ref``.  eps: dict of zero
    tensors added to receiver inputs (``("qkv", l)``: ``[batch, pos, 3, heads, d]``,
    ``("mlp", l)`` and ``"logits"``: ``[batch, pos, d]``), created here when an empty dict is
    passed, for gradients.
    """
    if missing is not None and ref is None:
        raise ValueError("patching missing edges needs the reference (corrupt) node outputs")
    L, H = graph.n_layers, graph.n_heads
    recv_idx = graph.receiver_index()
    cur: list[torch.Tensor] = []          # node outputs so far, each [batch, pos, d] in node order
    refs = list(ref.stacked(graph)) if ref is not None else None
    miss = missing.float() if missing is not None else None
    resid: dict[int, torch.Tensor] = {}
    want_grad = eps is not None

    def subtract(x: torch.Tensor, cols: list[int]) -> torch.Tensor:
        """x [batch, pos, d] -> per receiver [batch, pos, len(cols), d] with missing edges patched."""
        out = x[:, :, None].expand(-1, -1, len(cols), -1)
        if miss is None:
            return out
        n = len(cur)
        m = miss[:n][:, cols]                                                  # [n_up, R]
        if not m.any():
            return out
        delta = torch.stack([c - r for c, r in zip(cur, refs[:n])])          # [n_up, batch, pos, d]
        return out - torch.einsum("ur,ubpd->bprd", m, delta)

    def eps_of(key, shape, like):
        if not want_grad:
            return None
        if key not in eps:
            eps[key] = torch.zeros(shape, dtype=like.dtype, device=like.device, requires_grad=True)
        return eps[key]

    def at_input(x, hook):
        x = input_value if input_value is not None else x
        cur.append(x)
        resid[0] = x
        return x

    def at_resid_pre(layer):
        def fn(x, hook):
            resid[layer] = x
        return fn

    def at_qkv(layer, comp):
        ci = QKV.index(comp)
        cols = [recv_idx[(f"a{layer}.h{h}", comp)] for h in range(H)]

        def fn(x, hook):
            xs = subtract(resid[layer], cols)                                  # [batch, pos, H, d]
            e = eps_of(("qkv", layer), (*xs.shape[:2], 3, H, xs.shape[-1]), xs)
            if e is not None:
                xs = xs + e[:, :, ci]
            return heads.project(layer, comp, xs)
        return fn

    def at_z(layer):
        def fn(z, hook):
            out = heads.outputs(layer, z)
            cur.extend(out.unbind(2))
        return fn

    def at_mlp_in(layer):
        col = [recv_idx[(f"m{layer}", "")]]

        def fn(x, hook):
            xs = subtract(x, col)[:, :, 0]
            e = eps_of(("mlp", layer), xs.shape, xs)
            return xs + e if e is not None else xs
        return fn

    def at_mlp_out(x, hook):
        cur.append(x)

    def at_final(x, hook):
        xs = subtract(x, [recv_idx[("logits", "")]])[:, :, 0]
        e = eps_of("logits", xs.shape, xs)
        return xs + e if e is not None else xs

    fwd = [("blocks.0.hook_resid_pre", at_input)]
    for l in range(L):
        if l > 0:
            fwd.append((f"blocks.{l}.hook_resid_pre", at_resid_pre(l)))
        fwd += [(f"blocks.{l}.attn.hook_{c}", at_qkv(l, c)) for c in QKV]
        fwd.append((f"blocks.{l}.attn.hook_z", at_z(l)))
        if graph.has_mlp[l]:
            fwd += [(f"blocks.{l}.ln2.hook_in", at_mlp_in(l)), (f"blocks.{l}.hook_mlp_out", at_mlp_out)]
    fwd.append(("ln_final.hook_in", at_final))
    return model.run_with_hooks(tokens, list(hooks) + fwd)


def receiver_grads(eps: dict, grads: dict, graph: Graph) -> torch.Tensor:
    """Per-receiver input gradients ``[n_receivers, batch, pos, d]`` in :meth:`Graph.receivers` order."""
    out = []
    for l in range(graph.n_layers):
        g = grads[("qkv", l)]                                                   # [batch, pos, 3, H, d]
        out += [g[:, :, ci, h] for ci in range(3) for h in range(graph.n_heads)]
        if graph.has_mlp[l]:
            out.append(grads[("mlp", l)])
    out.append(grads["logits"])
    return torch.stack(out)
