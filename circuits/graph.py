"""Circuit graphs: nodes, scored edges, pruning, faithfulness, and a stable JSON format.

A :class:`Circuit` holds the nodes of a transformer's edge graph (``input``, heads
``a{l}.h{h}``, MLPs ``m{l}``, ``logits``; see :mod:`circuits.edges`), every scored edge
``src -> dst`` (a head receives through its ``q``, ``k`` or ``v`` input) and which edges are
kept.  :meth:`Circuit.prune` keeps edges by ``|score|`` (threshold or top-k);
:meth:`Circuit.faithfulness` runs the model with every edge not kept patched to the corrupt
run and returns ``(circuit - corrupt) / (clean - corrupt)``.

JSON schema (``format`` "interp.circuit", ``version`` 1)::

    {"format": "interp.circuit", "version": 1,
     "meta": {"model": str, "method": "eap" | "eap-ig" | ..., "steps": int, "metric": str,
              "clean_value": float, "corrupt_value": float, "n_layers": int, "n_heads": int, ...},
     "nodes": [{"name": "a0.h1", "kind": "input" | "head" | "mlp" | "logits",
                "layer": int (-1 for input, n_layers for logits), "head": int | null}, ...],
     "edges": [{"src": "a0.h1", "dst": "a1.h2", "component": "q" | "k" | "v" | "",
                "score": float, "kept": bool}, ...]}

Readers must accept unknown keys in ``meta``; a change of the other fields bumps ``version``.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd
import torch

FORMAT = "interp.circuit"
VERSION = 1
KINDS = ("input", "head", "mlp", "logits")


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
    """Nodes and scored edges of a model's graph, with the subset kept."""

    def __init__(self, nodes: list[Node], edges: list[Edge], meta: dict | None = None):
        self.nodes = list(nodes)
        self.edges = list(edges)
        self.meta = dict(meta or {})
        names = {n.name for n in self.nodes}
        bad = [e.key for e in self.edges if e.src not in names or e.dst not in names]
        if bad:
            raise ValueError(f"edges {bad[:5]} name nodes the circuit does not have")

    @classmethod
    def from_scores(cls, graph, scores: torch.Tensor, meta: dict | None = None) -> "Circuit":
        """From an ``[n_upstream, n_receivers]`` score matrix over a :class:`circuits.edges.Graph` (NaN = no edge)."""
        nodes = [Node(n["name"], n["kind"], n["layer"], n["head"]) for n in graph.nodes()]
        recv = graph.receivers()
        edges = []
        for u in range(scores.shape[0]):
            for r in range(scores.shape[1]):
                s = float(scores[u, r])
                if not math.isnan(s):
                    edges.append(Edge(nodes[u].name, recv[r]["node"], recv[r]["component"], s))
        return cls(nodes, edges, meta)

    # --- views ------------------------------------------------------------------------------
    def __repr__(self) -> str:
        kept = sum(e.kept for e in self.edges)
        return (f"Circuit({self.meta.get('model', '')!r}, {self.meta.get('method', '')}, {kept}/{len(self.edges)} edges kept, "
                f"{len(self.active_nodes())} active nodes)")

    @property
    def kept_edges(self) -> list[Edge]:
        return [e for e in self.edges if e.kept]

    def node(self, name: str) -> Node:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(f"no node {name!r}; nodes: {[n.name for n in self.nodes][:12]} ...")

    def edges_frame(self) -> pd.DataFrame:
        """One row per edge: src, dst, component, score, abs_score, kept, src_layer, dst_layer."""
        layer = {n.name: n.layer for n in self.nodes}
        df = pd.DataFrame([asdict(e) for e in self.edges], columns=["src", "dst", "component", "score", "kept"])
        df["abs_score"] = df["score"].abs()
        df["src_layer"] = df["src"].map(layer)
        df["dst_layer"] = df["dst"].map(layer)
        return df.sort_values("abs_score", ascending=False, ignore_index=True)

    def nodes_frame(self) -> pd.DataFrame:
        """One row per node with ``active`` (touched by a kept edge)."""
        active = self.active_nodes()
        return pd.DataFrame([{**asdict(n), "active": n.name in active} for n in self.nodes])

    def active_nodes(self) -> set[str]:
        return {x for e in self.kept_edges for x in (e.src, e.dst)}

    def has_edge(self, src: str, dst: str, component: str | None = None, kept: bool = True) -> bool:
        return any(e.src == src and e.dst == dst and (component is None or e.component == component)
                   and (e.kept or not kept) for e in self.edges)

    # --- pruning ----------------------------------------------------------------------------
    def prune(self, *, threshold: float | None = None, top_k: int | None = None,
              connected: bool = True) -> "Circuit":
        """A copy keeping the edges with ``|score| >= threshold`` and/or the ``top_k`` largest ``|score|``.

        connected: also drop kept edges off every kept path from ``input`` to ``logits`` (they
        cannot change the output: a node with no kept input computes its corrupt value).
        """
        if threshold is None and top_k is None:
            raise ValueError("prune needs threshold=... or top_k=...")
        if top_k is not None and (not isinstance(top_k, int) or top_k < 0):
            raise ValueError(f"top_k must be an int >= 0, got {top_k!r}")
        order = sorted(range(len(self.edges)), key=lambda i: -abs(self.edges[i].score))
        keep = set(order[:top_k]) if top_k is not None else set(order)
        if threshold is not None:
            keep = {i for i in keep if abs(self.edges[i].score) >= threshold}
        edges = [Edge(e.src, e.dst, e.component, e.score, i in keep) for i, e in enumerate(self.edges)]
        out = Circuit(self.nodes, edges, {**self.meta, "pruned": {"threshold": threshold, "top_k": top_k}})
        return out._connected() if connected else out

    def _connected(self) -> "Circuit":
        order = {n.name: i for i, n in enumerate(sorted(self.nodes, key=lambda n: (n.layer, n.kind != "head")))}
        kept = sorted(self.kept_edges, key=lambda e: order[e.src])
        fwd = {"input"}
        for e in kept:                                   # edges go forward in node order
            if e.src in fwd:
                fwd.add(e.dst)
        bwd = {"logits"}
        for e in sorted(kept, key=lambda e: -order[e.dst]):
            if e.dst in bwd:
                bwd.add(e.src)
        for e in self.edges:
            e.kept = e.kept and e.src in fwd and e.dst in bwd
        return self

    # --- faithfulness -----------------------------------------------------------------------
    def faithfulness(self, model, clean, corrupt, metric="logit_diff") -> float:
        """``(circuit - corrupt) / (clean - corrupt)`` of the metric, with every edge not kept patched
        to the corrupt run (1 = the circuit alone recovers the clean behaviour)."""
        from circuits import edges as E
        from circuits.components import heads_of
        from circuits.runs import finish, inputs

        graph = E.Graph.of(model)
        if (graph.n_layers, graph.n_heads) != (self.meta.get("n_layers", graph.n_layers),
                                               self.meta.get("n_heads", graph.n_heads)):
            raise ValueError("this circuit was made for a model of another shape")
        heads = heads_of(model, check=False)
        c = inputs(model, clean, corrupt)
        with torch.no_grad():
            clean_logits = model(c.clean)
            corrupt_logits, cache = model.run_with_cache(c.tokens, names=E.cache_names(graph), fwd_hooks=c.hooks)
            runs = finish(model, c, metric, clean_logits, corrupt_logits)
            logits = E.run(model, heads, graph, c.clean, missing=self.missing(graph),
                           ref=E.outputs_from_cache(cache, graph, heads))
            return float(runs.normalise(runs.metric(logits)))

    def missing(self, graph) -> torch.Tensor:
        """``[n_upstream, n_receivers]`` bool: True where an edge of the graph is not kept."""
        idx = {n["name"]: i for i, n in enumerate(graph.nodes()[:-1])}
        recv = graph.receiver_index()
        out = torch.ones(len(idx), len(recv), dtype=torch.bool)
        for e in self.kept_edges:
            out[idx[e.src], recv[(e.dst, e.component)]] = False
        return out

    # --- JSON -------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {"format": FORMAT, "version": VERSION, "meta": self.meta,
                "nodes": [asdict(n) for n in self.nodes],
                "edges": [{**asdict(e), "score": float(e.score)} for e in self.edges]}

    def to_json(self, path: str | Path | None = None) -> str:
        """The circuit as JSON (see the module docstring); also written to ``path`` if given."""
        text = json.dumps(self.to_dict(), indent=1, default=float)
        if path is not None:
            Path(path).write_text(text)
        return text

    @classmethod
    def from_json(cls, source: str | Path | dict) -> "Circuit":
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
            data = json.loads(text)
        if data.get("format") != FORMAT:
            raise ValueError(f"not a circuit file: format is {data.get('format')!r}, expected {FORMAT!r}")
        if data.get("version") != VERSION:
            raise ValueError(f"circuit format version {data.get('version')} is not supported (this reader: {VERSION})")
        nodes = [Node(n["name"], n["kind"], int(n["layer"]), n.get("head")) for n in data["nodes"]]
        edges = [Edge(e["src"], e["dst"], e.get("component", ""), float(e["score"]), bool(e.get("kept", True)))
                 for e in data["edges"]]
        return cls(nodes, edges, data.get("meta", {}))


def faithfulness_curve(circuit: Circuit, model, clean, corrupt, metric="logit_diff",
                       sizes: list[int] | None = None) -> pd.DataFrame:
    """Faithfulness of the top-k circuits for each k in ``sizes``: columns ``top_k``, ``n_edges``
    (kept after dropping unconnected edges), ``n_nodes``, ``faithfulness``."""
    sizes = sizes or [1, 2, 5, 10, 20, 50, 100, 200]
    rows = []
    for k in sizes:
        pruned = circuit.prune(top_k=k)
        rows.append({"top_k": k, "n_edges": len(pruned.kept_edges), "n_nodes": len(pruned.active_nodes()),
                     "faithfulness": pruned.faithfulness(model, clean, corrupt, metric)})
    return pd.DataFrame(rows)
