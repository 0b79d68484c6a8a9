"""The edge graph of a transformer and a forward pass in which every receiver has its own input.

Senders (in residual-stream order): ``input`` (the residual entering block 0: token and
position embeddings), each head ``a{l}.h{h}`` (its write ``z @ W_O``) and each MLP ``m{l}``.
Receivers: each query head's ``q`` input; each key-value head's ``k`` and ``v`` inputs (with
grouped-query attention the key-value heads are the nodes ``a{l}.kv{g}``, each read by the
query heads of group g; without it they are the heads themselves, ``a{l}.h{h}``); each MLP's
input and the logits (the final residual before ``ln_final``).  An edge ``u -> r`` exists
when ``u`` writes to the residual stream before ``r`` reads it (heads of layer l feed the
MLP of layer l).

:func:`run` executes the model with forward hooks so that receiver ``r`` reads
``residual - sum over u of missing[u, r] * (out_u - ref_u)`` (+ ``eps_r``): with
``missing = 0`` and ``eps`` zero leaves it gives per-receiver input gradients (EAP); with
``missing = 1 - kept`` and ``ref`` the corrupt run's outputs it runs a circuit with every
edge not kept patched to the corrupt run (faithfulness).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from interp import arch
from interp.errors import InputError, Unsupported
from interp.weights import Weights, reproduce_tol

QKV = ("q", "k", "v")


@dataclass(frozen=True)
class Graph:
    """Node and receiver layout of a model: ``n_layers`` x ``n_heads`` query heads sharing
    ``n_kv_heads`` key-value heads, MLPs where present."""

    n_layers: int
    n_heads: int
    has_mlp: tuple[bool, ...]
    n_kv_heads: int = 0
    #: per layer: the MLP reads the block's input beside attention (so that layer's heads do not feed it)
    parallel: tuple[bool, ...] = ()

    def __post_init__(self):
        if not self.n_kv_heads:
            object.__setattr__(self, "n_kv_heads", self.n_heads)
        if not self.parallel:
            object.__setattr__(self, "parallel", (False,) * self.n_layers)
        if self.n_heads % self.n_kv_heads:
            raise InputError(f"{self.n_heads} query heads cannot share {self.n_kv_heads} key-value heads evenly")

    @classmethod
    def of(cls, model) -> Graph:
        model.require_attention("edge attribution")
        if model.cfg.family == "hybrid":
            raise Unsupported(
                f"{model.cfg.name or 'this model'} has attention in layers {list(model.cfg.attn_layers)} only: the "
                "edge graph has heads in every layer (its state-space layers are not nodes yet)"
            )
        blocks = arch.blocks(model)
        missing = [b.layer for b in blocks if b.mlp and b.mlp_input is None]
        if missing:
            raise Unsupported(f"the MLPs of layers {missing} have no input hook, so they cannot be edge receivers")
        return cls(
            model.cfg.n_layers,
            model.cfg.n_heads,
            tuple(b.mlp for b in blocks),
            model.cfg.n_kv_heads,
            tuple(b.parallel for b in blocks),
        )

    @property
    def grouped(self) -> bool:
        return self.n_kv_heads != self.n_heads

    @property
    def group(self) -> int:
        return self.n_heads // self.n_kv_heads

    def kv_node(self, layer: int, kv: int) -> str:
        """The node whose k / v input is key-value head ``kv`` of ``layer``."""
        return f"a{layer}.kv{kv}" if self.grouped else f"a{layer}.h{kv}"

    def kv_heads(self, layer: int, kv: int) -> list[str]:
        """The query heads that read key-value head ``kv``."""
        return [f"a{layer}.h{h}" for h in range(kv * self.group, (kv + 1) * self.group)]

    def senders(self) -> list[dict]:
        out = [{"name": "input", "kind": "input", "layer": -1, "head": None}]
        for l in range(self.n_layers):
            out += [{"name": f"a{l}.h{h}", "kind": "head", "layer": l, "head": h} for h in range(self.n_heads)]
            if self.has_mlp[l]:
                out.append({"name": f"m{l}", "kind": "mlp", "layer": l, "head": None})
        return out

    def nodes(self) -> list[dict]:
        """Senders, the key-value nodes of grouped-query layers, and ``logits``."""
        kv = (
            [
                {"name": self.kv_node(l, g), "kind": "kv", "layer": l, "head": g}
                for l in range(self.n_layers)
                for g in range(self.n_kv_heads)
            ]
            if self.grouped
            else []
        )
        return self.senders() + kv + [{"name": "logits", "kind": "logits", "layer": self.n_layers, "head": None}]

    def n_upstream(self) -> int:
        return len(self.senders())

    def upstream_count(self, layer: int, kind: str) -> int:
        """How many senders (a prefix of :meth:`senders`) write before a receiver of ``kind`` in ``layer``."""
        n = 1
        for l in range(layer):
            n += self.n_heads + int(self.has_mlp[l])
        if kind == "mlp" and not self.parallel[layer]:
            n += self.n_heads
        return n

    def receivers(self) -> list[dict]:
        """Receivers in forward order: per layer the q input of each query head, the k and v
        inputs of each key-value head, then the MLP; then the logits."""
        out = []
        for l in range(self.n_layers):
            out += [{"node": f"a{l}.h{h}", "layer": l, "head": h, "component": "q"} for h in range(self.n_heads)]
            for c in ("k", "v"):
                out += [
                    {"node": self.kv_node(l, g), "layer": l, "head": g, "component": c} for g in range(self.n_kv_heads)
                ]
            if self.has_mlp[l]:
                out.append({"node": f"m{l}", "layer": l, "head": None, "component": ""})
        out.append({"node": "logits", "layer": self.n_layers, "head": None, "component": ""})
        return out

    def receiver_index(self) -> dict[tuple[str, str], int]:
        return {(r["node"], r["component"]): i for i, r in enumerate(self.receivers())}

    def members(self) -> dict[str, list[str]]:
        """For each key-value node, the heads it feeds (empty without grouped-query attention)."""
        if not self.grouped:
            return {}
        return {self.kv_node(l, g): self.kv_heads(l, g) for l in range(self.n_layers) for g in range(self.n_kv_heads)}

    def valid(self) -> torch.Tensor:
        """``[n_upstream, n_receivers]`` bool: which (sender, receiver) pairs are edges."""
        recv = self.receivers()
        out = torch.zeros(self.n_upstream(), len(recv), dtype=torch.bool)
        for j, r in enumerate(recv):
            kind = "logits" if r["node"] == "logits" else ("mlp" if r["head"] is None else "head")
            n = self.n_upstream() if kind == "logits" else self.upstream_count(r["layer"], kind)
            out[:n, j] = True
        return out

    def to_dict(self) -> dict:
        return {
            "n_layers": self.n_layers,
            "n_heads": self.n_heads,
            "n_kv_heads": self.n_kv_heads,
            "has_mlp": list(self.has_mlp),
            "parallel": list(self.parallel),
        }


@dataclass
class NodeOutputs:
    """What each sender writes to the residual stream in one run (``[batch, pos, d_model]`` each)."""

    input: torch.Tensor
    heads: list[torch.Tensor]  # per layer [batch, pos, n_heads, d_model]
    mlps: list[torch.Tensor | None]  # per layer

    def stacked(self, graph: Graph) -> torch.Tensor:
        """``[n_upstream, batch, pos, d_model]`` in sender order."""
        parts = [self.input[None]]
        for l in range(graph.n_layers):
            parts.append(self.heads[l].permute(2, 0, 1, 3))
            if graph.has_mlp[l]:
                mlp = self.mlps[l]
                assert mlp is not None, f"no output of MLP {l}"
                parts.append(mlp[None])
        return torch.cat(parts)


def cache_names(model, graph: Graph) -> list[str]:
    names = [model.site("resid_pre", 0)] + model.sites("z")
    return names + [model.site("mlp_out", l) for l in range(graph.n_layers) if graph.has_mlp[l]]


def outputs_from_cache(model, cache: dict, graph: Graph, weights: Weights) -> NodeOutputs:
    return NodeOutputs(
        cache[model.site("resid_pre", 0)],
        [weights.head_outputs(l, cache[model.site("z", l)]) for l in range(graph.n_layers)],
        [cache.get(model.site("mlp_out", l)) if graph.has_mlp[l] else None for l in range(graph.n_layers)],
    )


def run(
    model,
    weights: Weights,
    graph: Graph,
    tokens: torch.Tensor,
    *,
    hooks: Sequence = (),
    input_value: torch.Tensor | None = None,
    missing: torch.Tensor | None = None,
    ref: NodeOutputs | None = None,
    eps: dict | None = None,
) -> torch.Tensor:
    """Logits of a run where every receiver reads its own input (see the module docstring).

    input_value: replaces the residual entering block 0 (EAP-IG interpolation).  missing:
    ``[n_upstream, n_receivers]`` float/bool, edges to patch to ``ref``.  eps: dict of zero
    tensors added to receiver inputs (``(c, l)`` for c in q / k / v: ``[batch, pos, n, d]`` with
    n query or key-value heads, ``("mlp", l)`` and ``"logits"``: ``[batch, pos, d]``), created here
    when an empty dict is passed, for gradients.
    """
    if missing is not None and ref is None:
        raise InputError("patching missing edges needs the reference (corrupt) node outputs")
    H, K = graph.n_heads, graph.n_kv_heads
    recv_idx = graph.receiver_index()
    cur: list[torch.Tensor] = []  # sender outputs so far, each [batch, pos, d] in sender order
    refs = list(ref.stacked(graph)) if ref is not None else None
    miss = missing.float() if missing is not None else None
    resid: dict[int, torch.Tensor] = {}
    want_grad = eps is not None

    def subtract(x: torch.Tensor, cols: list[int], upstream: int | None = None) -> torch.Tensor:
        """x [batch, pos, d] -> per receiver [batch, pos, len(cols), d] with missing edges patched.
        upstream: how many senders the receivers read (default: every sender so far; fewer for
        the MLP of a parallel block, which does not read its own layer's heads)."""
        out = x[:, :, None].expand(-1, -1, len(cols), -1)
        if miss is None:
            return out
        n = len(cur) if upstream is None else upstream
        m = miss[:n][:, cols]  # [n_up, R]
        if not m.any():
            return out
        assert refs is not None  # checked on entry: missing edges come with ref
        delta = torch.stack([c - r for c, r in zip(cur, refs[:n])])  # [n_up, batch, pos, d]
        return out - torch.einsum("ur,ubpd->bprd", m.to(delta.dtype), delta)

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
        cols = (
            [recv_idx[(f"a{layer}.h{h}", "q")] for h in range(H)]
            if comp == "q"
            else [recv_idx[(graph.kv_node(layer, g), comp)] for g in range(K)]
        )

        def fn(x, hook):
            xs = subtract(resid[layer], cols)  # [batch, pos, n, d]
            e = eps_of((comp, layer), xs.shape, xs)
            if e is not None:
                xs = xs + e
            return weights.project(layer, comp, xs).to(x.dtype)

        return fn

    def at_z(layer):
        def fn(z, hook):
            out = weights.head_outputs(layer, z)
            cur.extend(out.unbind(-2))

        return fn

    attn_out: dict[int, torch.Tensor] = {}

    def at_attn_out(layer):
        def fn(x, hook):
            attn_out[layer] = x

        return fn

    def at_mlp_in(block: arch.Block):
        layer = block.layer
        col = [recv_idx[(f"m{layer}", "")]]

        def fn(x, hook):
            if block.mlp_input == "mlp_in":  # the residual only the MLP reads; the model's norm follows
                source = x
            else:  # the MLP's input after its norm: rebuild it from the residual it reads
                source = resid[layer] if block.parallel else resid[layer] + attn_out[layer]
            xs = subtract(source, col, graph.upstream_count(layer, "mlp"))[:, :, 0]
            e = eps_of(("mlp", layer), xs.shape, xs)
            xs = xs + e if e is not None else xs
            if block.mlp_input == "mlp_input" and block.mlp_norm is not None:
                xs = block.mlp_norm(xs.to(x.dtype))
            return xs.to(x.dtype)

        return fn

    def at_mlp_out(x, hook):
        cur.append(x)

    def at_final(x, hook):
        xs = subtract(x, [recv_idx[("logits", "")]])[:, :, 0]
        e = eps_of("logits", xs.shape, xs)
        return xs + e if e is not None else xs

    fwd = [(model.site("resid_pre", 0), at_input)]
    for l, block in enumerate(arch.blocks(model)):
        if l > 0:
            fwd.append((model.site("resid_pre", l), at_resid_pre(l)))
        fwd += [(model.site(c, l), at_qkv(l, c)) for c in QKV]
        fwd.append((model.site("z", l), at_z(l)))
        if block.mlp_input == "mlp_input" and not block.parallel:
            fwd.append((model.site("attn_out", l), at_attn_out(l)))
        if graph.has_mlp[l]:
            assert block.mlp_input is not None  # Graph.of declines MLPs without an input hook
            fwd += [(model.site(block.mlp_input, l), at_mlp_in(block)), (model.site("mlp_out", l), at_mlp_out)]
    fwd.append((model.site("final_resid"), at_final))
    return model.run_with_hooks(tokens, list(hooks) + fwd)


def receiver_grads(eps: dict, grads: dict, graph: Graph) -> torch.Tensor:
    """Per-receiver input gradients ``[n_receivers, batch, pos, d]`` in :meth:`Graph.receivers` order."""
    out = []
    for l in range(graph.n_layers):
        for c in QKV:
            g = grads[(c, l)]  # [batch, pos, n, d]
            out += list(g.unbind(2))
        if graph.has_mlp[l]:
            out.append(grads[("mlp", l)])
    out.append(grads["logits"])
    return torch.stack(out)


def check_rebuild(model, weights: Weights) -> None:
    """Checks on a probe that :meth:`Weights.project` reproduces the model's own ``hook_q/k/v``
    and that the heads' outputs add up to ``hook_attn_out`` (so a bridge that folds weights or
    mixes heads is refused, not mis-read)."""
    probe = torch.arange(min(5, model.cfg.n_ctx), device=model.device)[None] % model.cfg.d_vocab
    L = model.cfg.n_layers
    blocks = arch.blocks(model)
    rebuilt = [b for b in blocks if b.mlp_input == "mlp_input"]
    names = model.sites("resid_pre") + [model.site(c, l) for l in range(L) for c in "qkvz"] + model.sites("attn_out")
    names += [model.site("mlp_input", b.layer) for b in rebuilt]
    with torch.no_grad():
        _, cache = model.run_with_cache(probe, names=names)
        for l in range(L):
            x = cache[model.site("resid_pre", l)].float()
            for c in "qkv":
                want = cache[model.site(c, l)].float()
                got = weights.project(l, c, x[:, :, None].expand(-1, -1, want.shape[2], -1))
                if got.shape != want.shape or (got - want).abs().max() > reproduce_tol(model.dtype) * (
                    1 + want.abs().max()
                ):
                    raise Unsupported(
                        f"hook_{c} of layer {l} cannot be rebuilt from its norm and W_{c.upper()} on this "
                        "bridge (folded weights?), so heads cannot have their own inputs"
                    )
            z = cache[model.site("z", l)].float()
            out = weights.head_outputs(l, z).sum(-2) + weights.attn_bias(l, z)
            attn = cache[model.site("attn_out", l)].float()
            if (out - attn).abs().max() > reproduce_tol(model.dtype) * (1 + attn.abs().max()):
                raise Unsupported(
                    f"the heads' outputs (z @ W_O, through any post-attention norm) do not add up to the "
                    f"attention output of layer {l} on this bridge, so heads cannot be nodes"
                )
        for b in rebuilt:  # an MLP input rebuilt from the residual it reads and its norm
            l = b.layer
            source = cache[model.site("resid_pre", l)].float()
            if not b.parallel:
                source = source + cache[model.site("attn_out", l)].float()
            got = b.mlp_norm(source.to(model.dtype)) if b.mlp_norm is not None else source
            want = cache[model.site("mlp_input", l)].float()
            if (got.float() - want).abs().max() > reproduce_tol(model.dtype) * (1 + want.abs().max()):
                raise Unsupported(
                    f"the MLP input of layer {l} cannot be rebuilt from the residual it reads and its norm, so "
                    "the MLP cannot have its own input"
                )
