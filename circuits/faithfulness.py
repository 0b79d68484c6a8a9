"""How much of a model's behaviour a circuit keeps: runs with every edge not kept patched to the
corrupt run, the faithfulness ``(circuit - corrupt) / (clean - corrupt)``, curves over circuit
sizes, and MIB's edge budgets with CPR / CMD and bootstrap intervals (Mueller et al. 2025)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch

from interp.errors import InputError
from interp.runs import analysis, record

if TYPE_CHECKING:
    from circuits.graph import Circuit

#: MIB's edge budgets, in percent of the edges (Mueller et al. 2025)
MIB_BUDGETS = (0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100)


def faithfulness(circuit: Circuit, model, clean, corrupt, metric="logit_diff") -> float:
    """``(circuit - corrupt) / (clean - corrupt)`` of the batch-mean metric, with every edge of
    ``circuit`` not kept patched to the corrupt run."""
    return float(_Runner(model, clean, corrupt, metric, circuit).faithfulness([circuit])[0])


@analysis("mib", figure="circuits.plots.faithfulness_plot")
def mib(
    circuit: Circuit,
    model,
    clean,
    corrupt,
    metric="logit_diff",
    budgets: Sequence[float] = MIB_BUDGETS,
    *,
    n_boot: int = 1000,
    seed: int = 0,
) -> pd.DataFrame:
    """Faithfulness of ``circuit`` at MIB's edge budgets (Mueller et al. 2025): one row per budget with
    ``percent``, ``n_edges`` (kept after dropping unconnected edges), ``n_nodes`` and
    ``faithfulness`` f(k) = (m(C_k) - m(corrupt)) / (m(clean) - m(corrupt)), m the batch
    mean.  Meta (``interp.runs.run(mib, ...).meta``): ``cpr`` (area under f over the edge fraction in [0, 1], with
    f(0) = 0: the empty circuit is the corrupt run), ``cmd`` (area between f and 1),
    their 95% bootstrap intervals over prompts (``cpr_ci``, ``cmd_ci``) and ``n_boot``."""
    budgets = [float(b) for b in budgets]
    if not budgets:
        raise InputError("no edge budgets given")
    bad = [b for b in budgets if not 0 < b <= 100]
    if bad:
        raise InputError(f"edge budgets are percentages in (0, 100]; got {bad}")
    runner = _Runner(model, clean, corrupt, metric, circuit)
    circuits = [circuit.prune(percent=b) for b in budgets]
    per_row = runner.values(circuits)  # [n_budgets, batch]
    clean_rows, corrupt_rows = runner.clean_rows, runner.corrupt_rows
    f = _faith(per_row.mean(-1), clean_rows.mean(), corrupt_rows.mean())
    frac = np.array(budgets) / 100.0
    cpr, cmd = _areas(frac, f.numpy())
    g = torch.Generator().manual_seed(int(seed))
    n = per_row.shape[-1]
    boots = []
    for _ in range(int(n_boot)):
        idx = torch.randint(n, (n,), generator=g)
        fb = _faith(per_row[:, idx].mean(-1), clean_rows[idx].mean(), corrupt_rows[idx].mean())
        boots.append(_areas(frac, fb.numpy()))
    boots_a = np.array(boots) if boots else np.full((1, 2), np.nan)
    df = pd.DataFrame(
        {
            "percent": budgets,
            "n_edges": [c.n_kept for c in circuits],
            "n_nodes": [len(c.active_nodes()) for c in circuits],
            "faithfulness": f.numpy(),
        }
    )
    record(
        cpr=float(cpr),
        cmd=float(cmd),
        n_boot=int(n_boot),
        cpr_ci=tuple(float(x) for x in np.nanpercentile(boots_a[:, 0], [2.5, 97.5])),
        cmd_ci=tuple(float(x) for x in np.nanpercentile(boots_a[:, 1], [2.5, 97.5])),
        clean_value=float(clean_rows.mean()),
        corrupt_value=float(corrupt_rows.mean()),
        metric=runner.runs.metric.label,
    )
    return df


def _faith(values: torch.Tensor, clean: torch.Tensor, corrupt: torch.Tensor) -> torch.Tensor:
    gap = float(clean - corrupt)
    if abs(gap) < 1e-12:
        return values * float("nan")
    return (values - corrupt) / gap


def _areas(frac: np.ndarray, f: np.ndarray) -> tuple[float, float]:
    """(CPR, CMD): trapezoidal areas over the edge fraction, from (0, 0) through the budgets."""
    order = np.argsort(frac)
    x = np.concatenate([[0.0], frac[order]])
    y = np.concatenate([[0.0], f[order]])
    return float(np.trapezoid(y, x)), float(np.trapezoid(np.abs(1.0 - y), x))


class _Runner:
    """Clean / corrupt runs of a prompt set, and circuit runs with the edges not kept patched."""

    def __init__(self, model, clean, corrupt, metric, circuit: Circuit):
        from circuits import edges as E
        from circuits.runs import finish, inputs

        self.E = E
        self.model = model
        self.graph = E.Graph.of(model)
        g = circuit.meta.get("graph")
        if g is not None and g != self.graph.to_dict():
            raise InputError(f"this circuit was made for a model of another shape ({g}), not {self.graph.to_dict()}")
        if (self.graph.n_layers, self.graph.n_heads) != (
            circuit.meta.get("n_layers", self.graph.n_layers),
            circuit.meta.get("n_heads", self.graph.n_heads),
        ):
            raise InputError("this circuit was made for a model of another shape")
        self.weights = model.weights()
        c = inputs(model, clean, corrupt)
        corrupt_b, self.clean_b = c.batches()
        with torch.no_grad():
            clean_logits = model(self.clean_b)
            corrupt_logits, cache = model.run_with_cache(
                corrupt_b, names=E.cache_names(model, self.graph), fwd_hooks=c.hooks
            )
        self.c = c
        self.runs = finish(model, c, metric, clean_logits, corrupt_logits)
        self.ref = E.outputs_from_cache(model, cache, self.graph, self.weights)
        self.clean_rows = self.runs.metric.values(clean_logits).float().cpu()
        self.corrupt_rows = self.runs.metric.values(corrupt_logits).float().cpu()

    @torch.no_grad()
    def values(self, circuits: Sequence[Circuit]) -> torch.Tensor:
        """Per-row metric of each circuit's run: ``[n_circuits, batch]``."""
        out = []
        for circuit in circuits:
            logits = self.E.run(
                self.model, self.weights, self.graph, self.clean_b, missing=circuit.missing(self.graph), ref=self.ref
            )
            out.append(self.runs.metric.values(logits).float().cpu())
        return torch.stack(out)

    def faithfulness(self, circuits: Sequence[Circuit]) -> torch.Tensor:
        return _faith(self.values(circuits).mean(-1), self.clean_rows.mean(), self.corrupt_rows.mean())


@analysis("faithfulness_curve", figure="circuits.plots.faithfulness_plot")
def faithfulness_curve(
    circuit: Circuit, model, clean, corrupt, metric="logit_diff", sizes: list[int] | None = None
) -> pd.DataFrame:
    """Faithfulness of the top-k circuits for each k in ``sizes``: columns ``top_k``, ``n_edges``
    (kept after dropping unconnected edges), ``n_nodes``, ``faithfulness``.  (For MIB's edge
    budgets and CPR / CMD use :func:`mib`.)"""
    sizes = sizes or [1, 2, 5, 10, 20, 50, 100, 200]
    runner = _Runner(model, clean, corrupt, metric, circuit)
    pruned = [circuit.prune(top_k=k) for k in sizes]
    f = runner.faithfulness(pruned)
    return pd.DataFrame(
        {
            "top_k": sizes,
            "n_edges": [p.n_kept for p in pruned],
            "n_nodes": [len(p.active_nodes()) for p in pruned],
            "faithfulness": f.numpy(),
        }
    )
