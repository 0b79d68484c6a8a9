"""Circuit graphs: nodes, scored edges, pruning and a stable JSON format.

A :class:`Circuit` is stored as tensors over its senders and receivers (as EAP-IG's graph
is): ``scores`` ``[n_senders, n_receivers]`` (NaN where no edge exists) and ``kept``
``[n_senders, n_receivers]`` bool; :attr:`Circuit.edges` and the frames are views onto
them.  Senders are ``input``, heads ``a{l}.h{h}`` and MLPs ``m{l}``; a receiver is a node and
the input it reads through (a head's ``q``; ``k`` / ``v`` of a head, or of a key-value node
``a{l}.kv{g}`` under grouped-query attention; ``""`` for MLPs and ``logits``); see
:mod:`circuits.edges`.

:meth:`Circuit.prune` keeps edges by ``|score|`` (threshold, top-k, or a share of the
edges); :meth:`Circuit.faithfulness` and :meth:`Circuit.mib` (MIB's edge budgets with CPR /
CMD) run the model with the edges not kept patched, see :mod:`circuits.faithfulness`.

JSON schema (``format`` "interp.circuit", ``version`` 2; version 1 files, which have no
``kv`` nodes, are read too)::

    {"format": "interp.circuit", "version": 2,
     "meta": {"model": str, "method": "eap" | "eap-ig" | ..., "steps": int, "metric": str,
              "clean_value": float, "corrupt_value": float, "n_layers": int, "n_heads": int,
              "kv_groups": {"a0.kv0": ["a0.h0", ...], ...}, ...},
     "nodes": [{"name": "a0.h1", "kind": "input" | "head" | "kv" | "mlp" | "logits",
                "layer": int (-1 for input, n_layers for logits), "head": int | null}, ...],
     "edges": [{"src": "a0.h1", "dst": "a1.h2", "component": "q" | "k" | "v" | "",
                "score": float, "kept": bool}, ...]}

Readers must accept unknown keys in ``meta``; a change of the other fields bumps ``version``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from circuits import faithfulness as _faithfulness
from interp.errors import InputError

FORMAT = "interp.circuit"
VERSION = 2
READABLE = (1, 2)
KINDS = ("input", "head", "kv", "mlp", "logits")


@dataclass(frozen=True)
class Node:
    """A graph node: ``kind`` in :data:`KINDS`; ``layer`` -1 for input, n_layers for logits."""

    name: str
    kind: str
    layer: int
    head: int | None = None


@dataclass
class Edge:
    """``src -> dst`` through ``component`` (q / k / v into a head, "" otherwise), with its score."""

    src: str
    dst: str
    component: str
    score: float
    kept: bool = True

    @property
    def key(self) -> str:
        return f"{self.src}->{self.dst}" + (f"<{self.component}>" if self.component else "")


class Circuit:
    """Nodes and scored edges of a model's graph, with the subset kept (see the module docstring)."""

    def __init__(self, nodes: list[Node], edges: list[Edge], meta: dict | None = None):
        senders = list(dict.fromkeys(e.src for e in edges))
        receivers = list(dict.fromkeys((e.dst, e.component) for e in edges))
        scores = torch.full((len(senders), len(receivers)), float("nan"))
        kept = torch.zeros(len(senders), len(receivers), dtype=torch.bool)
        si = {s: i for i, s in enumerate(senders)}
        ri = {r: i for i, r in enumerate(receivers)}
        for e in edges:
            scores[si[e.src], ri[(e.dst, e.component)]] = float(e.score)
            kept[si[e.src], ri[(e.dst, e.component)]] = bool(e.kept)
        self._init(list(nodes), senders, receivers, scores, kept, dict(meta or {}))

    def _init(self, nodes, senders, receivers, scores, kept, meta) -> None:
        self.nodes = nodes
        self.senders = senders
        self.receivers = receivers
        self.scores = scores
        self.kept = kept & ~torch.isnan(scores)
        self.meta = meta
        names = {n.name for n in nodes}
        bad = [s for s in senders if s not in names] + [d for d, _ in receivers if d not in names]
        if bad:
            raise InputError(f"edges {bad[:5]} name nodes the circuit does not have")

    @classmethod
    def _make(cls, nodes, senders, receivers, scores, kept, meta) -> Circuit:
        out = cls.__new__(cls)
        out._init(nodes, senders, receivers, scores, kept, meta)
        return out

    @classmethod
    def from_scores(cls, graph, scores: torch.Tensor, meta: dict | None = None) -> Circuit:
        """From an ``[n_upstream, n_receivers]`` score matrix over a :class:`circuits.edges.Graph` (NaN = no edge)."""
        nodes = [Node(n["name"], n["kind"], n["layer"], n["head"]) for n in graph.nodes()]
        senders = [n["name"] for n in graph.senders()]
        receivers = [(r["node"], r["component"]) for r in graph.receivers()]
        meta = {**(meta or {}), "kv_groups": graph.members(), "graph": graph.to_dict()}
        s = scores.detach().float().cpu()
        return cls._make(nodes, senders, receivers, s, ~torch.isnan(s), meta)

    # --- views ------------------------------------------------------------------------------
    def __repr__(self) -> str:
        return (
            f"Circuit({self.meta.get('model', '')!r}, {self.meta.get('method', '')}, "
            f"{self.n_kept}/{self.n_edges} edges kept, {len(self.active_nodes())} active nodes)"
        )

    @property
    def valid(self) -> torch.Tensor:
        """``[n_senders, n_receivers]`` bool: where an edge exists."""
        return ~torch.isnan(self.scores)

    @property
    def n_edges(self) -> int:
        return int(self.valid.sum())

    @property
    def n_kept(self) -> int:
        return int(self.kept.sum())

    def _edge_list(self, mask: torch.Tensor) -> list[Edge]:
        u, r = mask.nonzero(as_tuple=True)
        return [
            Edge(
                self.senders[i],
                self.receivers[j][0],
                self.receivers[j][1],
                float(self.scores[i, j]),
                bool(self.kept[i, j]),
            )
            for i, j in zip(u.tolist(), r.tolist())
        ]

    @property
    def edges(self) -> list[Edge]:
        """Every edge (a view; sender-major order)."""
        return self._edge_list(self.valid)

    @property
    def kept_edges(self) -> list[Edge]:
        return self._edge_list(self.kept)

    def node(self, name: str) -> Node:
        for n in self.nodes:
            if n.name == name:
                return n
        raise InputError(f"no node {name!r}; nodes: {[n.name for n in self.nodes][:12]} ...")

    def edges_frame(self) -> pd.DataFrame:
        """One row per edge: src, dst, component, score, abs_score, kept, src_layer, dst_layer
        (sorted by ``abs_score``, largest first)."""
        layer = {n.name: n.layer for n in self.nodes}
        u, r = self.valid.nonzero(as_tuple=True)
        score = self.scores[u, r].numpy()
        df = pd.DataFrame(
            {
                "src": np.array(self.senders, dtype=object)[u.numpy()],
                "dst": [self.receivers[j][0] for j in r.tolist()],
                "component": [self.receivers[j][1] for j in r.tolist()],
                "score": score,
                "kept": self.kept[u, r].numpy(),
            }
        )
        df["abs_score"] = df["score"].abs()
        df["src_layer"] = df["src"].map(layer)
        df["dst_layer"] = df["dst"].map(layer)
        return df.sort_values("abs_score", ascending=False, ignore_index=True)

    def nodes_frame(self) -> pd.DataFrame:
        """One row per node with ``active`` (touched by a kept edge)."""
        active = self.active_nodes()
        return pd.DataFrame([{**asdict(n), "active": n.name in active} for n in self.nodes])

    def active_nodes(self) -> set[str]:
        u, r = self.kept.nonzero(as_tuple=True)
        return {self.senders[i] for i in u.tolist()} | {self.receivers[j][0] for j in r.tolist()}

    def has_edge(self, src: str, dst: str, component: str | None = None, kept: bool = True) -> bool:
        if src not in self.senders:
            return False
        i = self.senders.index(src)
        mask = self.kept if kept else self.valid
        return any(
            d == dst and (component is None or c == component) and bool(mask[i, j])
            for j, (d, c) in enumerate(self.receivers)
        )

    # --- pruning ----------------------------------------------------------------------------
    def prune(
        self,
        *,
        threshold: float | None = None,
        top_k: int | None = None,
        percent: float | None = None,
        connected: bool = True,
    ) -> Circuit:
        """A copy keeping the edges with ``|score| >= threshold``, the ``top_k`` largest ``|score|``
        and/or the largest ``percent`` % of the edges (MIB's edge budget, in (0, 100]).

        connected: also drop kept edges off every kept path from ``input`` to ``logits`` (they
        cannot change the output: a node with no kept input computes its corrupt value).
        """
        if threshold is None and top_k is None and percent is None:
            raise InputError("prune needs threshold=..., top_k=... or percent=...")
        if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0):
            raise InputError(f"top_k must be an int >= 0, got {top_k!r}")
        if percent is not None:
            if isinstance(percent, bool) or not isinstance(percent, (int, float)) or not 0 < percent <= 100:
                raise InputError(f"an edge budget must be a percentage in (0, 100], got {percent!r}")
            k = max(1, round(self.n_edges * percent / 100))
            top_k = k if top_k is None else min(top_k, k)
        mag = self.scores.abs().nan_to_num(-1.0)
        keep = self.valid.clone()
        if top_k is not None:
            flat = mag.flatten()
            order = torch.argsort(flat, descending=True, stable=True)[:top_k]
            keep = torch.zeros_like(flat, dtype=torch.bool)
            keep[order] = True
            keep = keep.view_as(mag) & self.valid
        if threshold is not None:
            keep &= mag >= threshold
        out = Circuit._make(
            self.nodes,
            self.senders,
            self.receivers,
            self.scores,
            keep,
            {**self.meta, "pruned": {"threshold": threshold, "top_k": top_k, "percent": percent}},
        )
        return out._connected() if connected else out

    def _members(self) -> list[list[int]]:
        """For each receiver, the senders whose computation it feeds (none for logits)."""
        idx = {s: i for i, s in enumerate(self.senders)}
        groups = self.meta.get("kv_groups") or {}
        return [[idx[m] for m in groups.get(node, [node]) if m in idx] for node, _ in self.receivers]

    def _connected(self) -> Circuit:
        members = self._members()
        feeds: list[list[int]] = [[] for _ in self.senders]  # receivers feeding each sender
        for j, ms in enumerate(members):
            for m in ms:
                feeds[m].append(j)
        order = sorted(range(len(self.senders)), key=lambda i: self._rank(self.senders[i]))
        kept = self.kept
        fwd = torch.zeros(len(self.senders), dtype=torch.bool)
        for i in order:  # residual-stream order: a sender's inputs come from earlier senders
            fwd[i] = self.senders[i] == "input" or any(bool((kept[:, j] & fwd).any()) for j in feeds[i])
        useful = torch.tensor([node == "logits" for node, _ in self.receivers])  # receivers that reach the logits
        for i in reversed(order):
            if bool((kept[i] & useful).any()):
                useful[feeds[i]] = True
        self.kept = kept & fwd[:, None] & useful[None, :]
        return self

    def _rank(self, name: str) -> tuple:
        n = next((x for x in self.nodes if x.name == name), None)
        return (
            (-2, 0)
            if n is None
            else (n.layer, {"input": 0, "head": 1, "kv": 1, "mlp": 2, "logits": 3}[n.kind], n.head or 0)
        )

    # --- faithfulness -----------------------------------------------------------------------
    def missing(self, graph) -> torch.Tensor:
        """``[n_upstream, n_receivers]`` bool over ``graph``: True where an edge is not kept."""
        senders = [n["name"] for n in graph.senders()]
        receivers = [(r["node"], r["component"]) for r in graph.receivers()]
        if senders == self.senders and receivers == self.receivers:
            return ~self.kept
        si, ri = {s: i for i, s in enumerate(senders)}, {r: i for i, r in enumerate(receivers)}
        out = torch.ones(len(senders), len(receivers), dtype=torch.bool)
        u, r = self.kept.nonzero(as_tuple=True)
        for i, j in zip(u.tolist(), r.tolist()):
            if self.senders[i] not in si or self.receivers[j] not in ri:
                raise InputError(f"edge {self.senders[i]} -> {self.receivers[j]} is not in this model's graph")
            out[si[self.senders[i]], ri[self.receivers[j]]] = False
        return out

    # one implementation, in circuits.faithfulness; as methods, ``circuit.mib(model, ...)``
    faithfulness = _faithfulness.faithfulness
    mib = _faithfulness.mib

    # --- JSON -------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {
            "format": FORMAT,
            "version": VERSION,
            "meta": self.meta,
            "nodes": [asdict(n) for n in self.nodes],
            "edges": [{**asdict(e), "score": float(e.score)} for e in self.edges],
        }

    def to_json(self, path: str | Path | None = None) -> str:
        """The circuit as JSON (see the module docstring); also written to ``path`` if given."""
        text = json.dumps(self.to_dict(), indent=1, default=float)
        if path is not None:
            Path(path).write_text(text)
        return text

    @classmethod
    def from_json(cls, source: str | Path | dict) -> Circuit:
        """A circuit from a JSON string, a path to a JSON file, or the parsed dict."""
        if isinstance(source, dict):
            data = source
        else:
            text = str(source)
            if not text.lstrip().startswith("{"):
                path = Path(text)
                if not path.is_file():
                    raise FileNotFoundError(f"no circuit file {path}")
                text = path.read_text()
            try:
                data = json.loads(text)
            except json.JSONDecodeError as e:
                raise InputError(f"not a circuit file: invalid JSON ({e})") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise InputError(
                f"not a circuit file: format is {data.get('format') if isinstance(data, dict) else None!r}, "
                f"expected {FORMAT!r}"
            )
        if data.get("version") not in READABLE:
            raise InputError(f"circuit format version {data.get('version')} is not supported (this reader: {READABLE})")
        try:
            nodes = [Node(n["name"], n["kind"], int(n["layer"]), n.get("head")) for n in data["nodes"]]
            edges = [
                Edge(e["src"], e["dst"], e.get("component", ""), float(e["score"]), bool(e.get("kept", True)))
                for e in data["edges"]
            ]
        except (KeyError, TypeError, ValueError) as e:
            raise InputError(f"malformed circuit file: {e!r}") from None
        return cls(nodes, edges, data.get("meta", {}))
